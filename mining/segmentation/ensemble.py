"""OVSeg A.5's ensemble of the segmenter's class probabilities p with a CLIP's masked-crop probabilities p̂:
p^(1-λ) · p̂^λ, per query and class. λ = 0 is the segmenter alone, λ = 1 CLIP alone (OVSeg: 0.6-0.7 best)."""
from __future__ import annotations

import torch


def geometric_ensemble(p: torch.Tensor, p_hat: torch.Tensor, lam: float,
                       has_crop: torch.Tensor | None = None) -> torch.Tensor:
    """float[Q, V]: p^(1-λ) · p̂^λ. p: the segmenter's class probabilities with the no-object column left out
    (a row sums to 1 - p(no object)); p̂: CLIP's softmax over the V classes. A query whose mask is empty has no
    crop for CLIP to judge (`has_crop` False): its row keeps p."""
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"ensemble λ must be in [0, 1], got {lam}")
    if p.shape != p_hat.shape:
        raise ValueError(f"segmenter probabilities {tuple(p.shape)} and CLIP's {tuple(p_hat.shape)} differ in shape")
    mixed = p.clamp_min(0).pow(1.0 - lam) * p_hat.clamp_min(0).pow(lam)
    if has_crop is not None:
        mixed = torch.where(has_crop[:, None], mixed, p)
    return mixed
