"""Score the entity parser on a labelled caption set: micro precision and recall of nouns per caption."""
from __future__ import annotations

from dataclasses import dataclass


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


def score_nouns(predicted: list[list[str]], expected: list[list[str]]) -> NounScore:
    if len(predicted) != len(expected):
        raise ValueError(f"{len(predicted)} predictions for {len(expected)} labelled captions")
    tp = fp = fn = 0
    for got, want in zip(predicted, expected):
        got_set, want_set = {n.lower() for n in got}, {n.lower() for n in want}
        tp += len(got_set & want_set)
        fp += len(got_set - want_set)
        fn += len(want_set - got_set)
    return NounScore(len(predicted), tp, fp, fn)
