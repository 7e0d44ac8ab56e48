"""FLOPs per image of each model stage at the real-size configs, counted by `torch.utils.flop_counter` on the CPU
with random weights (FLOPs do not depend on the weights), and from them the ideal images/s of a GPU at its dense
bf16 peak; with `--measured`, the MFU of measured images/s (bench/gpu.sh writes them).

    .venv/bin/python bench/flops.py                    # configs/coco.yaml's models, ~2 min on 2 cores
    .venv/bin/python bench/flops.py --quick --json     # the toy models: what bench/gpu.sh --quick counts

Counted (FLOPs = 2 x multiply-adds, as the counter and MFU use them):
  teacher   Mask2Former Swin-L (COCO panoptic's shape: 200 queries, 133 classes) on a 1024 x 1024 input, split
            into backbone, pixel decoder and query decoder (the part that stays fp32 under bf16);
  pooling   open_clip convnext_large_d_320's trunk at each of coco.yaml's scales (896, 1024) + its head per mask;
  crops     open_clip ViT-L-14 on one 224 px masked crop; an image costs masks x crop scales of them;
  text      open_clip ViT-L-14's text tower on one noun's 14 ViLD prompts, cut after the longest prompt (once per
            noun and run: the text cache keeps it).
"""
from __future__ import annotations

import argparse
import json

import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))   # real_size: the GPU tests' architectures

# dense (no sparsity) bf16 tensor-core peaks, from NVIDIA's datasheets (SXM parts)
PEAK_BF16_TFLOPS = {"H100 SXM": 989.4, "H200 SXM": 989.4}
REAL = {"teacher_size": 1024, "pool_model": "convnext_large_d_320", "pool_scales": [896, 1024],
        "crop_model": "ViT-L-14", "crop_size": 224, "masks": 100, "crop_scales": 1}
QUICK = {"teacher_size": 128, "pool_model": "ovmine-tiny-convnext", "pool_scales": [128],
         "crop_model": "ovmine-tiny-vit", "crop_size": 64, "masks": 16, "crop_scales": 1}


def counted(fn) -> tuple[float, dict[str, float]]:
    """(total FLOPs, FLOPs per module name) of `fn()`."""
    with torch.inference_mode(), FlopCounterMode(display=False, depth=4) as counter:
        fn()
    return float(counter.get_total_flops()), {k: float(sum(v.values())) for k, v in counter.get_flop_counts().items()}


def teacher_flops(size: int, quick: bool) -> dict[str, float]:
    from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation

    if quick:   # the shipped toy teacher's architecture
        from mining.config import PLACEHOLDERS

        cfg = Mask2FormerConfig.from_pretrained(PLACEHOLDERS["TOYWORLD_WEIGHTS"] / "mask2former")
    else:   # the one the GPU tests and bench/gpu_bench.py build
        from real_size import mask2former_swin_large_config

        cfg = mask2former_swin_large_config()
    model = Mask2FormerForUniversalSegmentation(cfg).eval()
    total, parts = counted(lambda: model(pixel_values=torch.zeros(1, 3, size, size)))
    prefix = "Mask2FormerForUniversalSegmentation.model."
    return {"total": total, "backbone": parts.get(prefix + "pixel_level_module.encoder", 0.0),
            "pixel_decoder": parts.get(prefix + "pixel_level_module.decoder", 0.0),
            "query_decoder": parts.get(prefix + "transformer_module", 0.0)}


def clip_model(name: str):
    import open_clip

    from mining.regions.clip_loader import register_model_configs

    register_model_configs()
    return open_clip.create_model(name, pretrained=None).eval(), open_clip.get_tokenizer(name)


