"""What the parser adds to spaCy's small English model, using spaCy's own tools and tables.

- irregular plurals: attribute-ruler patterns, since the model tags "geese" as an adjective and leaves "oxen";
- multi-word object names: a PhraseMatcher over object_names.txt whose matches are merged into one token, so
  that "teddy bear" is one head noun even where the model parsed "bear" as a verb;
- singulars of capitalised plurals: the model tags a sentence-initial "Dogs" PROPN, whose lemma is the word
  itself; the lemmatizer's own noun tables (WordNet index, exceptions, suffix rules) give "dog".
"""
from __future__ import annotations

from spacy.language import Language
from spacy.matcher import PhraseMatcher
from spacy.tokens import Doc
from spacy.util import filter_spans

from mining.entities import lexicon
from mining.entities.lexicon import IRREGULAR_PLURALS, plurals


class NounTables:
    """The rule lemmatizer's noun, adjective and verb tables, as plain lookups."""

    def __init__(self, nlp: Language) -> None:
        lookups = nlp.get_pipe("lemmatizer").lookups
        index = lookups.get_table("lemma_index")
        self.nouns = frozenset(index["noun"])
        self.adjectives = frozenset(index["adj"])
        self.exceptions: dict[str, list[str]] = dict(lookups.get_table("lemma_exc")["noun"])
        self.rules: list[list[str]] = list(lookups.get_table("lemma_rules")["noun"])
        self.verbs = frozenset(index["verb"])
        self.verb_exceptions: dict[str, list[str]] = dict(lookups.get_table("lemma_exc")["verb"])

    def is_verb_form(self, word: str) -> bool:
        """Whether `word` inflects a known verb ("riding" -> ride, "running" -> run), by the lemmatizer's own
        exceptions and suffix rules."""
        word = word.lower()
        if word in self.verb_exceptions:
            return True
        return any(word.endswith(old) and word[: len(word) - len(old)] + new in self.verbs
                   for old, new in (("ing", "e"), ("ing", "")))

    def singular(self, word: str) -> str | None:
        """The singular of a common noun ('dogs' -> 'dog'), None when word is no known common noun."""
        word = word.lower()
        if word in IRREGULAR_PLURALS:
            return IRREGULAR_PLURALS[word]
        if word in self.exceptions:
            return self.exceptions[word][0]
        if word in self.nouns:
            return word
        for old, new in self.rules:
            if word.endswith(old) and (form := word[: len(word) - len(old)] + new) in self.nouns:
                return form
        return None

    def irregular_plurals(self) -> dict[str, list[str]]:
        """singular -> its irregular plurals, for matching 'steak knives' to 'steak knife'."""
        out: dict[str, list[str]] = {}
        for plural, singulars in [*self.exceptions.items(), *((p, [s]) for p, s in IRREGULAR_PLURALS.items())]:
            for singular in singulars:
                out.setdefault(singular, []).append(plural)
        return out


def add_irregular_plurals(nlp: Language) -> None:
    """Tag the irregular plurals as plural nouns with their singular lemma (the lemmatizer keeps a set lemma)."""
    ruler = nlp.get_pipe("attribute_ruler")
    for plural, singular in IRREGULAR_PLURALS.items():
        ruler.add([[{"LOWER": plural}]], {"POS": "NOUN", "TAG": "NNS", "LEMMA": singular})


class ObjectNames:
    """Merges the multi-word object names of a caption into single noun tokens whose lemma is the name."""

    def __init__(self, nlp: Language, tables: NounTables) -> None:
        self.matcher = PhraseMatcher(nlp.vocab, attr="LOWER")
        irregular = tables.irregular_plurals()
        # read once: the parser lives in a long-lived worker
        for name in dict.fromkeys([*lexicon.load_object_names(), *lexicon.GERUND_COMPOUNDS]):
            forms = [name, *plurals(name, irregular)]
            self.matcher.add(name, list(nlp.tokenizer.pipe(forms)))

    def merge(self, doc: Doc) -> Doc:
        names = {(start, end): doc.vocab.strings[match_id] for match_id, start, end in self.matcher(doc)}
        spans = filter_spans([doc[start:end] for start, end in names])
        with doc.retokenize() as retokenizer:
            for span in spans:  # of overlapping names the longest wins
                name = names[(span.start, span.end)]
                tag = "NN" if span.text.lower() == name else "NNS"
                retokenizer.merge(span, attrs={"LEMMA": name, "POS": "NOUN", "TAG": tag})
        return doc
