"""Entity text embeddings: the 14 ViLD prompt templates (OVSeg A.2), averaged, cached per worker."""
from __future__ import annotations

import os

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


SEQUENCES_PER_BATCH = 1024   # text sequences per forward pass: memory stays flat whatever the vocabulary


def encode_text_trimmed(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """`model.encode_text(tokens)`, computed on the batch's used positions only. In open_clip's own text towers
    attention is causal and the embedding is read at the end-of-text token, so the padding after it (a prompt
    of ~12 tokens padded to 77) changes nothing and costs most of the FLOPs. Towers of another shape (Hugging
    Face encoders, CoCa's class token, no causal mask) are run as they are."""
    tower = model.text if hasattr(model, "text") else model
    names = ("token_embedding", "positional_embedding", "transformer", "ln_final", "text_projection")
    pool = getattr(tower, "text_pool_type", getattr(tower, "pool_type", None))
    mask = getattr(tower, "attn_mask", None)
    if (not all(hasattr(tower, n) for n in names) or pool not in ("argmax", "eos") or mask is None
            or getattr(tower, "cls_emb", None) is not None or tokens.dim() != 2):
        return model.encode_text(tokens)
    from open_clip.transformer import text_global_pool

    used = int((tokens != 0).to(torch.int64).cumsum(1).argmax(1).max()) + 1   # up to the last non-pad token
    text = tokens[:, :used]
    cast = tower.transformer.get_cast_dtype() if hasattr(tower.transformer, "get_cast_dtype") else torch.float32
    x = tower.token_embedding(text).to(cast) + tower.positional_embedding[:used].to(cast)
    x = tower.ln_final(tower.transformer(x, attn_mask=mask[:used, :used]))
    eos = getattr(tower, "text_eos_id", getattr(tower, "eos_id", None))
    x = text_global_pool(x, text, pool, eos_token_id=eos)
    projection = tower.text_projection
    if projection is None:
        return x
    return projection(x) if isinstance(projection, torch.nn.Linear) else x @ projection


class TextEmbedder:
    """float32[E, D] L2-normalised embeddings of nouns; each noun is encoded once per worker, in batches of at
    most SEQUENCES_PER_BATCH sequences, and, with a `store` (`mining.regions.text_cache.TextCache`: read at
    start, added to unless not `persist`), once per text tower and template set on this machine."""

    def __init__(self, model: torch.nn.Module, tokenizer, device: torch.device, templates: tuple[str, ...],
                 store=None, sequences_per_batch: int = SEQUENCES_PER_BATCH, persist: bool = True) -> None:
        self.model, self.tokenizer, self.device, self.templates = model, tokenizer, device, templates
        self.store = store if persist else None
        self.nouns_per_batch = max(1, sequences_per_batch // len(templates))
        self.cache: dict[str, np.ndarray] = store.load() if store is not None else {}

    @torch.inference_mode()
    def _encode(self, nouns: list[str]) -> np.ndarray:
        prompts = [t.format(n) for n in nouns for t in self.templates]
        tokens = self.tokenizer(prompts).to(self.device)
        emb = encode_text_trimmed(self.model, tokens).float()
        emb = torch.nn.functional.normalize(emb, dim=-1).view(len(nouns), len(self.templates), -1).mean(1)
        return torch.nn.functional.normalize(emb, dim=-1).cpu().numpy()

    def __call__(self, nouns: list[str]) -> np.ndarray:
        missing = [n for n in dict.fromkeys(nouns) if n not in self.cache]
        for start in range(0, len(missing), self.nouns_per_batch):
            batch = missing[start:start + self.nouns_per_batch]
            emb = self._encode(batch)
            self.cache.update(zip(batch, emb))
            if self.store is not None:
                self.store.add(batch, emb)
        return np.stack([self.cache[n] for n in nouns])


def embedder_for(clip, device: torch.device, templates: str, persist: bool = True) -> TextEmbedder:
    """The TextEmbedder of a `LoadedClip` with the named template set ('vild' or 'single'), backed by the text
    cache on this machine (`OVMINE_TEXT_CACHE=0` turns it off) when the tower's weights can be named. Whole
    vocabularies (training, segmentation) are `persist`ed; mining, which meets nouns a few at a time, only reads
    what they stored (a file per few nouns would pile up over millions of images)."""
    from mining.regions.clip_loader import CACHE_DIR
    from mining.regions.text_cache import TextCache

    chosen = VILD_TEMPLATES if templates == "vild" else SINGLE_TEMPLATE
    use_store = clip.identity is not None and os.environ.get("OVMINE_TEXT_CACHE", "1") != "0"
    store = TextCache(CACHE_DIR, clip.identity, chosen) if use_store else None
    return TextEmbedder(clip.model, clip.tokenizer, device, chosen, store, persist=persist)
