"""Pre-train the toy world's tiny CLIP contrastively on whole world images and their captions (like real
CLIP: no masks, no region crops) and write it as an open_clip local-dir model: open_clip_config.json +
open_clip_model.safetensors.

Reproduce the shipped weights (about 20 minutes on 2 CPU cores):
    .venv/bin/python -m mining.toyworld.train_clip --out mining/toyworld/weights/clip
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from open_clip.loss import ClipLoss
from safetensors.torch import save_file

from mining.logs import logger
from mining.toyworld.training_data import TRAIN_SEED, render_training_set


MODEL_CFG = {
    "embed_dim": 64,
    "vision_cfg": {"timm_model_name": "test_convnext", "timm_model_pretrained": False, "timm_pool": "",
                   "timm_proj": "linear", "timm_drop": 0.0, "timm_proj_bias": False, "image_size": 64},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 2},
}
MEAN, STD = open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD
# web data is full of single-object photos, many of them stock photos on a plain backdrop; the demo world
# has 20% close-ups and no plain backdrops
CLOSEUP_RATE = 0.6
PLAIN_RATE = 0.25


def build_model() -> torch.nn.Module:
    return open_clip.CLIP(**MODEL_CFG, output_dict=True)


def augment(images: torch.Tensor, size: int, gen: torch.Generator) -> torch.Tensor:
    """uint8[B, H, W, 3] -> normalised float[B, 3, size, size]: a random crop keeping >= 70% of each side
    (so captions stay mostly true), random flip."""
    b, h, w, _ = images.shape
    x = images.permute(0, 3, 1, 2).float() / 255.0
    out = torch.empty(b, 3, size, size)
    for i in range(b):
        side = int(h * (0.7 + 0.3 * torch.rand(1, generator=gen).item()))
        y0 = int(torch.randint(0, h - side + 1, (1,), generator=gen))
        x0 = int(torch.randint(0, w - side + 1, (1,), generator=gen))
        crop = x[i:i + 1, :, y0:y0 + side, x0:x0 + side]
        if torch.rand(1, generator=gen).item() < 0.5:
            crop = crop.flip(-1)
        out[i] = F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (out - mean) / std


def save_local_dir(model: torch.nn.Module, out: Path, meta: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / "open_clip_model.safetensors"), metadata={k: str(v) for k, v in meta.items()})
    size = MODEL_CFG["vision_cfg"]["image_size"]
    config = {"model_cfg": MODEL_CFG,
              "preprocess_cfg": {"mean": list(MEAN), "std": list(STD), "size": size,
                                 "interpolation": "bicubic", "resize_mode": "shortest"},
              "training": meta}
    (out / "open_clip_config.json").write_text(json.dumps(config, indent=2) + "\n")


def train(out: Path, images_count: int, steps: int, batch: int, lr: float, seed: int) -> dict:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    data = render_training_set(images_count, seed=TRAIN_SEED, closeup_rate=CLOSEUP_RATE, plain_rate=PLAIN_RATE)
    images_t, captions = torch.from_numpy(data.images), data.captions
    by_ground = {g: np.flatnonzero(np.array(data.grounds) == g) for g in sorted(set(data.grounds))}
    # open_clip's own BPE tokenizer, as every CLIP uses, cut to this model's context
    tokenizer = open_clip.get_tokenizer("ViT-B-32", context_length=MODEL_CFG["text_cfg"]["context_length"])
    size = MODEL_CFG["vision_cfg"]["image_size"]
    model = build_model()
    model.train()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "token_embedding" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "token_embedding" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.98), eps=1e-6)
    warmup = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warmup if s < warmup else 0.5 * (1 + math.cos(math.pi * (s - warmup) / (steps - warmup))))
    loss_fn = ClipLoss()
    rng = np.random.default_rng(seed)
    start, last = time.time(), 0.0
    for step in range(steps):
        # half the batch shares one ground: there the background says nothing about which caption is
        # whose, so the loss has to look at the things (their shapes, not only their colours); the other
        # half is drawn from everything, so the grounds are still told apart
        pool = by_ground[sorted(by_ground)[int(rng.integers(len(by_ground)))]]
        same = rng.choice(pool, batch // 2, replace=False)
        rest = rng.choice(np.setdiff1d(np.arange(len(captions)), same), batch - batch // 2, replace=False)
        idx = np.concatenate([same, rest])
        texts = tokenizer([captions[i][int(rng.integers(2))] for i in idx])
        pixels = augment(images_t[idx], size, gen)
        feats = model(pixels, texts)
        loss = loss_fn(feats["image_features"], feats["text_features"], feats["logit_scale"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        last = loss.item()
        if step % 100 == 0 or step == steps - 1:
            logger.info("step %d/%d loss %.3f (%.0f s)", step, steps, last, time.time() - start)
    model.eval()
    meta = {"script": "python -m mining.toyworld.train_clip", "images": images_count, "steps": steps,
            "batch": batch, "lr": lr, "seed": seed, "world_seed": TRAIN_SEED, "closeup_rate": CLOSEUP_RATE, "plain_rate": PLAIN_RATE, "final_loss": round(last, 4),
            "seconds": round(time.time() - start)}
    save_local_dir(model, out, meta)
    return meta


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "weights" / "clip")
    p.add_argument("--images", type=int, default=20_000)
    p.add_argument("--steps", type=int, default=3500)
    p.add_argument("--batch", type=int, default=160)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    meta = train(args.out, args.images, args.steps, args.batch, args.lr, args.seed)
    print(json.dumps(meta))


if __name__ == "__main__":
    main()
