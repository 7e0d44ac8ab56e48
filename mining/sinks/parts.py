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
from mining.sinks.layout import marker_file
from mining.sinks.reader import read_shard_documents
from mining.sinks.writer import (cap_examples, dropped_examples, merge_counts, records_tar, shard_counts,
                                 shard_records, shard_stats, status_rows, write_shard_files)
from mining.storage import Location, Where

PARTS = "_parts"


def _parts_folder(output: Where, chunk: ShardChunk) -> Location:
    return Location.of(output).join(PARTS, chunk.stem)


def _part_file(output: Where, chunk: ShardChunk, ext: str) -> Location:
    return _parts_folder(output, chunk) / f"{chunk.part:05d}-of-{chunk.parts:05d}.{ext}"


def write_part(chunk: ShardChunk, output: Where, config_hash: str,
               image_ext: str | None = None) -> dict[str, Any] | None:
    """Write one chunk's part; returns the shard's marker when this write completed and committed the
    shard, else None (other parts are still to come, or the shard was committed already)."""
    if marker_file(output, chunk.stem).exists():
        return None   # a retried write after the shard was joined: nothing is missing
    _part_file(output, chunk, "tar").write_atomic(records_tar(shard_records(chunk.samples, image_ext)))
    summary = {"counts": shard_counts(chunk.samples), "status": status_rows(chunk.samples), "started": chunk.started,
               "dropped": dropped_examples(chunk.samples)}
    _part_file(output, chunk, "json").write_atomic(json.dumps(summary).encode())
    return join_parts(chunk, output, config_hash)


def join_parts(chunk: ShardChunk, output: Where, config_hash: str) -> dict[str, Any] | None:
    """Join and commit the shard if all its parts are written; None if not (or if another writer did)."""
    folder = _parts_folder(output, chunk)
    summaries = folder.list(f"-of-{chunk.parts:05d}.json")
    if len(summaries) < chunk.parts:
        return None
    try:
        docs = [json.loads(summary.read()) for summary in summaries]
        records = [doc for summary in summaries for doc in read_shard_documents(summary.with_suffix(".json", ".tar"))]
    except FileNotFoundError:
        if marker_file(output, chunk.stem).exists():
            return None   # another writer joined them first and removed the parts
        raise
    marker = {"input": chunk.uri, "name": chunk.stem, "config_hash": config_hash, "limit": chunk.limit,
              **merge_counts([d["counts"] for d in docs])}
    started = min(d["started"] for d in docs)
    write_shard_files(output, chunk.stem, records, marker, status=[row for d in docs for row in d["status"]],
                      stats=shard_stats(marker, started, time.time()),
                      dropped=cap_examples([e for d in docs for e in d.get("dropped", [])]))
    folder.delete_tree()
    return marker
