"""Pre-train the toy world's tiny CLIP contrastively on whole world images and their captions (like real
CLIP: no masks, no region crops) and write it as an open_clip local-dir model: open_clip_config.json +
open_clip_model.safetensors.

Reproduce the shipped weights (about 35 minutes on 2 CPU cores):
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
from mining.toyworld.text_separation import text_separation
from mining.toyworld.vocab import BY_NAME
from mining.toyworld.training_data import TRAIN_SEED, render_training_set


# a ResNet image tower: timm's tiny test_convnext (the earlier toy CLIP's) starts its blocks at a 1e-6 layer
# scale and learned the shapes so slowly that its text tower never told their names apart (cosine 0.99-1.00);
# told apart by a supervised head on clean close-ups, test_convnext reached 53% after 200 steps, test_resnet 100%
MODEL_CFG = {
    "embed_dim": 64,
    "vision_cfg": {"timm_model_name": "test_resnet", "timm_model_pretrained": False, "timm_pool": "",
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


# Web text names a thing in every phrasing, so a real CLIP's text tower knows a noun in contexts no caption of
# this world has (the ViLD prompts: "There is a medium {} in the scene."). A third of the captions the toy CLIP
# reads are therefore its image's biggest thing in one of these wrappings (none of them a ViLD prompt).
ALT_RATE = 1 / 3
ALT_WRAPPERS = ("{}", "{} in the scene", "the scene has {} in it", "this is {}", "this one is {}",
                "there is {} here", "there is {} in this picture", "a scene with {}", "photo: {}",
                "an image showing {}", "{}, photographed up close", "a shot of {}", "look at {}",
                "here we see {}", "{} on display", "my photo of {}", "in this photo: {}")


def alt_caption(rng: np.random.Generator, subject: tuple[str, str, str]) -> str:
    """Its biggest thing (size, colour, category) named in a random wrapping, with or without adjectives."""
    size, colour, name = subject
    category = BY_NAME[name]
    noun = str(rng.choice(category.synonyms)) if category.synonyms and rng.random() < 0.3 else name
    words = [w for w, p in ((size, 0.5), (colour, 0.6)) if rng.random() < p] + [noun]
    phrase = f"{'an' if words[0][0] in 'aeiou' else 'a'} {' '.join(words)}"
    return str(rng.choice(ALT_WRAPPERS)).format(phrase)


def caption_for(rng: np.random.Generator, captions: list[str], subject) -> str:
    if subject is not None and rng.random() < ALT_RATE:
        return alt_caption(rng, subject)
    return captions[int(rng.integers(len(captions)))]


def groups(labels: list) -> dict:
    """label -> indices of the images with that label (images without one are in no group)."""
    values = np.array(labels, dtype=object)
    return {v: np.flatnonzero(values == v) for v in sorted({x for x in labels if x is not None})}


def batch_indices(rng: np.random.Generator, batch: int, groupings: tuple[dict, ...], count: int) -> np.ndarray:
    """`batch` distinct image indices: one share per grouping drawn from a single random group of it, the
    rest from all images."""
    share = batch // (len(groupings) + 1)
    chosen: list[int] = []
    for grouping in groupings:
        pool = np.setdiff1d(grouping[sorted(grouping)[int(rng.integers(len(grouping)))]], chosen)
        chosen.extend(rng.choice(pool, min(share, len(pool)), replace=False).tolist())
    rest = np.setdiff1d(np.arange(count), chosen)
    chosen.extend(rng.choice(rest, batch - len(chosen), replace=False).tolist())
    return np.array(chosen)


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
    by_ground = groups(data.grounds)
    by_look = groups([f"{g} {c}" if c else None for g, c in zip(data.grounds, data.colours)])
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
        opt, lambda s: (s + 1) / warmup if s < warmup
        else 0.5 * (1 + math.cos(math.pi * (s - warmup) / (steps - warmup))))
    loss_fn = ClipLoss()
    rng = np.random.default_rng(seed)
    start, last = time.time(), 0.0
    for step in range(steps):
        # a third of the batch shares one ground, a third one ground and one colour (of each image's biggest
        # thing): there neither background nor colour says which caption is whose, so the loss has to look at
        # the shapes and the text tower has to tell the shape nouns apart; the last third is drawn from
        # everything, so grounds and colours are still told apart
        idx = batch_indices(rng, batch, (by_ground, by_look), len(captions))
        texts = tokenizer([caption_for(rng, captions[i], data.subjects[i]) for i in idx])
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
        if step % 500 == 0 or step == steps - 1:
            sep = text_separation(model, tokenizer)
            logger.info("highest cosine between two categories' words: %.3f (%s / %s)", sep.worst, *sep.worst_pair)
    model.eval()
    meta = {"script": "python -m mining.toyworld.train_clip", "images": images_count, "steps": steps,
            "batch": batch, "lr": lr, "seed": seed, "world_seed": TRAIN_SEED, "closeup_rate": CLOSEUP_RATE,
            "plain_rate": PLAIN_RATE, "alt_rate": round(ALT_RATE, 4),
            "final_loss": round(last, 4), "max_category_cosine": round(sep.worst, 3),
            "seconds": round(time.time() - start)}
    save_local_dir(model, out, meta)
    return meta


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "weights" / "clip")
    p.add_argument("--images", type=int, default=20_000)
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--batch", type=int, default=160)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    meta = train(args.out, args.images, args.steps, args.batch, args.lr, args.seed)
    print(json.dumps(meta))


if __name__ == "__main__":
    main()
