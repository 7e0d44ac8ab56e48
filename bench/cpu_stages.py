"""ms·core per image of the CPU stages, each run as the pipeline runs it, against the aim of 15 ms·core in all
(one 16-core node then feeds >= 1,000 images/s to its GPUs).

    PYTHONPATH=$PWD .venv/bin/python bench/cpu_stages.py --images 64

Inputs are generated with a fixed seed: toy-world scenes rendered at 320 px and upscaled to real-size JPEGs
(1280x960, quality 90, with sensor noise so that they compress like photos), 5 toy-world captions each, and
up to 24 masks in the working frame (the scene's own instance masks plus random blobs) with unit embeddings
where some masks lean towards an entity, so that matching keeps pairs and RLE and writing have work to do.
The teacher and region stages are not run: their outputs are what is generated.

Stages: decode (DecodeStage: JPEG -> working frame), entities (EntityStage: spaCy over 5 captions), match
(MatchStage: Hungarian + filters, then the COCO RLE of the masks; RLE is also timed alone), write (write_shard:
the shard tar, pairs and status parquet, stats and marker in a temp folder).

The teacher's host side, both ways a GPU teacher can run (`--candidates` masks come out of the model, the
input's masks are the ones kept): with its preprocessing on the device (how ovmine runs it), the host only copies
the uint8 frame for the transfer (a plain copy here, a pinned one on CUDA), and the kept masks' RLE is the one
counted in match; with the processor on the host (how it ran before), the host resizes, normalises and pads
(Mask2Former's COCO processor: shortest side 800, longest 1333) and run-length encodes every candidate to filter
them (areas, IoU).

CPU time (time.process_time) with BLAS/OpenMP/torch threads pinned to 1, so a figure is ms of one core and
does not depend on what else the machine runs; each stage is run `--repeat` times and the fastest pass is
reported. Figures, not assertions.
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # before numpy/torch load
    os.environ[_var] = "1"

import argparse  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402

import numpy as np  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from mining.config import RunConfig  # noqa: E402
from mining.records import Sample  # noqa: E402
from mining.sinks.writer import write_shard  # noqa: E402
from mining.stages.decode import DecodeStage  # noqa: E402
from mining.stages.entities import EntityStage  # noqa: E402
from mining.stages.match import MatchStage  # noqa: E402
from mining.masks import encode_json  # noqa: E402
from mining.toyworld.captions import caption_scene  # noqa: E402
from mining.toyworld.scene import render_scene  # noqa: E402

AIM_MS_CORE = 15.0
NODE_CORES = 16
SHARD_SIZE = 32


@dataclass
class Input:
    """One generated image with what the teacher and region stages would have given it."""

    key: str
    jpeg: bytes
    captions: list[str]
    masks: np.ndarray          # bool[N, H, W] in the working frame
    candidates: np.ndarray     # bool[C, H, W]: masks + blobs, what a teacher proposes before its post-filters
    scores: np.ndarray         # float32[N]
    regions: np.ndarray        # float32[N, D], L2-normalised
    rng_seed: list[int]


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


def _blob(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A random filled ellipse or polygon of at least 64 pixels (the teacher's min_area), bool[height, width]."""
    mask = np.zeros((height, width), bool)
    while mask.sum() < 64:
        mask = _shape(rng, height, width)
    return mask


