"""Map nouns to ground-truth categories through lemmas and synonyms, and find which categories a caption
mentions. Both sides go through the same spaCy lemmatiser, so "boxes", "box" and a category "box" meet."""
from __future__ import annotations

from collections.abc import Iterable

from mining.entities.spacy_parser import load_spacy


class CategoryNames:
    def __init__(self, categories: list[dict], extra_synonyms: dict[str, list[str]] | None = None,
                 spacy_model: str = "en_core_web_sm") -> None:
        self.nlp = load_spacy(spacy_model)
        self.names = {c["id"]: c["name"] for c in categories}
        by_name = {c["name"]: c["id"] for c in categories}
        unknown = sorted(set(extra_synonyms or {}) - set(by_name))
        if unknown:
            raise ValueError(f"synonyms name categories the ground truth does not have: {', '.join(unknown)}")
        self.lemma_to_id: dict[tuple[str, ...], int] = {}
        for c in categories:
            words = [c["name"], *c.get("synonyms", []), *(extra_synonyms or {}).get(c["name"], [])]
            for lemmas in self._lemmas(words):
                self.lemma_to_id.setdefault(lemmas, c["id"])
        self.longest = max((len(k) for k in self.lemma_to_id), default=1)
        self._noun_cache: dict[str, int | None] = {}

    def _lemmas(self, texts: Iterable[str]) -> list[tuple[str, ...]]:
        return [tuple(t.lemma_.lower() for t in doc if not t.is_punct)
                for doc in self.nlp.pipe([t.replace("_", " ").replace("-", " ") for t in texts])]

    def category_of(self, noun: str) -> int | None:
        """The category a mined noun names, or None."""
        if noun not in self._noun_cache:
            lemmas = self._lemmas([noun])[0]
            raw = tuple(noun.lower().split())
            self._noun_cache[noun] = self.lemma_to_id.get(lemmas, self.lemma_to_id.get(raw))
        return self._noun_cache[noun]

    def mentioned(self, captions: list[str]) -> set[int]:
        """Categories whose name or synonym appears (as lemmas) in any caption."""
        found: set[int] = set()
        for lemmas in self._lemmas(captions):
            for n in range(1, self.longest + 1):
                for start in range(len(lemmas) - n + 1):
                    cid = self.lemma_to_id.get(lemmas[start:start + n])
                    if cid is not None:
                        found.add(cid)
        return found
