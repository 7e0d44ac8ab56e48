"""Where a stage's time goes outside the pipeline: its work alone in this process, what handing a chunk to the
next stage costs (pickling, as between Ray workers), and the teacher alone in a Ray actor with nothing else running.

    .venv/bin/python bench/stage_alone.py                 # demo config, 8 x 32 toy-world images

Compare with the manifest's `timings` of a full run (bench/pipeline.py): a stage slower there than here is
slowed by sharing the cores, not by Ray or by serialisation. Figures, not assertions.
"""
from __future__ import annotations

import argparse
import pickle
import tempfile
import time
from pathlib import Path

import ray
import torch

from mining.config import load_config
from mining.stages import build_stages
from mining.stages.read import read_chunks
from mining.toyworld.demo import DEMO_CONFIG
from mining.toyworld.make import make_world


def per_image_ms(seconds: float, images: int) -> float:
    return round(1000 * seconds / images, 2)


@ray.remote(num_cpus=0.5)
class AloneActor:
    """One stage in an actor, as the executor runs it; `time` runs it over chunks that reached it already."""

    def __init__(self, stage) -> None:
        self.stage = stage
        self.stage.prepare()

    def time(self, chunks) -> float:
        for chunk in chunks[:1]:   # warm-up
            self.stage.run(chunk.samples)
        start = time.process_time()
        for chunk in chunks[1:]:
            self.stage.run(chunk.samples)
        return time.process_time() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(DEMO_CONFIG))
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--per-shard", type=int, default=32)
    args = ap.parse_args()
    torch.set_num_threads(1)   # as in a stage actor
    with tempfile.TemporaryDirectory() as tmp:
        make_world(str(Path(tmp) / "world"), args.shards, args.per_shard, seed=3, progress=False)
        cfg = load_config(args.config, ["execution.executor=ray"])
        chunks = [c for path in sorted((Path(tmp) / "world" / "shards").glob("*.tar"))
                  for c in read_chunks(str(path), None, cfg.execution.chunk_size)]
        stages = build_stages(cfg)
        images = sum(len(c.samples) for c in chunks[1:])
        print(f"{images} images (after a warm-up chunk), {args.config}; CPU ms per image")
        print(f"  {'stage':<10}{'alone':>8}{'pickle':>9}{'unpickle':>10}{'KiB/image':>11}")
        teacher_input = None
        for stage in stages:
            stage.prepare()
            if stage.name == "teacher":
                teacher_input = pickle.dumps(chunks)   # what reaches the teacher, before it runs
            stage.run(chunks[0].samples)
            start = time.process_time()
            for chunk in chunks[1:]:
                stage.run(chunk.samples)
            alone = time.process_time() - start
            start = time.process_time()
            blobs = [pickle.dumps(c, protocol=5) for c in chunks[1:]]
            dumps = time.process_time() - start
            start = time.process_time()
            for blob in blobs:
                pickle.loads(blob)
            loads = time.process_time() - start
            size = sum(map(len, blobs)) / images / 1024
            print(f"  {stage.name:<10}{per_image_ms(alone, images):>8}{per_image_ms(dumps, images):>9}"
                  f"{per_image_ms(loads, images):>10}{size:>11.1f}")
        ray.init(include_dashboard=False, logging_level="ERROR")
        try:
            actor = AloneActor.remote(build_stages(cfg)[[s.name for s in stages].index("teacher")])
            seconds = ray.get(actor.time.remote(pickle.loads(teacher_input)))
        finally:
            ray.shutdown()
        print(f"  teacher in a Ray actor, nothing else running: {per_image_ms(seconds, images)} ms per image")


if __name__ == "__main__":
    main()
