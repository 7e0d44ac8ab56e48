"""Throughput of the language-model stages: the LLM entity parser (captions/s, transformers backend) and
caption refinement (images/s), with real-size architectures built from configs with random weights
(tests/real_size.py: a Qwen2.5-0.5B-Instruct-shaped LM; a LLaVA-1.5-style VLM, CLIP ViT-L/14-336 + that LM), or
with the project's toy models (`--quick`). Random weights time as trained ones do, but rarely stop early (an end
token is one id in 152K): each answer runs to its max_new_tokens, the worst case, and "new tokens/s" is then
that bound over the time (the toy models stop when they are done: for them it is an upper bound).

    .venv/bin/python bench/language_models.py --device cuda --json      # on a GPU
    .venv/bin/python bench/language_models.py --device cpu --quick      # the toy models on this CPU
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))   # tests/real_size.py: the real-size architectures the GPU tests use
WEIGHTS = ROOT / "mining" / "toyworld" / "weights"


def captions(n: int) -> list[str]:
    from mining.toyworld.train_entity_lm import toy_captions

    return [c for c, _ in toy_captions(2_026_120, (n + 1) // 2)][:n]


def entity_figures(model: str, device: str, batch: int, count: int, max_new_tokens: int) -> dict:
    import torch

    from mining.config import build_config
    from mining.entities.llm_parser import TransformersBackend

    cfg = build_config({"entities": {"kind": "llm", "llm": {"model": model, "batch_size": batch,
                                                            "max_new_tokens": max_new_tokens}}}).entities.llm
    backend = TransformersBackend(cfg, device)
    texts = captions(count)
    backend.generate(texts[:batch])   # warm-up: kernels, caches
    if device == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    answers = backend.generate(texts)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    new_tokens = len(answers) * max_new_tokens
    return {"model": model, "captions": count, "batch": batch, "captions_per_second": round(count / seconds, 2),
            "new_tokens_per_second": round(new_tokens / seconds, 1), "dtype": str(backend.model.dtype)}


def refine_figures(model: str, device: str, precision: str, batch: int, count: int, max_new_tokens: int,
                   size: int) -> dict:
    import torch

    from mining.captions.refiner import CaptionRefiner
    from mining.config import RefineConfig
    from mining.toyworld.make import scene_rng
    from mining.toyworld.scene import render_scene

    refiner = CaptionRefiner(RefineConfig(model=model, max_new_tokens=max_new_tokens), device, precision)
    images = np.stack([render_scene(scene_rng(2_026_120, 0, i), size, 0.2, 0.1).image for i in range(batch)])
    refiner.refine(list(images))   # warm-up
    if device == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    answers = [a for _ in range(count // batch) for a in refiner.refine(list(images))]
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    new_tokens = len(answers) * max_new_tokens
    return {"model": model, "images": len(answers), "batch": batch, "precision": refiner.precision,
            "images_per_second": round(len(answers) / seconds, 2),
            "new_tokens_per_second": round(new_tokens / seconds, 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--quick", action="store_true", help="the shipped toy models instead of the real-size ones")
    ap.add_argument("--captions", type=int, default=None, help="captions parsed (512 real size, 64 quick)")
    ap.add_argument("--images", type=int, default=None, help="images refined (128 real size, 16 quick)")
    ap.add_argument("--batch", type=int, default=None, help="per generate call (64 real size, 16 quick)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    batch = args.batch or (16 if args.quick else 64)
    with tempfile.TemporaryDirectory() as tmp:
        if args.quick:
            lm, vlm = str(WEIGHTS / "entity_lm"), str(WEIGHTS / "captioner")
        else:
            from real_size import random_llava_clip_l_qwen, random_qwen2_5_0_5b

            lm = random_qwen2_5_0_5b(Path(tmp) / "qwen2.5-0.5b")
            vlm = random_llava_clip_l_qwen(Path(tmp) / "llava-clip-l-336-qwen2.5-0.5b")
        figures = {
            "device": args.device,
            "entities": entity_figures(lm, args.device, batch, args.captions or (64 if args.quick else 512), 128),
            "refine": refine_figures(vlm, args.device, "auto", min(batch, 16),
                                     args.images or (16 if args.quick else 128), 64, 128 if args.quick else 336),
        }
    if args.json:
        print(json.dumps(figures))   # one line: bench/gpu.sh reads the last
        return 0
    e, r = figures["entities"], figures["refine"]
    print(f"device {args.device}")
    print(f"  LLM entities  {e['captions_per_second']:>8} captions/s  {e['new_tokens_per_second']:>9} new tokens/s  "
          f"(batch {e['batch']}, {e['dtype']}; {e['model']})")
    print(f"  refine        {r['images_per_second']:>8} images/s    {r['new_tokens_per_second']:>9} new tokens/s  "
          f"(batch {r['batch']}, {r['precision']}; {r['model']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
