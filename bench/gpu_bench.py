"""The model stages and the trainers' steps at real size on one device, per precision: what bench/gpu.sh runs on a
lent GPU, and (`--device cpu --quick`, the toy models) here.

    .venv/bin/python bench/gpu_bench.py --device cuda --json               # configs/coco.yaml's models, random weights
    .venv/bin/python bench/gpu_bench.py --device cpu --quick --precisions fp32,bf16

Mining: toy-world images at the working size (1024 px real, 128 px quick) are decoded and parsed once; then, per
precision, the teacher stage and the region stage each run over all of them (after one warm-up batch) as the
pipeline runs them. Per stage: images/s, model share (device time of the model's forward passes, timed with CUDA
events, over the stage's wall: the rest is host work and launch gaps), host CPU ms per image (process time: it
includes waiting for the device), and MFU against bench/flops.py's FLOPs (`--flops FILE`; real size only).
Training: seconds per optimizer step of Model A (the CLIP visual tower on 224 px crops) and Model B (the
segmenter from the teacher on 1024 px images) at the trainers' precision.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))   # real_size: the random real-size teacher the GPU tests use


class ForwardClock:
    """Device seconds spent in wrapped forward passes (CUDA events on a GPU, the wall clock on the CPU)."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.spans, self.seconds = device, [], 0.0

    def wrap(self, fn):
        def timed(*args, **kwargs):
            if self.device.type == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                out = fn(*args, **kwargs)
                end.record()
                self.spans.append((start, end))
                return out
            tic = time.perf_counter()
            out = fn(*args, **kwargs)
            self.seconds += time.perf_counter() - tic
            return out
        return timed

    def total(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.seconds += sum(s.elapsed_time(e) for s, e in self.spans) / 1000
            self.spans = []
        return self.seconds


def mining_config(device: torch.device, quick: bool, precision: str, work: Path):
    from mining.config import load_config
    from mining.toyworld.demo import demo_config

    gpus = 1 if device.type == "cuda" else 0
    common = ["execution.executor=local", f"execution.teacher.num_gpus={gpus}", f"execution.regions.num_gpus={gpus}",
              f"execution.teacher.precision={precision}", f"execution.regions.precision={precision}"]
    if quick:
        return demo_config(common)
    from real_size import random_mask2former_swin_large

    teacher = work / "m2f"
    if not teacher.exists():
        random_mask2former_swin_large(teacher)
    return load_config(ROOT / "configs/coco.yaml", [
        *common, f"teacher.mask2former.model={teacher}", "teacher.mask2former.min_score=0", "regions.pretrained=null",
        "match.min_similarity=null", "match.min_margin=null"])


def timed_stage(stage, samples, device: torch.device, clock: ForwardClock) -> dict:
    if device.type == "cuda":
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter(), time.process_time()
    stage.run(samples)
    if device.type == "cuda":
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    model = clock.total()
    return {"images_per_second": len(samples) / wall, "model_share": model / wall,
            "host_cpu_ms_per_image": 1000 * cpu / len(samples)}


def mining_rows(device: torch.device, quick: bool, precisions: list[str], images: int, work: Path) -> list[dict]:
    from mining.stages import build_stages
    from mining.stages.read import read_chunks
    from mining.toyworld.make import make_shards

    make_shards(work / "in", shards=1, per_shard=images, size=128 if quick else 1024)
    rows = []
    prepared = None
    for precision in precisions:
        stages = {s.name: s for s in build_stages(mining_config(device, quick, precision, work))}
        if prepared is None:   # decoding and parsing do not depend on the precision
            prepared = read_chunks(str(work / "in" / "00000.tar"), None, None)[0].samples
            for name in ("decode", "entities"):
                stages[name].prepare()
                stages[name].run(prepared)
        row = {"precision": precision}
        teacher_out: list = []
        for name in ("teacher", "regions"):
            stage = stages[name]
            stage.prepare()
            clock = ForwardClock(device)
            if name == "teacher":
                stage.teacher.model.forward = clock.wrap(stage.teacher.model.forward)
                run_on = copy.deepcopy(prepared)
            else:
                pooler = stage.pooler
                if pooler is not None:
                    pooler.forward_features = clock.wrap(pooler.forward_features)
                else:
                    stage.clip.model.visual.forward = clock.wrap(stage.clip.model.visual.forward)
                run_on = teacher_out
            stage.run(copy.deepcopy(run_on[: stage.resources.batch_size]))   # warm-up: kernels, allocator
            clock.total()
            clock.seconds = 0.0
            row[name] = timed_stage(stage, run_on, device, clock)
            if name == "teacher":
                teacher_out = run_on
        row["pairs"] = sum(len(s.pairs) for s in teacher_out) if teacher_out[0].pairs is not None else None
        rows.append(row)
    return rows


def step_seconds(step, device: torch.device, steps: int) -> float:
    step()   # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    tic = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - tic) / steps


def training_rows(device: torch.device, quick: bool, precision: str, work: Path, steps: int) -> dict:
    from mining.config import PLACEHOLDERS, RegionsConfig
    from mining.devices import resolve_precision
    from mining.regions.clip_loader import load_clip
    from mining.train import clip_trainer, segmenter_trainer
    from mining.train.config import build_train_config
    from mining.train.segmenter import build_segmenter, make_criterion
    from mining.train.segmenter_config import build_segmenter_config
    from mining.train.segmenter_data import ImageTargets

    resolved = resolve_precision(precision, device)
    crops, size, images, side = (8, 64, 1, 128) if quick else (32, 224, 2, 1024)
    clip = load_clip(RegionsConfig(model="ovmine-tiny-vit" if quick else "ViT-L-14", pretrained=None), device)
    text = torch.nn.functional.normalize(torch.randn(64, clip.model.text_projection.shape[1], device=device), dim=-1)
    visual = clip.model.visual.train()
    opt = clip_trainer.make_optimizer(visual, build_train_config({"steps": 1}))
    pixels = torch.randn(crops, 3, size, size, device=device)
    labels = torch.randint(0, 64, (crops,), device=device)
    model_a = step_seconds(lambda: clip_trainer.train_step(visual, [(pixels, labels)], text, 50.0, opt,
                                                           precision=resolved), device, steps)
    if quick:
        teacher = str(PLACEHOLDERS["TOYWORLD_WEIGHTS"] / "mask2former")
    else:
        from real_size import random_mask2former_swin_large

        teacher = work / "m2f"
        if not teacher.exists():
            random_mask2former_swin_large(teacher)
    model, processor = build_segmenter(str(teacher), text.shape[1], 50.0)
    model.to(device).train()
    criterion = make_criterion(model.mask2former, 64, 0.1, 2.0, 5.0, 5.0, 12544 if not quick else 256)
    opt = segmenter_trainer.make_optimizer(model, build_segmenter_config({"steps": 1}))
    rng = np.random.default_rng(0)
    items = []
    for i in range(images):
        masks = np.zeros((2, side, side), bool)
        masks[0, : side // 2] = masks[1, side // 2:] = True
        items.append(ImageTargets(rng.integers(0, 255, (side, side, 3), np.uint8), masks, ["n0", "n1"], "s", str(i)))
    batch = segmenter_trainer.prepare_batch(processor, items, {f"n{i}": i for i in range(64)}, device)
    model_b = step_seconds(lambda: segmenter_trainer.train_step(model, criterion, [batch], text, opt,
                                                                precision=resolved), device, steps)
    return {"precision": resolved, "model_a": {"crops_per_step": crops, "crop_px": size, "seconds_per_step": model_a},
            "model_b": {"images_per_step": images, "image_px": side, "seconds_per_step": model_b}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--quick", action="store_true", help="the shipped toy models at 128 px")
    ap.add_argument("--precisions", default="fp32,tf32,bf16,fp16", help="the first is the reference")
    ap.add_argument("--images", type=int, default=None, help="images mined per precision (32 real, 16 quick)")
    ap.add_argument("--train-steps", type=int, default=5, help="timed optimizer steps per model")
    ap.add_argument("--no-train", action="store_true")
    ap.add_argument("--flops", help="bench/flops.py --json output: adds MFU to each mining stage")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: this machine has no CUDA device (use --device cpu --quick)")
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        rows = mining_rows(device, args.quick, args.precisions.split(","), args.images or (16 if args.quick else 32),
                           work)
        training = None if args.no_train else training_rows(device, args.quick, "auto", work, args.train_steps)
    if args.flops:
        from flops import mfu   # bench/flops.py, beside this file

        per_image = json.loads(Path(args.flops).read_text())["per_image"]
        regions_key = "regions_crops" if args.quick else "regions_pooling"   # toy: crops; coco.yaml: pooling
        gpu = "H200 SXM" if device.type == "cuda" and "H200" in torch.cuda.get_device_name() else "H100 SXM"
        for row in rows:
            row["teacher"]["mfu"] = mfu(per_image["teacher"], row["teacher"]["images_per_second"], gpu)
            row["regions"]["mfu"] = mfu(per_image[regions_key], row["regions"]["images_per_second"], gpu)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    result = {"device": name, "quick": args.quick, "mining": rows, "training": training}
    if args.json:
        print(json.dumps(result))
        return
    print(f"\n{name}, {'toy' if args.quick else 'real-size'} models\n")
    print(f"{'precision':<10}{'stage':<9}{'images/s':>10}{'model share':>13}{'host CPU ms/img':>17}{'MFU':>8}")
    for row in rows:
        for stage in ("teacher", "regions"):
            r = row[stage]
            mfu_text = f"{100 * r['mfu']:.2g}%" if "mfu" in r else "-"
            print(f"{row['precision']:<10}{stage:<9}{r['images_per_second']:>10.2f}{100 * r['model_share']:>12.0f}%"
                  f"{r['host_cpu_ms_per_image']:>17.1f}{mfu_text:>8}")
    if training:
        a, b = training["model_a"], training["model_b"]
        print(f"\ntraining at {training['precision']}: Model A {a['seconds_per_step']:.3f} s/step "
              f"({a['crops_per_step']} crops of {a['crop_px']} px), Model B {b['seconds_per_step']:.3f} s/step "
              f"({b['images_per_step']} images of {b['image_px']} px)")


if __name__ == "__main__":
    main()
