"""Write one input shard's results: shards/<stem>.tar (a JSON record per kept image, and the image if
configured), pairs/<stem>.parquet, status/<stem>.parquet, stats/<stem>.json (its counts and times, to inspect
a run in progress), and last the _done/<stem>.json marker that commits the shard.

Each file is written atomically; the marker is the commit point, so a shard without a marker is not done,
whatever else exists."""
from __future__ import annotations

import io
import json
import time
from collections import Counter
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from webdataset import TarWriter

from mining import masks as rle
from mining.records import REFINED, Drop, Sample
from mining.schemas import (DROPPED_VERSION, MARKER_VERSION, PAIRS_VERSION, RECORD_VERSION, STATUS_VERSION,
                            arrow_schema, validate, validate_table)
from mining.sinks.layout import dropped_file, marker_file, pairs_file, shard_file, stats_file, status_file
from mining.storage import Where

SHARD_STATS_VERSION = "ovmine.shard_stats/1"


def refined_pairs(caption_sources: list[str], pair_captions: Iterable[int]) -> int:
    """How many pairs came from a refined caption, given each pair's entity's `caption_index`. An entity that an
    image's own caption names too is that caption's (the first mention wins): these are the pairs refining added."""
    if REFINED not in caption_sources:
        return 0
    return sum(1 for index in pair_captions if caption_sources[index] == REFINED)


def _caption_fields(sample: Sample) -> dict[str, Any]:
    """`captions`, and `caption_sources` only when a caption is refined: records of runs that do not refine
    stay byte for byte as they were."""
    if REFINED not in sample.caption_sources:
        return {"captions": sample.captions}
    assert len(sample.caption_sources) == len(sample.captions), "one source per caption"
    return {"captions": sample.captions, "caption_sources": sample.caption_sources}


def build_record(sample: Sample, image_ext: str | None) -> dict[str, Any]:
    width, height = sample.frame_size
    areas, boxes = rle.areas(sample.rles), rle.boxes(sample.rles)
    masks = [{"segmentation": sample.rles[i], "bbox": boxes[i], "area": int(areas[i]),
              "score": float(sample.mask_scores[i])} for i in range(len(sample.rles))]
    pairs = [{"mask_index": p.mask_index, "entity_index": p.entity_index,
              "noun": sample.entities[p.entity_index].noun, "phrase": sample.entities[p.entity_index].phrase,
              "similarity": p.similarity, "margin": p.margin, "probability": p.probability,
              "scale_similarities": p.scale_similarities} for p in sample.pairs]
    return {
        "schema_version": RECORD_VERSION, "key": sample.key, "shard": sample.shard, **_caption_fields(sample),
        "width": width, "height": height, "orig_width": sample.orig_size[0], "orig_height": sample.orig_size[1],
        "image": image_ext, "entities": [e.to_json() for e in sample.entities], "masks": masks, "pairs": pairs,
    }