def pooling_flops(name: str, scales: list[int], masks: int) -> dict[str, float]:
    from mining.regions.mask_pooling import DenseMaskPooler

    model, _ = clip_model(name)
    pooler = DenseMaskPooler(model.visual, name)
    per_scale = {}
    for scale in scales:
        h, w = pooler.pooled_size(scale, scale, scale)
        features = []
        trunk, _ = counted(lambda: features.append(pooler.feature_map(torch.zeros(1, 3, h, w))))
        region = torch.zeros(masks, h, w, dtype=torch.bool)
        region[:, : h // 2, : w // 2] = True
        head, _ = counted(lambda: pooler.embed(features[0], region))
        per_scale[str(scale)] = trunk + head
    return per_scale


def crop_flops(name: str, size: int) -> float:
    model, _ = clip_model(name)
    return counted(lambda: model.encode_image(torch.zeros(1, 3, size, size)))[0]


def text_flops(name: str) -> dict[str, float]:
    from mining.regions.text import VILD_TEMPLATES, encode_text_trimmed

    model, tokenizer = clip_model(name)
    tokens = tokenizer([t.format("traffic light") for t in VILD_TEMPLATES])
    return {"trimmed": counted(lambda: encode_text_trimmed(model, tokens))[0],
            "full_context": counted(lambda: model.encode_text(tokens))[0]}


def measure(quick: bool) -> dict:
    real = QUICK if quick else REAL
    teacher = teacher_flops(real["teacher_size"], quick)
    pooling = pooling_flops(real["pool_model"], real["pool_scales"], real["masks"])
    crop = crop_flops(real["crop_model"], real["crop_size"])
    text = text_flops(real["crop_model"])
    per_image = {"teacher": teacher["total"], "regions_pooling": sum(pooling.values()),
                 "regions_crops": crop * real["masks"] * real["crop_scales"]}
    per_image["mining_pooling"] = per_image["teacher"] + per_image["regions_pooling"]   # configs/coco.yaml
    per_image["mining_crops"] = per_image["teacher"] + per_image["regions_crops"]
    return {"config": real, "teacher": teacher, "pooling_per_scale": pooling, "crop": crop, "text_per_noun": text,
            "per_image": per_image,
            "ideal_images_per_second": {gpu: {k: peak * 1e12 / v for k, v in per_image.items()}
                                        for gpu, peak in PEAK_BF16_TFLOPS.items()}}


def mfu(flops_per_image: float, images_per_second: float, gpu: str) -> float:
    """Model FLOPs utilisation: achieved FLOP/s over the GPU's dense bf16 peak."""
    return flops_per_image * images_per_second / (PEAK_BF16_TFLOPS[gpu] * 1e12)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="the toy models (seconds, not minutes)")
    ap.add_argument("--measured", help="JSON {stage: images/s} of a GPU run (teacher, regions_pooling, ...), "
                                       "with 'gpu': one of " + ", ".join(PEAK_BF16_TFLOPS))
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    torch.manual_seed(0)
    result = measure(args.quick)
    if args.measured:
        with open(args.measured) as f:
            measured = json.load(f)
        gpu = measured.pop("gpu")
        per_image = result["per_image"]
        result["mfu"] = {k: mfu(per_image[k], v, gpu) for k, v in measured.items() if k in per_image}
    if args.json:
        print(json.dumps(result))
        return
    g = 1e9
    t, cfg = result["teacher"], result["config"]
    print(f"GFLOPs per image ({'toy' if args.quick else 'real-size'} models, random weights)\n")
    def row(label: str, flops: float, note: str = "") -> None:
        print(f"  {label:<42}{flops / g:10.1f}   {note}")

    row(f"teacher Mask2Former at {cfg['teacher_size']} px", t["total"],
        f"(backbone {t['backbone'] / g:.1f}, pixel decoder {t['pixel_decoder'] / g:.1f}, query decoder "
        f"{t['query_decoder'] / g:.1f}: {100 * t['query_decoder'] / t['total']:.1f}% kept fp32 under bf16)")
    for scale, flops in result["pooling_per_scale"].items():
        row(f"pooling {cfg['pool_model']} at {scale} px", flops)
    row(f"one {cfg['crop_size']} px crop, {cfg['crop_model']}", result["crop"],
        f"({cfg['masks']} masks x {cfg['crop_scales']} scale: {result['per_image']['regions_crops'] / g:.1f})")
    text = result["text_per_noun"]
    row("text, one noun x 14 prompts", text["trimmed"], f"(full 77-token context: {text['full_context'] / g:.1f})")
    print("\nideal images/s at the dense bf16 peak (all of the GPU on this one stage)\n")
    for gpu, ideal in result["ideal_images_per_second"].items():
        print(f"  {gpu} ({PEAK_BF16_TFLOPS[gpu]} TFLOPS): teacher {ideal['teacher']:.0f}, teacher + pooling "
              f"{ideal['mining_pooling']:.0f}, teacher + crops {ideal['mining_crops']:.0f}")
    for stage, share in result.get("mfu", {}).items():
        print(f"  MFU {stage}: {100 * share:.1f}%")


if __name__ == "__main__":
    main()
