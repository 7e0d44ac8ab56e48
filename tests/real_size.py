"""Real-size architectures with random weights, written as local model folders: what configs/coco.yaml names,
without downloading anything (random weights time and place on a device the same as trained ones)."""
from __future__ import annotations

from pathlib import Path


def random_mask2former_swin_large(out: str | Path) -> str:
    """Mask2Former with a Swin-L backbone, COCO panoptic's shape (200 queries, 133 classes), random weights."""
    import torch
    from transformers import (Mask2FormerConfig, Mask2FormerForUniversalSegmentation, Mask2FormerImageProcessor,
                              SwinConfig)

    torch.manual_seed(0)
    backbone = SwinConfig(image_size=384, patch_size=4, embed_dim=192, depths=[2, 2, 18, 2],
                          num_heads=[6, 12, 24, 48], window_size=12,
                          out_features=["stage1", "stage2", "stage3", "stage4"])
    cfg = Mask2FormerConfig(backbone_config=backbone, num_queries=200, num_labels=133, use_timm_backbone=False,
                            use_pretrained_backbone=False)
    Mask2FormerForUniversalSegmentation(cfg).save_pretrained(out)
    Mask2FormerImageProcessor(size={"shortest_edge": 800, "longest_edge": 1333}, num_labels=133).save_pretrained(out)
    return str(out)