def pair_rows(stem: str, record: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for pair in record["pairs"]:
        mask = record["masks"][pair["mask_index"]]
        rows.append({
            "schema_version": PAIRS_VERSION, "shard": stem, "key": record["key"],
            "mask_index": pair["mask_index"], "entity_index": pair["entity_index"],
            "noun": pair["noun"], "phrase": pair["phrase"],
            "caption_index": record["entities"][pair["entity_index"]]["caption_index"],
            "similarity": pair["similarity"], "margin": pair["margin"], "probability": pair["probability"],
            "scale_similarities": pair["scale_similarities"], "teacher_score": mask["score"],
            "area": mask["area"], "bbox": mask["bbox"], "height": record["height"], "width": record["width"],
            "rle_counts": mask["segmentation"]["counts"], "image_masks": len(record["masks"]),
            "image_entities": len(record["entities"]),
        })
    return rows


def shard_counts(samples: list[Sample]) -> dict[str, Any]:
    """What a shard contributed; images_in = images_with_pairs + sum(drops), always."""
    real = [s for s in samples if not s.sentinel]
    kept = [s for s in real if s.alive and s.pairs]
    drops = Counter(s.drop.value for s in real if s.drop is not None)
    nouns = Counter(s.entities[p.entity_index].noun for s in kept for p in s.pairs)
    timings: Counter[str] = Counter()
    fallbacks: Counter[str] = Counter()
    for s in real:
        timings.update(s.timings)
        fallbacks.update(s.entity_fallbacks)
    refined = sum(refined_pairs(s.caption_sources, (s.entities[p.entity_index].caption_index for p in s.pairs))
                  for s in kept)
    return _counts(len(real), len(kept), sum(len(s.pairs) for s in kept), drops,
                   [e for s in samples for e in s.shard_errors], timings, nouns, fallbacks, refined)


def _counts(images_in: int, images_with_pairs: int, pairs: int, drops: Counter[str], errors: list[str],
            timings: Counter[str], nouns: Counter[str], fallbacks: Counter[str], refined: int) -> dict[str, Any]:
    """The counts document of a marker, from tallies (one shard's samples, or its chunks' counts merged).
    `entity_fallbacks` (captions whose LLM answer went unused, by reason) and `refined_pairs` (pairs from a
    refined caption) are there only when there are some, so that other runs' markers stay as they were."""
    counts = {"images_in": images_in, "images_with_pairs": images_with_pairs, "pairs": pairs,
              "unique_nouns": len(nouns), "drops": dict(sorted(drops.items())), "errors": errors,
              "timings": {k: round(v, 6) for k, v in sorted(timings.items())}, "nouns": dict(nouns.most_common())}
    if fallbacks:
        counts["entity_fallbacks"] = dict(sorted(fallbacks.items()))
    if refined:
        counts["refined_pairs"] = refined
    return counts


def merge_counts(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """The counts of a shard from those of its chunks (each from `shard_counts`), as if counted at once."""
    drops: Counter[str] = Counter()
    timings: Counter[str] = Counter()
    nouns: Counter[str] = Counter()
    fallbacks: Counter[str] = Counter()
    for part in parts:
        drops.update(part["drops"])
        timings.update(part["timings"])
        nouns.update(part["nouns"])
        fallbacks.update(part.get("entity_fallbacks", {}))
    images_in, with_pairs, pairs = (sum(p[key] for p in parts) for key in ("images_in", "images_with_pairs", "pairs"))
    return _counts(images_in, with_pairs, pairs, drops, [e for p in parts for e in p.get("errors", [])], timings,
                   nouns, fallbacks, sum(p.get("refined_pairs", 0) for p in parts))


def status_rows(samples: list[Sample]) -> list[dict[str, Any]]:
    """Every real sample's fate, in input order: kept, or its drop reason with the detail."""
    return [{"schema_version": STATUS_VERSION, "key": s.key, "index": s.index,
             "status": s.drop.value if s.drop is not None else ("kept" if s.pairs else Drop.NO_CONFIDENT_PAIR.value),
             "detail": s.drop_detail, "pairs": len(s.pairs) if s.drop is None else 0}
            for s in sorted(samples, key=lambda s: s.index) if not s.sentinel]


DROPPED_EXAMPLES = 4   # per drop reason and shard: enough for the report's examples, bounded whatever the shard


def dropped_examples(samples: list[Sample], per_reason: int = DROPPED_EXAMPLES) -> list[dict[str, Any]]:
    """The first `per_reason` dropped samples of each reason, in input order, that got as far as entities or masks:
    what the pipeline knew of them (the output keeps no record of a dropped sample)."""
    chosen: list[dict[str, Any]] = []
    taken: Counter[str] = Counter()
    for s in sorted(samples, key=lambda s: s.index):
        if s.sentinel or s.drop is None or not (s.entities or s.rles) or s.frame_size is None:
            continue
        if taken[s.drop.value] >= per_reason:
            continue
        taken[s.drop.value] += 1
        scores = s.mask_scores if s.mask_scores is not None else [1.0] * len(s.rles)
        areas = rle.areas(s.rles) if s.rles else []
        chosen.append({"key": s.key, "index": s.index, "reason": s.drop.value, "detail": s.drop_detail,
                       "width": s.frame_size[0], "height": s.frame_size[1],
                       "entities": [e.to_json() for e in s.entities],
                       "masks": [{"segmentation": r, "area": int(a), "score": float(c)}
                                 for r, a, c in zip(s.rles, areas, scores)]})
    return chosen


def cap_examples(examples: list[dict[str, Any]], per_reason: int = DROPPED_EXAMPLES) -> list[dict[str, Any]]:
    """A shard's examples from those of its chunks (each capped alone), capped again in input order."""
    taken: Counter[str] = Counter()
    kept = []
    for example in sorted(examples, key=lambda e: e["index"]):
        if taken[example["reason"]] < per_reason:
            taken[example["reason"]] += 1
            kept.append(example)
    return kept


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="milliseconds")


def shard_stats(marker: dict[str, Any], started: float | None, finished: float) -> dict[str, Any]:
    """A committed shard's stats file (img2dataset's `{shard}_stats.json`): its marker's counts and stage
    seconds, and when its reading began (`started`, epoch seconds, None if not known) and its commit."""
    return {
        "schema_version": SHARD_STATS_VERSION, "name": marker["name"], "input": marker["input"],
        "config_hash": marker["config_hash"], "limit": marker["limit"],
        "images_in": marker["images_in"], "images_with_pairs": marker["images_with_pairs"],
        "pairs": marker["pairs"], "drops": marker["drops"], "errors": marker["errors"],
        "stage_seconds": marker["timings"],
        "started": None if started is None else _iso(started), "finished": _iso(finished),
        "wall_seconds": None if started is None else round(max(0.0, finished - started), 3),
    } | {key: marker[key] for key in ("entity_fallbacks", "refined_pairs") if key in marker}


def parquet_bytes(name: str, rows: list[dict[str, Any]]) -> bytes:
    table = pa.Table.from_pylist(rows, schema=arrow_schema(name))
    validate_table(name, table)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def records_tar(records: list[tuple[dict[str, Any], bytes | None]]) -> bytes:
    """A webdataset tar of validated records, each with its image bytes (or None)."""
    tar_buf = io.BytesIO()
    with TarWriter(tar_buf, mtime=0) as tar:   # fixed mtime: reruns write identical bytes
        for record, image in records:
            validate("record", record)
            member = {"__key__": record["key"], "json": json.dumps(record, separators=(",", ":")).encode()}
            if record["image"]:
                member[record["image"]] = image
            tar.write(member)
    return tar_buf.getvalue()


def write_shard_files(output: Where, stem: str, records: list[tuple[dict[str, Any], bytes | None]],
                      marker: dict[str, Any],
                      status: list[dict[str, Any]] | None = None, stats: dict[str, Any] | None = None,
                      dropped: list[dict[str, Any]] | None = None) -> None:
    """Write validated records (each with its image bytes, or None), their pairs table, the status of every
    sample, the shard's stats and its dropped examples (when given: curated outputs have none of them), then the
    marker."""
    rows = [row for record, _ in records for row in pair_rows(stem, record)]
    shard_file(output, stem).write_atomic(records_tar(records))
    pairs_file(output, stem).write_atomic(parquet_bytes("pairs", rows))
    if status is not None:
        status_file(output, stem).write_atomic(parquet_bytes("status", status))
    if stats is not None:
        validate("shard_stats", stats)
        stats_file(output, stem).write_atomic(json.dumps(stats, indent=1).encode())
    if dropped:
        doc = {"schema_version": DROPPED_VERSION, "name": stem, "samples": dropped}
        validate("dropped", doc)
        dropped_file(output, stem).write_atomic(json.dumps(doc, separators=(",", ":")).encode())
    elif dropped is not None:   # a shard mined again (--overwrite) keeps no examples of an earlier run's drops
        dropped_file(output, stem).delete()
    marker_file(output, stem).write_atomic(json.dumps({"schema_version": MARKER_VERSION, **marker}, indent=1).encode())


def shard_records(samples: list[Sample], image_ext: str | None) -> list[tuple[dict[str, Any], bytes | None]]:
    """The records of the kept samples (those with pairs), in input order, with their image bytes."""
    return [(build_record(s, image_ext), s.image_bytes) for s in sorted(samples, key=lambda s: s.index)
            if s.alive and s.pairs]


def write_shard(samples: list[Sample], output: Where, config_hash: str,
                limit: int | None = None, started: float | None = None,
                image_ext: str | None = None) -> dict[str, Any]:
    """Write one mined input shard and commit it; returns the marker (`limit`: the --limit cut, if any;
    `started`: epoch seconds its reading began, for the stats file; `image_ext`: 'jpg' or 'png' when the
    records keep their image)."""
    stem, source = samples[0].shard_stem, samples[0].shard
    marker = {"input": source, "name": stem, "config_hash": config_hash, "limit": limit, **shard_counts(samples)}
    write_shard_files(output, stem, shard_records(samples, image_ext), marker, status=status_rows(samples),
                      stats=shard_stats(marker, started, time.time()), dropped=dropped_examples(samples))
    return marker
