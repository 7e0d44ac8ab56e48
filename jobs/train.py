"""Ray job entrypoint for training: runs on the head node and trains with Ray Train on the job's cluster.

    ray job submit --working-dir . -- python -m jobs.train clip --config configs/train_clip_toyworld.yaml \
        --data s3://bucket/mined/cc3m --output s3://bucket/models/clip-adapted
"""
from __future__ import annotations

import sys

from mining.cli import main

if __name__ == "__main__":
    # Ray Train, never the in-process executor; the driver joins the job's cluster through RAY_ADDRESS
    sys.exit(main(["train", *sys.argv[1:], "--executor", "ray"]))
