"""A shard mined in several chunks: each chunk's write leaves a part under _parts/<stem>/ (a tar of its
records, then a JSON of its counts and statuses, which commits the part), and the write that finds every
part of the shard there joins them into the output shard, commits it and removes the parts.

No coordinator is needed: each writer commits its part before it lists the parts, so whichever finishes last
sees them all. Two writers finishing together may both join; they write identical bytes, and one that finds
the parts already removed by the other stops there. A run's leftover parts are never part of the output; the
next run removes them (`PARTS` is swept while holding the output's lease)."""
from __future__ import annotations

import json
import time
from typing import Any

from mining.records import ShardChunk
from mining.sinks.layout import marker_uri
from mining.sinks.reader import list_files, read_shard_documents
from mining.sinks.writer import (merge_counts, records_tar, shard_counts, shard_records, shard_stats, status_rows,
                                 write_shard_files)
from mining.storage import S3Options, delete_tree, exists, join, read_bytes, write_bytes_atomic

PARTS = "_parts"


def _part_uri(output: str, chunk: ShardChunk, ext: str) -> str:
    return join(output, PARTS, chunk.stem, f"{chunk.part:05d}-of-{chunk.parts:05d}.{ext}")


def write_part(chunk: ShardChunk, output: str, config_hash: str, s3: S3Options | None = None,
               image_ext: str | None = None) -> dict[str, Any] | None:
    """Write one chunk's part; returns the shard's marker when this write completed and committed the
    shard, else None (other parts are still to come, or the shard was committed already)."""
    if exists(marker_uri(output, chunk.stem), s3):
        return None   # a retried write after the shard was joined: nothing is missing
    write_bytes_atomic(_part_uri(output, chunk, "tar"), records_tar(shard_records(chunk.samples, image_ext)), s3)
    summary = {"counts": shard_counts(chunk.samples), "status": status_rows(chunk.samples), "started": chunk.started}
    write_bytes_atomic(_part_uri(output, chunk, "json"), json.dumps(summary).encode(), s3)
    return join_parts(chunk, output, config_hash, s3)


def join_parts(chunk: ShardChunk, output: str, config_hash: str, s3: S3Options | None = None) -> dict[str, Any] | None:
    """Join and commit the shard if all its parts are written; None if not (or if another writer did)."""
    folder = join(PARTS, chunk.stem)
    summaries = list_files(output, folder, f"-of-{chunk.parts:05d}.json", s3)
    if len(summaries) < chunk.parts:
        return None
    try:
        docs = [json.loads(read_bytes(uri, s3)) for uri in summaries]
        records = [doc for uri in summaries for doc in read_shard_documents(uri.removesuffix(".json") + ".tar", s3)]
    except FileNotFoundError:
        if exists(marker_uri(output, chunk.stem), s3):
            return None   # another writer joined them first and removed the parts
        raise
    marker = {"input": chunk.uri, "name": chunk.stem, "config_hash": config_hash, "limit": chunk.limit,
              **merge_counts([d["counts"] for d in docs])}
    started = min(d["started"] for d in docs)
    write_shard_files(output, chunk.stem, records, marker, s3, status=[row for d in docs for row in d["status"]],
                      stats=shard_stats(marker, started, time.time()))
    delete_tree(join(output, folder), s3)
    return marker
