"""Dense mask pooling (OPSNet §3.2, Uni-OVSeg §3.3): one CLIP pass per image and scale, then each mask
averages the spatial features it covers. It replaces the global average pool of a convolutional CLIP, so
the model's own head (norm, projection) applies unchanged after it: a mask covering the whole image gives
exactly the image embedding.

Only a trunk that yields a channels-first spatial map [B, C, h, w] can be pooled this way (open_clip's timm
ConvNeXt towers). A ViT yields tokens, a timm Swin a channels-last map, and open_clip's own towers end in
attention pooling or a class token: those are refused when the stage is set up, not sample by sample.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

REFUSAL = ("regions.mode=mask_pooling needs a convolutional visual tower with a spatial feature map (an "
           "open_clip timm 'convnext_*' model); {model} {why}; use regions.mode=masked_crop for this model")


def mask_weights(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """float[N, h, w]: the fraction of each feature cell a bool[N, H, W] mask covers.

    Exact only when the cells tile the frame the features saw: the pooled image's sides must be multiples
    of the trunk's stride (see `DenseMaskPooler.pooled_size`).
    """
    return F.interpolate(masks[None].float(), size=size, mode="area")[0]


def pool_features(features: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted average of float[C, h, w] features under float[N, h, w] weights -> float[N, C]."""
    total = weights.flatten(1).sum(1, keepdim=True).clamp_min(1e-6)
    return weights.flatten(1) @ features.flatten(1).T / total


def spatial_stride(visual: torch.nn.Module) -> int | str:
    """The trunk's output stride in pixels, or why `visual` cannot be mask-pooled (a string).

    Checks the trunk by what it does: a dummy image of (2, 3) x stride pixels must come out as
    [1, num_features, 2, 3]. That refuses token outputs (ViT), channels-last maps (Swin), and trunks whose
    grid does not divide the image by the stride they declare.
    """
    trunk = getattr(visual, "trunk", None)
    if trunk is None or not all(hasattr(trunk, a) for a in ("forward_features", "forward_head", "feature_info")):
        return f"has a {type(visual).__name__} tower, not an open_clip timm tower"
    try:
        stride = int(trunk.feature_info[-1]["reduction"])
        channels = int(trunk.num_features)
    except (AttributeError, IndexError, KeyError, TypeError) as err:
        return f"has a timm {type(trunk).__name__} trunk without a known output stride ({err!r})"
    param = next(trunk.parameters())
    dummy = torch.zeros(1, 3, 2 * stride, 3 * stride, device=param.device, dtype=param.dtype)
    try:
        with torch.inference_mode():
            out = trunk.forward_features(dummy)
    except Exception as err:  # a fixed-size ViT refuses other input sizes
        return f"has a timm {type(trunk).__name__} trunk that fails on a {2 * stride}x{3 * stride} image ({err!r})"
    if tuple(out.shape) != (1, channels, 2, 3):
        return (f"has a timm {type(trunk).__name__} trunk whose features for a {2 * stride}x{3 * stride} image "
                f"are {tuple(out.shape)}, not a [1, {channels}, 2, 3] map at stride {stride}")
    return stride


class DenseMaskPooler:
    """Wraps an open_clip TimmModel (convnext_*) visual tower."""

    def __init__(self, visual: torch.nn.Module, model: str = "this model") -> None:
        """`model` is the configured regions.model, named in the refusal."""
        stride = spatial_stride(visual)
        if isinstance(stride, str):
            raise ValueError(REFUSAL.format(model=f"regions.model={model!r}", why=stride))
        self.visual = visual
        self.stride = stride
        self.forward_features = visual.trunk.forward_features   # torch.compile may replace it

    def pooled_size(self, height: int, width: int, scale: int) -> tuple[int, int]:
        """(h, w) pixels at which a height x width image is embedded for a longest side of `scale`: each
        side rounded to a multiple of the stride (at least one stride), so the feature grid tiles the
        image exactly and `mask_weights` lines up with it. The aspect ratio moves by under a stride."""
        factor = scale / max(height, width)
        return tuple(max(1, round(side * factor / self.stride)) * self.stride for side in (height, width))

    def feature_map(self, pixels: torch.Tensor) -> torch.Tensor:
        """float[1, 3, H, W] normalised pixels -> float[C, H / stride, W / stride] features before pooling."""
        return self.forward_features(pixels)[0]

    def embed(self, features: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """float[N, D] region embeddings (not normalised) of bool[N, H, W] masks."""
        pooled = pool_features(features, mask_weights(masks, tuple(features.shape[-2:])))
        # a 1x1 map through the timm head: its global pool is then the identity, its norm/proj apply
        return self.visual.head(self.visual.trunk.forward_head(pooled[:, :, None, None]))
