"""Examples of dropped images for the report, by reason: the output's status tables name every sample's fate;
the pictures come back from where they live.

A mined output holds no record of a dropped sample, so its image and captions are read again from the input
shard (the marker names it) and decoded as the run decoded them. A curated output's `curated_out` images were
records of the output it was curated from, so they come back through that output's records.
"""
from __future__ import annotations

import html
import json
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow.parquet as pq
from PIL import Image

from mining.postrun.explore import layered_thumb
from mining.postrun.report_gallery import SMALL_THUMB, captions_html, fetch_pictures, source_settings, thumb_html
from mining.sinks.layout import dropped_file, status_file
from mining.sinks.reader import read_manifest
from mining.sources.decode import decode_image, extract_captions
from mining.sources.shards import IMAGE_EXTS, read_shard
from mining.storage import Location, Where


@dataclass
class DroppedSample:
    stem: str
    key: str
    index: int
    reason: str
    detail: str | None
    input: str           # the shard the output's marker names


def select_drops(output: Where, manifest: dict[str, Any],
                 per_reason: int = 4) -> dict[str, list[DroppedSample]]:
    """The first `per_reason` dropped samples of each reason, in shard order; reads status tables only until
    every reason the totals count has its examples."""
    wanted = {reason for reason, n in manifest["totals"]["drops"].items() if n}
    found: dict[str, list[DroppedSample]] = defaultdict(list)
    for shard in sorted(manifest["shards"], key=lambda s: s["name"]):
        if all(len(found[r]) >= per_reason for r in wanted):
            break
        if not any(shard["drops"].get(r) and len(found[r]) < per_reason for r in wanted):
            continue
        status = status_file(output, shard["name"])
        if not status.exists():
            continue
        with status.open_random() as f:
            rows = pq.read_table(f, columns=["key", "index", "status", "detail"]).to_pylist()
        for row in rows:
            if row["status"] != "kept" and len(found[row["status"]]) < per_reason:
                found[row["status"]].append(DroppedSample(shard["name"], row["key"], row["index"], row["status"],
                                                          row["detail"], shard["input"]))
    return {reason: found[reason] for reason in sorted(found, key=lambda r: -manifest["totals"]["drops"].get(r, 0))}


@dataclass
class DroppedPicture:
    image: np.ndarray | None
    captions: list[str]
    why_no_image: str = "image unavailable"
    # what the pipeline knew of it: entities and masks (dropped/<stem>.json of a mined output, or for curate's
    # drops the record it read, whose pairs are those curate removed); None: nothing kept
    evidence: dict[str, Any] | None = None


def _attach_evidence(output: Location, samples: list[DroppedSample],
                     pictures: dict[tuple[str, int], DroppedPicture]) -> None:
    """The dropped examples the writer kept (dropped/<stem>.json, absent in outputs of earlier versions)."""
    for stem in sorted({s.stem for s in samples}):
        file = dropped_file(output, stem)
        if not file.exists():
            continue
        for example in json.loads(file.read())["samples"]:
            picture = pictures.get((stem, example["index"]))
            if picture is not None:
                picture.evidence = example


def _from_input_shards(manifest: dict[str, Any], samples: list[DroppedSample],
                       output: Location) -> dict[tuple[str, int], DroppedPicture]:
    source = source_settings(manifest)["config"]["source"]
    by_input: dict[str, set[int]] = defaultdict(set)
    for sample in samples:
        by_input[sample.input].add(sample.index)
    pictures = {}
    for uri, indices in by_input.items():
        shard = output.at(uri)
        if not shard.exists():
            continue
        for sample in read_shard(shard, max_samples=max(indices) + 1, attempts=1):
            if sample.sentinel or sample.index not in indices:
                continue
            captions, _ = extract_captions(sample.members, source["caption_json_fields"],
                                           source["captions_per_image"])
            ext = next((e for e in IMAGE_EXTS if e in sample.members), None)
            picture = DroppedPicture(None, captions, "no image member" if ext is None else "image unavailable")
            if ext is not None:
                try:
                    picture.image, _ = decode_image(sample.members[ext], source["max_image_pixels"],
                                                    source["working_size"])
                except (OSError, ValueError, OverflowError, Image.DecompressionBombError) as err:
                    picture.why_no_image = f"image not decodable ({type(err).__name__})"
            pictures[(sample.shard_stem, sample.index)] = picture
    return pictures


def _from_curation_input(manifest: dict[str, Any], samples: list[DroppedSample],
                         output: Location) -> dict[tuple[str, int], DroppedPicture]:
    parent = output.at(manifest["lineage"]["input"])
    try:
        parent_manifest = read_manifest(parent)
    except (OSError, ValueError):   # the output it was curated from is gone: the cards say so
        return {}
    keys = {(s.stem, s.key): s for s in samples}
    got = fetch_pictures(parent, parent_manifest, set(keys))
    return {(stem, keys[(stem, key)].index): DroppedPicture(got.images.get((stem, key)), record["captions"],
                                                            evidence=record)
            for (stem, key), record in got.records.items()}


def fetch_dropped(output: Where, manifest: dict[str, Any],
                  drops: dict[str, list[DroppedSample]]) -> dict[tuple[str, int], DroppedPicture]:
    samples = [s for examples in drops.values() for s in examples]
    if not samples:
        return {}
    if manifest.get("lineage"):
        return _from_curation_input(manifest, samples, Location.of(output))
    pictures = _from_input_shards(manifest, samples, Location.of(output))
    _attach_evidence(Location.of(output), samples, pictures)
    return pictures


def _evidence_html(evidence: dict[str, Any]) -> str:
    """Its entities and masks, and for a curated-out record the pairs curate removed."""
    entities = ", ".join(html.escape(e["phrase"]) for e in evidence["entities"]) or "none"
    parts = [f"<br><span class=evidence>entities: {entities}<br>{len(evidence['masks'])} masks"]
    if evidence.get("pairs"):
        removed = ", ".join(f"{html.escape(p['noun'])} ({p['similarity']:.2f})" for p in evidence["pairs"])
        parts.append(f"<br>pairs removed: {removed}")
    return "".join(parts) + "</span>"


def dropped_card(sample: DroppedSample, pictures: dict[tuple[str, int], DroppedPicture]) -> str:
    picture = pictures.get((sample.stem, sample.index))
    image = picture.image if picture else None
    evidence = picture.evidence if picture else None
    if image is not None and evidence is not None:
        thumb = layered_thumb(image, [m["segmentation"] for m in evidence["masks"]], sample.key, SMALL_THUMB)
    else:
        thumb = thumb_html(image, None, sample.key, SMALL_THUMB,
                           picture.why_no_image if picture else "image unavailable")
    detail = f"<br><span class=detail>{html.escape(sample.detail)}</span>" if sample.detail else ""
    captions = captions_html(picture.captions) if picture else ""
    known = _evidence_html(evidence) if evidence is not None else ""
    return (f'<figure class="card dropped">{thumb}<figcaption><b>{html.escape(sample.reason)}</b>{detail}<br>'
            f'<small>{html.escape(sample.stem)}/{html.escape(sample.key)} #{sample.index}</small>{known}{captions}'
            f'</figcaption></figure>')
