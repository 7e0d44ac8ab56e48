"""Entity text embeddings: the 14 ViLD prompt templates (OVSeg A.2), averaged, cached per worker."""
from __future__ import annotations

import numpy as np
import torch

VILD_TEMPLATES = (
    "a photo of a {}.",
    "This is a photo of a {}",
    "There is a {} in the scene",
    "There is the {} in the scene",
    "a photo of a {} in the scene",
    "a photo of a small {}.",
    "a photo of a medium {}.",
    "a photo of a large {}.",
    "This is a photo of a small {}.",
    "This is a photo of a medium {}.",
    "This is a photo of a large {}.",
    "There is a small {} in the scene.",
    "There is a medium {} in the scene.",
    "There is a large {} in the scene.",
)
SINGLE_TEMPLATE = ("a photo of a {}.",)


class TextEmbedder:
    """float32[E, D] L2-normalised embeddings of nouns; each noun is encoded once per worker."""

    def __init__(self, model: torch.nn.Module, tokenizer, device: torch.device, templates: tuple[str, ...]) -> None:
        self.model, self.tokenizer, self.device, self.templates = model, tokenizer, device, templates
        self.cache: dict[str, np.ndarray] = {}

    @torch.inference_mode()
    def _encode(self, nouns: list[str]) -> np.ndarray:
        prompts = [t.format(n) for n in nouns for t in self.templates]
        tokens = self.tokenizer(prompts).to(self.device)
        emb = self.model.encode_text(tokens).float()
        emb = torch.nn.functional.normalize(emb, dim=-1).view(len(nouns), len(self.templates), -1).mean(1)
        return torch.nn.functional.normalize(emb, dim=-1).cpu().numpy()

    def __call__(self, nouns: list[str]) -> np.ndarray:
        missing = [n for n in dict.fromkeys(nouns) if n not in self.cache]
        if missing:
            for noun, emb in zip(missing, self._encode(missing)):
                self.cache[noun] = emb
        return np.stack([self.cache[n] for n in nouns])
