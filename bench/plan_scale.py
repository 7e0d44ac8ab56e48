"""Planning and resume cost at scale: expanding 100k input shards, and reading the commit markers of an output
that has them all (a rerun with nothing left to mine), locally and on a loopback S3 server.

    .venv/bin/python bench/plan_scale.py                       # 100k local shards, 2k S3 markers
    .venv/bin/python bench/plan_scale.py --shards 10000 --s3-markers 500

Inputs are empty files (planning never opens them without --limit); markers are real marker documents.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import tempfile
import time
from pathlib import Path

from mining.schemas import MARKER_VERSION
from mining.sinks.commits import committed_markers, manifest_if_current, reusable
from mining.sources.uris import expand_inputs, shard_stem
from mining.storage import Location, S3Options


def marker(stem: str) -> dict:
    return {"schema_version": MARKER_VERSION, "input": f"in/{stem}.tar", "name": stem, "config_hash": "0" * 16,
            "limit": None, "images_in": 8, "images_with_pairs": 4, "pairs": 6, "unique_nouns": 3,
            "drops": {"no_entities": 4}, "errors": [], "timings": {"decode": 0.1}, "nouns": {"dog": 6}}


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def local_figures(root: Path, n: int) -> dict:
    (root / "in").mkdir()
    (root / "out" / "_done").mkdir(parents=True)
    for i in range(n):
        stem = f"{i:06d}"
        (root / "in" / f"{stem}.tar").touch()
        (root / "out" / "_done" / f"{stem}.json").write_text(json.dumps(marker(stem)))
    uris, t_dir = timed(lambda: expand_inputs([str(root / "in")]))
    _, t_brace = timed(lambda: expand_inputs([str(root / "in" / f"{{000000..{n - 1:06d}}}.tar")]))
    markers, t_markers = timed(lambda: committed_markers(str(root / "out")))
    done, t_reuse = timed(lambda: reusable(markers, {shard_stem(u): None for u in uris}, "0" * 16, "out"))
    assert len(done) == n
    return {"shards": n, "expand_dir_s": round(t_dir, 2), "expand_brace_s": round(t_brace, 2),
            "read_markers_s": round(t_markers, 2), "reuse_check_s": round(t_reuse, 2)}


def s3_figures(n: int) -> dict:
    import boto3
    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # the loopback server accepts any credentials; these reach boto3 and pyarrow alike, and only this process
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="bench",
                              aws_secret_access_key="bench")
        client.create_bucket(Bucket="bench")
        for i in range(n):
            stem = f"{i:06d}"
            client.put_object(Bucket="bench", Key=f"out/_done/{stem}.json", Body=json.dumps(marker(stem)).encode())
        s3 = S3Options(endpoint_url=endpoint)
        markers, elapsed = timed(lambda: committed_markers(Location("s3://bench/out", s3)))
        assert len(markers) == n
        # a rerun with nothing to mine: one listing and the manifest instead of every marker
        shards = [{k: v for k, v in m.items() if k not in ("nouns", "schema_version", "config_hash")}
                  for m in markers.values()]
        client.put_object(Bucket="bench", Key="out/manifest.json",
                          Body=json.dumps({"config_hash": "0" * 16, "shards": shards}).encode())
        current, t_manifest = timed(lambda: manifest_if_current(Location("s3://bench/out", s3), "0" * 16))
        assert current is not None
        return {"markers": n, "read_markers_s": round(elapsed, 2), "per_1000_s": round(1000 * elapsed / n, 2),
                "nothing_to_mine_s": round(t_manifest, 2)}
    finally:
        server.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shards", type=int, default=100_000)
    ap.add_argument("--s3-markers", type=int, default=2_000)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        local = local_figures(Path(tmp), args.shards)
    remote = s3_figures(args.s3_markers)
    if args.json:
        print(json.dumps({"local": local, "s3": remote}))
        return
    print(f"local, {local['shards']:,} shards: expand a directory {local['expand_dir_s']} s, a brace pattern "
          f"{local['expand_brace_s']} s; read every commit marker {local['read_markers_s']} s; "
          f"reuse check {local['reuse_check_s']} s")
    print(f"loopback S3, {remote['markers']:,} markers: one listing + concurrent reads {remote['read_markers_s']} s "
          f"({remote['per_1000_s']} s per 1,000); a rerun with nothing to mine (listing + manifest) "
          f"{remote['nothing_to_mine_s']} s")


if __name__ == "__main__":
    main()
