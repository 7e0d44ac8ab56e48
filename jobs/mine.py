"""Ray job entrypoint for mining: runs on the cluster's head node and joins the cluster it runs in.

    ray job submit --working-dir . -- python -m jobs.mine --config configs/coco.yaml \
        --input 's3://bucket/cc3m/{00000..00331}.tar' --output s3://bucket/mined/cc3m
"""
from __future__ import annotations

import sys

from mining.cli import main

if __name__ == "__main__":
    args = sys.argv[1:]
    # inside a Ray job the driver must attach to the running cluster, never start a local one
    sys.exit(main(["mine", *args, "--set", "execution.ray_address=auto"]))
