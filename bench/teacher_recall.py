"""The teachers alone on a toy world: the share of ground-truth instances (things and stuff) that some
proposed mask covers at IoU >= 0.5, with the demo config's teacher settings (before the shared
post-filters: minimum area, de-duplication, maximum masks).

    .venv/bin/python bench/teacher_recall.py --images 32 --seed 101
"""
from __future__ import annotations

import argparse
import tempfile

from mining.evaluation.ground_truth import load_ground_truth
from mining.evaluation.teacher_recall import teacher_instance_recall
from mining.sources.decode import decode_image
from mining.sources.shards import read_shard
from mining.stages.teacher import build_teacher
from mining.toyworld.demo import demo_config
from mining.toyworld.make import make_world


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--seed", type=int, default=101, help="world seed")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        world = make_world(tmp, 1, args.images, args.seed, progress=False)
        gt = load_ground_truth(world["ground_truth"])
        images = [(s.key, decode_image(s.members["jpg"], 10**8, 128)[0])
                  for s in read_shard(f"{world['shards_uri']}/00000.tar")]
        for kind in ("mask2former", "felzenszwalb"):
            cfg = demo_config([f"teacher.kind={kind}", "execution.teacher.num_gpus=0"])
            recall, per_image = teacher_instance_recall(build_teacher(cfg.teacher), gt, images)
            print(f"{kind:<13} instance recall @ IoU 0.5 = {100 * recall:.1f}% with {per_image:.1f} masks per image "
                  f"({args.images} images, world seed {args.seed})")


if __name__ == "__main__":
    main()
