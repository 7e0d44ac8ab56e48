"""Real-size architectures with random weights, written as local model folders: what configs/coco.yaml names,
without downloading anything (random weights time and place on a device the same as trained ones)."""
from __future__ import annotations

from pathlib import Path


def mask2former_swin_large_config():
    """Mask2Former with a Swin-L backbone, COCO panoptic's shape (200 queries, 133 classes)."""
    from transformers import Mask2FormerConfig, SwinConfig

    backbone = SwinConfig(image_size=384, patch_size=4, embed_dim=192, depths=[2, 2, 18, 2],
                          num_heads=[6, 12, 24, 48], window_size=12,
                          out_features=["stage1", "stage2", "stage3", "stage4"])
    return Mask2FormerConfig(backbone_config=backbone, num_queries=200, num_labels=133, use_timm_backbone=False,
                             use_pretrained_backbone=False)


def random_mask2former_swin_large(out: str | Path) -> str:
    """`mask2former_swin_large_config` with random weights and COCO's processor, saved as a model folder."""
    import torch
    from transformers import Mask2FormerForUniversalSegmentation, Mask2FormerImageProcessor

    torch.manual_seed(0)
    Mask2FormerForUniversalSegmentation(mask2former_swin_large_config()).save_pretrained(out)
    Mask2FormerImageProcessor(size={"shortest_edge": 800, "longest_edge": 1333}, num_labels=133).save_pretrained(out)
    return str(out)
