"""How well a CLIP's text tower tells the toy world's category names apart: the cosines between their
ViLD-ensembled embeddings (the prompts mining, training and evaluation all use). A frozen text tower that maps
two categories to one point caps every method built on it, so the shipped toy CLIP is held to a bound.

    .venv/bin/python -m mining.toyworld.text_separation [MODEL_FOLDER]     # the matrix and the worst pair
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mining.regions.text import VILD_TEMPLATES, TextEmbedder
from mining.toyworld.vocab import CATEGORIES

MAX_CROSS_COSINE = 0.85   # the bound the shipped toy CLIP meets (issue 21): two categories' words stay apart


@dataclass
class Separation:
    names: list[str]                 # the category names, in the toy world's order
    matrix: np.ndarray               # float[C, C]: cosines between the category names' embeddings
    worst: float                     # the highest cosine between words (names or synonyms) of two categories
    worst_pair: tuple[str, str]

    def table(self) -> str:
        """The name matrix as aligned text, two decimals."""
        head = "        " + " ".join(f"{n[:6]:>6}" for n in self.names)
        rows = [f"{n[:7]:>7} " + " ".join(f"{v:6.2f}" for v in row) for n, row in zip(self.names, self.matrix)]
        return "\n".join([head, *rows])


@torch.no_grad()
def text_separation(model: torch.nn.Module, tokenizer) -> Separation:
    was_training = model.training
    model.eval()
    try:
        embed = TextEmbedder(model, tokenizer, torch.device("cpu"), VILD_TEMPLATES)
        words = [(c.name, w) for c in CATEGORIES for w in (c.name, *c.synonyms)]
        emb = embed([w for _, w in words])
    finally:
        model.train(was_training)
    cos = emb @ emb.T
    other = np.array([[a != b for b, _ in words] for a, _ in words])
    worst = np.where(other, cos, -np.inf)
    i, j = np.unravel_index(int(worst.argmax()), worst.shape)
    first = [words.index((c.name, c.name)) for c in CATEGORIES]
    return Separation([c.name for c in CATEGORIES], cos[np.ix_(first, first)], float(worst[i, j]),
                      (words[i][1], words[j][1]))


def load_folder(folder: Path):
    import open_clip

    model, _, _ = open_clip.create_model_and_transforms(f"local-dir:{folder}")
    return model, open_clip.get_tokenizer(f"local-dir:{folder}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", type=Path, nargs="?", default=Path(__file__).parent / "weights" / "clip")
    sep = text_separation(*load_folder(p.parse_args(argv).folder))
    print(sep.table())
    print(f"highest cosine between two categories' words: {sep.worst:.3f} ({sep.worst_pair[0]} / "
          f"{sep.worst_pair[1]}); bound {MAX_CROSS_COSINE}")


if __name__ == "__main__":
    main()
