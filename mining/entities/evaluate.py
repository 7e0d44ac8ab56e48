"""Score the entity parser on a labelled caption set: micro precision and recall of nouns per caption.

Two modes: "exact" compares whole nouns ("traffic light pole" must equal the label), "head" compares only their
last words ("light pole" then counts as "traffic light pole"), which separates finding the object from naming it.

    .venv/bin/python -m mining.entities.evaluate tests/data/captions_labelled.jsonl
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Literal

Mode = Literal["exact", "head"]


@dataclass
class NounScore:
    captions: int
    true_positives: int
    false_positives: int
    false_negatives: int

    @property
    def precision(self) -> float:
        found = self.true_positives + self.false_positives
        return self.true_positives / found if found else 1.0

    @property
    def recall(self) -> float:
        wanted = self.true_positives + self.false_negatives
        return self.true_positives / wanted if wanted else 1.0

    def __str__(self) -> str:
        return (f"{self.captions} captions: noun precision {self.precision:.3f}, recall {self.recall:.3f} "
                f"({self.true_positives} right, {self.false_positives} extra, {self.false_negatives} missed)")


def _key(noun: str, mode: Mode) -> str:
    noun = " ".join(noun.lower().split())
    return noun.rsplit(" ", 1)[-1] if mode == "head" else noun


def score_nouns(predicted: list[list[str]], expected: list[list[str]], mode: Mode = "exact") -> NounScore:
    if len(predicted) != len(expected):
        raise ValueError(f"{len(predicted)} predictions for {len(expected)} labelled captions")
    if mode not in ("exact", "head"):
        raise ValueError(f"mode must be 'exact' or 'head', not {mode!r}")
    tp = fp = fn = 0
    for got, want in zip(predicted, expected):
        got_set, want_set = {_key(n, mode) for n in got}, {_key(n, mode) for n in want}
        tp += len(got_set & want_set)
        fp += len(got_set - want_set)
        fn += len(want_set - got_set)
    return NounScore(len(predicted), tp, fp, fn)


def score_file(parser, path: str) -> dict[str, NounScore]:
    """Both scores of a parser (anything with .parse(captions) -> entities) on a {"caption", "nouns"} JSONL file."""
    predicted, expected = [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                doc = json.loads(line)
                predicted.append([e.noun for e in parser.parse([doc["caption"]])])
                expected.append(list(doc["nouns"]))
    return {mode: score_nouns(predicted, expected, mode) for mode in ("head", "exact")}


def main(argv: list[str]) -> int:
    from mining.config import EntitiesConfig
    from mining.entities.spacy_parser import SpacyEntityParser

    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    for mode, score in score_file(SpacyEntityParser(EntitiesConfig()), argv[0]).items():
        print(f"{mode:5}  {score}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
