"""Peak memory of `ovmine stats` over a large generated pairs set, at 1x and 10x the pairs.

    .venv/bin/python bench/stats_memory.py --files 10 --rows-per-file 50000
    .venv/bin/python bench/stats_memory.py --files 20 --rows-per-file 50000 --scales 1 --report

With --report, the child also writes the HTML report (`stats --html`): its explorer samples the pairs into the
page, so the page size follows --explore, not the output (the generated set has no shard tars, so its cards
carry no pictures: on the toy world, 96-px frames, each sampled pair adds about 6 KB of pictures;
thumbnails are at most 160 px, so larger frames add at most a few KB more).

Each measurement runs in a fresh child process and reports its peak RSS (ru_maxrss). If statistics held the
pairs in memory, the 10x peak would grow with the data; streaming keeps it flat. The Arrow size of the whole
table is printed for comparison (what loading it at once would take, before any Python objects).
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mining.config import build_config
from mining.schemas import MANIFEST_VERSION, PAIRS_VERSION, pairs_arrow_schema


def make_pairs_set(root: Path, files: int, rows: int, vocabulary: int = 20_000, seed: int = 0) -> int:
    rng = np.random.default_rng(seed)
    nouns = np.array([f"noun{i}" for i in range(vocabulary)])
    (root / "pairs").mkdir(parents=True)
    n = rows
    per_image = 3
    for f in range(files):
        stem = f"{f:05d}"
        zipf = np.minimum(rng.zipf(1.3, n), vocabulary) - 1       # a long-tailed vocabulary, like real captions
        columns = {
            "schema_version": pa.array([PAIRS_VERSION] * n), "shard": pa.array([stem] * n),
            "key": pa.array([f"{stem}{i // per_image:06d}" for i in range(n)]),
            "mask_index": pa.array(np.arange(n, dtype=np.int32) % per_image),
            "entity_index": pa.array(np.arange(n, dtype=np.int32) % per_image),
            "noun": pa.array(nouns[zipf]), "phrase": pa.array(nouns[zipf]),
            "caption_index": pa.array(np.zeros(n, np.int32)),
            "similarity": pa.array(rng.uniform(0.1, 0.4, n).astype(np.float32)),
            "margin": pa.array(rng.uniform(0, 0.2, n).astype(np.float32)),
            "probability": pa.array(rng.uniform(0, 1, n).astype(np.float32)),
            "scale_similarities": pa.array([[0.2, 0.3]] * n, pa.list_(pa.float32())),
            "teacher_score": pa.array(rng.uniform(0, 1, n).astype(np.float32)),
            "area": pa.array(rng.integers(64, 500_000, n)),
            "bbox": pa.array([[0.0, 0.0, 10.0, 10.0]] * n, pa.list_(pa.float32())),
            "height": pa.array(np.full(n, 768, np.int32)), "width": pa.array(np.full(n, 1024, np.int32)),
            "rle_counts": pa.array(["ab12cd34" * 8] * n),
            "image_masks": pa.array(np.full(n, 40, np.int32)), "image_entities": pa.array(np.full(n, 4, np.int32)),
        }
        pq.write_table(pa.table(columns, schema=pairs_arrow_schema()), root / "pairs" / f"{stem}.parquet")
        # readers take committed shards only: a file without its _done marker is not part of the output
        (root / "_done").mkdir(exist_ok=True)
        (root / "_done" / f"{stem}.json").write_text(json.dumps({"shard": stem, "pairs": n}))
    cfg = build_config({})
    totals = {"images_in": files * n // per_image, "images_with_pairs": files * n // per_image, "pairs": files * n,
              "unique_nouns": 0, "drops": {}}
    manifest = {"schema_version": MANIFEST_VERSION, "created": "bench", "config": cfg.resolved(),
                "config_hash": cfg.config_hash(), "models": {"teacher": "-", "clip": "-"}, "versions": {},
                "shards": [], "totals": totals, "timings": {}, "wall_seconds": 1.0, "images_per_second": 1.0}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return files * n


def child(output: str, report: bool) -> None:
    from mining.postrun.report import render_report
    from mining.postrun.stats import compute_stats

    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # after imports (torch comes in)
    start = time.perf_counter()
    stats = compute_stats(output, keep_pair_stats=report)
    figures = {"pairs": stats["pairs"], "unique_nouns": stats["unique_nouns"],
               "seconds": round(time.perf_counter() - start, 2)}
    if report:
        start = time.perf_counter()
        page = render_report(output, stats)
        figures |= {"report_seconds": round(time.perf_counter() - start, 2), "page_mb": round(len(page) / 2**20, 2)}
    print(json.dumps(figures | {"baseline_mb": round(baseline, 1),
                                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=10)
    ap.add_argument("--rows-per-file", type=int, default=50_000)
    ap.add_argument("--scales", type=int, nargs="+", default=[1, 10])
    ap.add_argument("--report", action="store_true", help="also time the HTML report and print its size")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.child, args.report)
    print(f"{'pairs':>12}{'files':>7}{'parquet MB':>12}{'raw MB':>9}{'stats s':>9}{'RSS after import':>18}"
          f"{'peak RSS MB':>13}")
    for scale in args.scales:
        with tempfile.TemporaryDirectory() as tmp:
            files = args.files * scale
            make_pairs_set(Path(tmp), files, args.rows_per_file)
            on_disk = sum(p.stat().st_size for p in Path(tmp, "pairs").iterdir()) / 2**20
            raw = sum(pq.ParquetFile(p).metadata.row_group(i).total_byte_size
                      for p in Path(tmp, "pairs").iterdir() for i in range(pq.ParquetFile(p).num_row_groups)) / 2**20
            out = subprocess.run([sys.executable, __file__, "--child", tmp, *(["--report"] if args.report else [])],
                                 capture_output=True, text=True, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{r['pairs']:>12}{files:>7}{on_disk:>12.1f}{raw:>9.1f}{r['seconds']:>9.1f}{r['baseline_mb']:>18.1f}"
                  f"{r['peak_rss_mb']:>13.1f}"
                  + (f"   report {r['report_seconds']:.1f} s, page {r['page_mb']:.2f} MB" if args.report else ""))


if __name__ == "__main__":
    main()
