"""Dense mask pooling (OPSNet §3.2, Uni-OVSeg §3.3): one CLIP pass per image and scale, then each mask
averages the spatial features it covers. It replaces the global average pool of a convolutional CLIP, so
the model's own head (norm, projection) applies unchanged after it: a mask covering the whole image gives
exactly the image embedding."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def mask_weights(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """float[N, h, w]: the fraction of each feature cell a bool[N, H, W] mask covers."""
    return F.interpolate(masks[None].float(), size=size, mode="area")[0]


def pool_features(features: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted average of float[C, h, w] features under float[N, h, w] weights -> float[N, C]."""
    total = weights.flatten(1).sum(1, keepdim=True).clamp_min(1e-6)
    return weights.flatten(1) @ features.flatten(1).T / total


class DenseMaskPooler:
    """Wraps an open_clip TimmModel (convnext_*) visual tower."""

    def __init__(self, visual: torch.nn.Module) -> None:
        if not (hasattr(visual, "trunk") and hasattr(visual.trunk, "forward_features")
                and hasattr(visual.trunk, "forward_head")):
            raise ValueError("regions.mode=mask_pooling needs an open_clip timm (convnext_*) visual tower; "
                             "use regions.mode=masked_crop for this model")
        self.visual = visual

    def feature_map(self, pixels: torch.Tensor) -> torch.Tensor:
        """float[1, 3, H, W] normalised pixels -> float[C, h, w] features before pooling."""
        return self.visual.trunk.forward_features(pixels)[0]

    def embed(self, features: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """float[N, D] region embeddings (not normalised) of bool[N, H, W] masks."""
        pooled = pool_features(features, mask_weights(masks, tuple(features.shape[-2:])))
        # a 1x1 map through the timm head: its global pool is then the identity, its norm/proj apply
        return self.visual.head(self.visual.trunk.forward_head(pooled[:, :, None, None]))