def _shape(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    im = Image.new("L", (width, height))
    draw = ImageDraw.Draw(im)
    cx, cy = rng.uniform(0, width), rng.uniform(0, height)
    r = rng.uniform(0.04, 0.3) * width
    if rng.random() < 0.5:
        draw.ellipse([cx - r, cy - r * rng.uniform(0.5, 1.5), cx + r, cy + r * rng.uniform(0.5, 1.5)], fill=1)
    else:
        angles = np.sort(rng.uniform(0, 2 * np.pi, int(rng.integers(3, 9))))
        radii = r * rng.uniform(0.5, 1.0, len(angles))
        draw.polygon([(cx + q * np.cos(a), cy + q * np.sin(a)) for a, q in zip(angles, radii)], fill=1)
    return np.asarray(im, dtype=bool)


def make_inputs(count: int, seed: int, width: int, height: int, working_size: int, captions: int,
                max_masks: int, dim: int, candidates: int) -> list[Input]:
    scale = working_size / max(width, height)
    frame = (max(1, round(height * scale)), max(1, round(width * scale)))   # (H, W) as decode makes it
    inputs = []
    for i in range(count):
        rng = np.random.default_rng([seed, i])
        scene = render_scene(rng, size=320)
        big = Image.fromarray(scene.image).resize((width, height), Image.BICUBIC)
        pixels = np.asarray(big, dtype=np.float32) + rng.normal(0, 4, (height, width, 3))
        buf = io.BytesIO()
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=90)
        texts: list[str] = []
        while len(texts) < captions:
            texts += [c for c in caption_scene(rng, scene) if c not in texts]
        masks = [np.asarray(Image.fromarray(inst.mask).resize(frame[::-1], Image.NEAREST))
                 for inst in scene.things + scene.stuff]
        n = int(rng.integers(min(max(len(masks), max_masks // 2), max_masks), max_masks + 1))
        masks += [_blob(rng, *frame) for _ in range(n - len(masks))]
        kept = np.stack(masks[:max_masks])
        blobs = np.random.default_rng([seed, i, 2])   # its own stream: the kept inputs are as they always were
        extra = [_blob(blobs, *frame)[None] for _ in range(max(0, candidates - len(kept)))]
        inputs.append(Input(f"{i:06d}", buf.getvalue(), texts[:captions], kept, np.concatenate([kept, *extra]),
                            np.sort(rng.uniform(0.3, 1.0, min(n, max_masks)))[::-1].astype(np.float32),
                            _unit(rng.normal(size=(min(n, max_masks), dim))), [seed, i]))
    return inputs


def fresh_samples(inputs: list[Input]) -> list[Sample]:
    return [Sample(shard=f"bench-{i // SHARD_SIZE:05d}.tar", shard_stem=f"bench-{i // SHARD_SIZE:05d}", key=x.key,
                   index=i % SHARD_SIZE, members={"jpg": x.jpeg, "json": json.dumps({"captions": x.captions}).encode()})
            for i, x in enumerate(inputs)]


def add_model_outputs(samples: list[Sample], inputs: list[Input], dim: int) -> None:
    """What the teacher and region stages would give: masks, scores, region and entity embeddings, where
    the first masks lean towards an entity (cosine ~0.5) so that matching keeps pairs."""
    for sample, x in zip(samples, inputs):
        if not sample.alive:
            continue
        rng = np.random.default_rng([*x.rng_seed, 1])
        entities = _unit(rng.normal(size=(len(sample.entities), dim)))
        regions = x.regions.copy()
        for m in range(min(len(regions), len(entities))):
            regions[m] = _unit(regions[m] + entities[m] * rng.uniform(0.8, 1.4))
        sample.masks, sample.mask_scores = x.masks, x.scores
        sample.region_embeddings, sample.entity_embeddings = [regions], entities


def in_batches(stage, samples: list[Sample], size: int) -> float:
    """CPU seconds of the stage over all samples, in the executor's batch size."""
    start = time.process_time()
    for i in range(0, len(samples), size):
        stage.run(samples[i:i + size])
    return time.process_time() - start


def teacher_host(samples: list[Sample], inputs: list[Input], processor, batch_size: int) -> dict[str, float]:
    """CPU seconds of the teacher's host side: the frame copy (device-side preprocessing) or the processor and the
    post-filters over every candidate (host preprocessing)."""
    import torch

    from mining.teachers.base import postfilter_masks

    frames = [s.image for s in samples]
    start = time.process_time()
    for frame in frames:
        torch.from_numpy(frame).clone()
    took = {"teacher_device_side": time.process_time() - start}
    start = time.process_time()
    for x in inputs:   # what decoding on the GPU leaves the host (decode_images_on_device): headers and a copy
        with Image.open(io.BytesIO(x.jpeg)) as im:
            im.getexif()
        torch.frombuffer(bytearray(x.jpeg), dtype=torch.uint8)
    took["decode_device_side"] = time.process_time() - start
    start = time.process_time()
    for i in range(0, len(frames), batch_size):
        processor(images=frames[i:i + batch_size], return_tensors="pt")
    for x in inputs:
        postfilter_masks(x.candidates, np.linspace(1, 0.3, len(x.candidates), dtype=np.float32), 64, 0.9,
                         len(x.candidates))
    took["teacher_host_side"] = time.process_time() - start
    return took


def one_pass(inputs: list[Input], cfg: RunConfig, stages: dict, dim: int, out: str, processor) -> dict[str, float]:
    """CPU seconds of each stage over all inputs, and of RLE alone."""
    samples = fresh_samples(inputs)
    ex = cfg.execution
    took = {"decode": in_batches(stages["decode"], samples, ex.decode.batch_size),
            "entities": in_batches(stages["entities"], samples, ex.entities.batch_size)}
    took |= teacher_host(samples, inputs, processor, ex.teacher.batch_size)
    add_model_outputs(samples, inputs, dim)
    start = time.process_time()
    for x in inputs:
        encode_json(x.masks)
    took["rle"] = time.process_time() - start
    took["match"] = in_batches(stages["match"], samples, ex.match.batch_size)
    config_hash = cfg.config_hash()
    start = time.process_time()
    for shard in range(0, len(samples), SHARD_SIZE):
        write_shard(samples[shard:shard + SHARD_SIZE], out, config_hash)
    took["write"] = time.process_time() - start
    took["kept"] = sum(1 for s in samples if s.alive and s.pairs)
    return took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=960)
    ap.add_argument("--working-size", type=int, default=1024)
    ap.add_argument("--captions", type=int, default=5)
    ap.add_argument("--max-masks", type=int, default=24)
    ap.add_argument("--dim", type=int, default=512, help="embedding width")
    ap.add_argument("--candidates", type=int, default=100, help="masks out of the teacher before its filters "
                                                                "(teacher.mask2former.top_n)")
    ap.add_argument("--batch-size", type=int, default=None,
                    help="execution.{decode,entities,match}.batch_size (default: the config's)")
    ap.add_argument("--repeat", type=int, default=3, help="passes; the fastest of each stage is reported")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON only")
    args = ap.parse_args()

    import torch   # pinned too: spaCy's thinc may run on torch
    torch.set_num_threads(1)
    execution: dict = {"executor": "local"}
    if args.batch_size is not None:
        execution |= {stage: {"batch_size": args.batch_size} for stage in ("decode", "entities", "match")}
    cfg = RunConfig.model_validate({"source": {"captions_per_image": args.captions,
                                               "working_size": args.working_size}, "execution": execution})
    inputs = make_inputs(args.images, args.seed, args.width, args.height, args.working_size, args.captions,
                         args.max_masks, args.dim, args.candidates)
    from transformers import Mask2FormerImageProcessor

    processor = Mask2FormerImageProcessor(size={"shortest_edge": 800, "longest_edge": 1333})
    stages = {"decode": DecodeStage.from_config(cfg), "entities": EntityStage.from_config(cfg),
              "match": MatchStage.from_config(cfg)}
    for stage in stages.values():
        stage.prepare()
    passes = []
    with tempfile.TemporaryDirectory() as tmp:
        # lazy imports (pyarrow, pandas) untimed
        one_pass(inputs[:2], cfg, stages, args.dim, f"{tmp}/warm-up", processor)
        for r in range(args.repeat):
            passes.append(one_pass(inputs, cfg, stages, args.dim, f"{tmp}/out{r}", processor))
    ms = {k: round(1000 * min(p[k] for p in passes) / args.images, 2)
          for k in ("decode", "entities", "match", "rle", "write", "teacher_device_side", "teacher_host_side",
                    "decode_device_side")}
    total = round(ms["decode"] + ms["entities"] + ms["match"] + ms["write"] + ms["teacher_device_side"], 2)
    host_preprocessing = round(total - ms["teacher_device_side"] + ms["teacher_host_side"], 2)
    result = {"images": args.images, "image_size": [args.width, args.height], "working_size": args.working_size,
              "captions": args.captions, "max_masks": args.max_masks, "kept_images": passes[0]["kept"],
              "mean_masks": round(float(np.mean([len(x.masks) for x in inputs])), 1),
              "mean_jpeg_kb": round(float(np.mean([len(x.jpeg) for x in inputs])) / 1024, 1),
              "ms_core_per_image": ms, "total_ms_core": total, "aim_ms_core": AIM_MS_CORE,
              "total_ms_core_host_preprocessing": host_preprocessing, "candidates": args.candidates,
              "total_ms_core_gpu_decode": round(total - ms["decode"] + ms["decode_device_side"], 2),
              "node_images_per_s": round(NODE_CORES * 1000 / total), "node_cores": NODE_CORES,
              "batch_size": cfg.execution.entities.batch_size, "repeat": args.repeat}
    if args.json:
        print(json.dumps(result))
        return
    print(f"{args.images} JPEGs of {args.width}x{args.height} ({result['mean_jpeg_kb']} KB), working size "
          f"{args.working_size}, {args.captions} captions, {result['mean_masks']} masks on average "
          f"(<= {args.max_masks}); {result['kept_images']} images kept pairs; batches of {result['batch_size']}; "
          f"fastest of {args.repeat} passes")
    print(f"{'stage':<22}{'ms·core/image':>14}")
    for name in ("decode", "entities", "match", "write"):
        print(f"{name + (' (incl. RLE)' if name == 'match' else ''):<22}{ms[name]:>14.2f}")
    print(f"{'  of which RLE':<22}{ms['rle']:>14.2f}")
    print(f"{'teacher, host side':<22}{ms['teacher_device_side']:>14.2f}   (preprocessing and post-filters on the "
          f"device: the frame's copy)")
    print(f"{'total':<22}{total:>14.2f}   aim <= {AIM_MS_CORE:g} ({total / AIM_MS_CORE:.1f}x the aim)")
    print(f"with the teacher's processor and post-filters on the host ({args.candidates} candidates): teacher "
          f"{ms['teacher_host_side']:.2f}, total {host_preprocessing:.2f}")
    gpu_decode = result["total_ms_core_gpu_decode"]
    print(f"with JPEGs decoded on the GPU too (execution.decode.num_gpus > 0; the host reads headers: "
          f"{ms['decode_device_side']:.2f}): total {gpu_decode:.2f}, one node feeds "
          f"{round(NODE_CORES * 1000 / gpu_decode)} images/s")
    print(f"one {NODE_CORES}-core node feeds {result['node_images_per_s']} images/s (aim >= 1,000)")


if __name__ == "__main__":
    main()
