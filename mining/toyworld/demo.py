"""`ovmine demo`: make a small toy world, mine it with the shipped models (local Ray by default) and score
the pairs against the world's ground truth."""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

import yaml

from mining.config import RunConfig, load_config

WEIGHTS_DIR = Path(__file__).parent / "weights"
DEMO_CONFIG = Path(__file__).parent / "demo.yaml"


def demo_config(overrides: list[str] | None = None) -> RunConfig:
    """The demo config; loading fills in ${TOYWORLD_WEIGHTS} with the shipped weights' folder."""
    return load_config(DEMO_CONFIG, overrides)


def run_demo(out: str, shards: int = 4, per_shard: int = 32, seed: int = 0, teacher: str = "mask2former",
             executor: str = "ray", overrides: list[str] | None = None, progress: bool = False,
             mining_progress: Any = None) -> dict[str, Any]:
    """`progress`: bars for making the world and scoring it; `mining_progress`: the mining run's listener
    (a `mining.pipeline.MiningProgress`; default: the same bool)."""
    from mining.evaluation.run import evaluate
    from mining.pipeline import run_mining
    from mining.sinks.guard import MINED, WORLD, check_folder_output
    from mining.toyworld.make import make_world

    start = time.time()
    cfg = demo_config([f"teacher.kind={teacher}", f"execution.executor={executor}", *(overrides or [])])
    for folder, kind in (("world", WORLD), ("mined", MINED)):   # the demo's own working folders: each demo
        check_folder_output(os.path.join(out, folder), kind, [], flag="demo folder")   # starts afresh in them,
        shutil.rmtree(os.path.join(out, folder), ignore_errors=True)                   # never in a user's folder
    world = make_world(os.path.join(out, "world"), shards, per_shard, seed, progress=progress)
    config_path = Path(out) / "config.yaml"
    config_path.write_text(yaml.safe_dump(cfg.resolved(), sort_keys=False))
    mined = os.path.join(out, "mined")
    manifest = run_mining(cfg, [world["shards_uri"]], mined,
                          progress=progress if mining_progress is None else mining_progress)
    report = evaluate(mined, world["ground_truth"], region_top1=True, progress=progress)
    return {
        "world": world, "config": str(config_path), "mined": mined, "teacher": teacher, "executor": executor,
        "totals": manifest["totals"], "mining_seconds": manifest["wall_seconds"],
        "images_per_second": manifest["images_per_second"], "eval": report,
        "wall_seconds": round(time.time() - start, 1),
        "commands": {
            "mine": f"ovmine mine --config {config_path} --input {world['shards_uri']} --output {mined} --overwrite",
            "eval": f"ovmine eval {mined} --gt {world['ground_truth']} --region-top1",
            "stats": f"ovmine stats {mined} --html {os.path.join(out, 'report.html')}",
        },
    }


def format_demo(result: dict[str, Any]) -> str:
    from mining.evaluation.run import format_eval, percent as pct

    t, e = result["totals"], result["eval"]
    top1 = e.get("region_top1", {})
    lines = [
        f"ovmine demo: toy world of {result['world']['images']} images, teacher {result['teacher']}, "
        f"{result['executor']} executor",
        f"  pairs              {t['pairs']} on {t['images_with_pairs']} images",
        f"  unique nouns       {t['unique_nouns']}",
        f"  precision          {pct(e['precision'])}  (pair mask IoU >= 0.5 with an instance of its noun)",
        f"  recall             {pct(e['recall'])}  (of {e['minable']} instances the captions make minable)",
        f"  region top-1       {pct(top1.get('top1'))}  (ground-truth masks vs all category names; "
        f"chance {pct(top1.get('chance'))})",
        f"  images/s           {result['images_per_second']:.2f}  (mining wall {result['mining_seconds']:.1f} s, "
        f"Ray start-up included)",
        f"  demo wall time     {result['wall_seconds']:.1f} s",
        "",
        format_eval(e),
        "",
        "next:",
        *(f"  {c}" for c in result["commands"].values()),
    ]
    return "\n".join(lines)
