"""Train the toy world's tiny Mask2Former class-agnostically (one "object" class) on the world's
ground-truth masks, things and stuff alike, and save it as a transformers directory (config.json,
model.safetensors, preprocessor_config.json) that the mask2former teacher loads with from_pretrained.

Reproduce the shipped weights (about 15 minutes on 2 CPU cores):
    .venv/bin/python -m mining.toyworld.train_teacher --out mining/toyworld/weights/mask2former
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch

from mining.logs import logger
from mining.toyworld.training_data import TRAIN_SEED, render_training_set

SIZE = 128


def build(num_queries: int = 24):
    from transformers import (Mask2FormerConfig, Mask2FormerForUniversalSegmentation, Mask2FormerImageProcessor,
                              SwinConfig)

    backbone = SwinConfig(image_size=SIZE, patch_size=4, embed_dim=24, depths=[1, 1, 2, 1], num_heads=[1, 2, 3, 6],
                          window_size=4, drop_path_rate=0.0, out_features=["stage1", "stage2", "stage3", "stage4"])
    cfg = Mask2FormerConfig(backbone_config=backbone, hidden_dim=64, mask_feature_size=64, feature_size=64,
                            num_queries=num_queries, encoder_layers=2, decoder_layers=4, num_attention_heads=4,
                            dim_feedforward=256, encoder_feedforward_dim=256, num_labels=1,
                            train_num_points=1024, no_object_weight=0.1, use_timm_backbone=False,
                            use_pretrained_backbone=False, id2label={0: "object"}, label2id={"object": 0})
    processor = Mask2FormerImageProcessor(size={"shortest_edge": SIZE, "longest_edge": SIZE}, size_divisor=32,
                                          num_labels=1, ignore_index=255, do_reduce_labels=False)
    return Mask2FormerForUniversalSegmentation(cfg), processor


def train(out: Path, images_count: int, steps: int, batch: int, lr: float, seed: int) -> dict:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    data = render_training_set(images_count, size=SIZE, seed=TRAIN_SEED + 1, with_masks=True)
    images, masks = data.images, data.masks
    model, processor = build()
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    warmup = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warmup if s < warmup
        else 0.5 * (1 + math.cos(math.pi * (s - warmup) / (steps - warmup))))
    start, last = time.time(), 0.0
    for step in range(steps):
        idx = rng.choice(len(images), batch, replace=False)
        flips = rng.random(batch) < 0.5
        batch_images = [np.ascontiguousarray(images[i][:, ::-1]) if f else images[i] for i, f in zip(idx, flips)]
        pixels = processor(images=batch_images, return_tensors="pt")["pixel_values"]
        mask_labels = [torch.from_numpy(np.ascontiguousarray(masks[i][:, :, ::-1] if f else masks[i])).float()
                       for i, f in zip(idx, flips)]
        class_labels = [torch.zeros(len(m), dtype=torch.long) for m in mask_labels]
        loss = model(pixel_values=pixels, mask_labels=mask_labels, class_labels=class_labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        last = loss.item()
        if step % 50 == 0 or step == steps - 1:
            logger.info("step %d/%d loss %.3f (%.0f s)", step, steps, last, time.time() - start)
    model.eval()
    meta = {"script": "python -m mining.toyworld.train_teacher", "images": images_count, "steps": steps,
            "batch": batch, "lr": lr, "seed": seed, "world_seed": TRAIN_SEED + 1, "final_loss": round(last, 4),
            "seconds": round(time.time() - start)}
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    (out / "training.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "weights" / "mask2former")
    p.add_argument("--images", type=int, default=6000)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    print(json.dumps(train(args.out, args.images, args.steps, args.batch, args.lr, args.seed)))


if __name__ == "__main__":
    main()
