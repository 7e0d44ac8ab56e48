"""manifest.json, aggregated from the per-shard markers so it is right whatever order shards finished in."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from importlib import metadata
from typing import Any

from mining.config import RunConfig
from mining.schemas import MANIFEST_VERSION, validate
from mining.sinks.layout import manifest_file, marker_file
from mining.sinks.writer import merge_counts
from mining.storage import Where

_PACKAGES = ("ovmine", "torch", "open-clip-torch", "transformers", "spacy", "ray", "pyarrow", "webdataset",
             "pycocotools", "scipy", "numpy", "scikit-image")


def package_versions() -> dict[str, str]:
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def model_ids(cfg: RunConfig) -> dict[str, str]:
    if cfg.regions.model.startswith(("local-dir:", "hf-hub:")):
        clip = cfg.regions.model     # the folder or hub repo carries its own weights
    elif cfg.regions.pretrained:
        clip = f"{cfg.regions.model} @ {cfg.regions.pretrained}"
    else:
        clip = f"{cfg.regions.model} (random init)"
    entities = f"spacy: {cfg.entities.spacy_model}"
    if cfg.entities.kind == "llm":
        from mining.entities.llm_parser import PROMPT_VERSION

        llm = cfg.entities.llm
        entities = f"llm ({llm.backend}): {llm.model}, prompt {PROMPT_VERSION}; fallback {llm.fallback}"
    models = {"teacher": f"{cfg.teacher.kind}: {cfg.teacher.model_id()}", "clip": clip, "entities": entities}
    refine = cfg.captions.refine
    if refine is not None:   # absent when off: a manifest names only the models that ran
        models["refine"] = f"{refine.model}, prompt {refine.prompt!r}, max {refine.max_new_tokens} new tokens"
    return models


def aggregate(markers: list[dict[str, Any]]) -> dict[str, Any]:
    """The totals and summed stage seconds of committed shards (their markers)."""
    merged = merge_counts(markers)
    totals = {key: merged[key] for key in ("images_in", "images_with_pairs", "pairs", "unique_nouns", "drops",
                                           "entity_fallbacks", "refined_pairs") if key in merged}
    return {"totals": totals, "timings": {k: round(v, 4) for k, v in merged["timings"].items()}}


# manifest `timings` keys that describe one run (its wall-time split, its model loading), not summed shard work
RUN_TIMING_PREFIXES = ("wall_", "setup_")


def measured_throughput(manifest: dict[str, Any] | None) -> dict[str, Any] | None:
    """The throughput figures of the run that measured them (`wall_seconds`, `images_per_second`,
    `mined_images`, `throughput_of`), or None when the manifest's run mined nothing and carried none."""
    if not manifest:
        return None
    images = manifest.get("mined_images")
    if images is None:   # written before manifests said what the figure is over: images/s x wall
        images = round(manifest.get("images_per_second", 0) * manifest.get("wall_seconds", 0))
    if not images:
        return None
    return {"wall_seconds": manifest["wall_seconds"], "images_per_second": manifest["images_per_second"],
            "mined_images": images, "throughput_of": manifest.get("throughput_of", manifest.get("created", ""))}


def _manifest_on_disk(output: Where) -> dict[str, Any] | None:
    try:
        return json.loads(manifest_file(output).read())
    except (OSError, ValueError):   # none, or damaged: nothing to carry over
        return None


def build_manifest(output: Where, stems: list[str], cfg: RunConfig, wall_seconds: float,
                   images_this_run: int | None = None,
                   markers: dict[str, dict[str, Any]] | None = None,
                   failed: list[dict[str, str]] | None = None,
                   previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """The manifest of a mining run (`images_this_run`: what this invocation mined, for images/s after a
    resumed run, whose totals include shards committed earlier; `markers`: already read, by stem; `failed`:
    shards this run could not read, which a rerun retries).

    A rerun that mines nothing measured no throughput: it keeps the figures of the run that did the mining,
    from `previous` (the manifest the output had when this run started) or else the manifest still in the
    output, when that describes the same config."""
    measured, earlier = None, None
    if images_this_run == 0:
        earlier = previous if previous is not None else _manifest_on_disk(output)
        if earlier is not None and earlier.get("config_hash") == cfg.config_hash():
            measured = measured_throughput(earlier)
    manifest = assemble_manifest(output, stems, cfg.resolved(), cfg.config_hash(), model_ids(cfg), wall_seconds,
                                 images_this_run=images_this_run, markers=markers, measured=measured)
    if measured is not None:   # and the wall-time split that explains the carried figures
        manifest["timings"] |= {k: v for k, v in earlier.get("timings", {}).items()
                                if k.startswith(RUN_TIMING_PREFIXES)}
        validate("manifest", manifest)
    if failed:
        manifest["failed_shards"] = failed
        validate("manifest", manifest)
    return manifest


def assemble_manifest(output: Where, stems: list[str], config: dict[str, Any], config_hash: str,
                      models: dict[str, str], wall_seconds: float,
                      lineage: dict[str, Any] | None = None, images_this_run: int | None = None,
                      markers: dict[str, dict[str, Any]] | None = None, measured: dict[str, Any] | None = None,
                      timings: dict[str, float] | None = None) -> dict[str, Any]:
    """Aggregate the markers of `stems` (read unless given) into a validated manifest (mining and curation
    share it). `measured`: throughput figures carried from the run that measured them (see
    `measured_throughput`) instead of this invocation's; `timings`: stage seconds to record instead of the
    markers' sum (a curated output records those of the mining run its pairs came from)."""
    markers = [markers[stem] if markers and stem in markers else json.loads(marker_file(output, stem).read())
               for stem in stems]
    summary = aggregate(markers)
    per_run = ("nouns", "schema_version", "config_hash", "written_by")
    shards = [{k: v for k, v in m.items() if k not in per_run} for m in markers]
    if timings is not None:
        summary["timings"] = timings
    images = summary["totals"]["images_in"] if images_this_run is None else images_this_run
    created = datetime.now(timezone.utc).isoformat(timespec="milliseconds")   # tells a carried throughput_of apart
    throughput = measured or {
        "wall_seconds": round(wall_seconds, 3),
        "images_per_second": round(images / wall_seconds, 3) if wall_seconds > 0 else 0.0,
        "mined_images": images, "throughput_of": created}
    manifest = {
        "schema_version": MANIFEST_VERSION, "created": created,
        "config": config, "config_hash": config_hash, "models": models,
        "versions": package_versions(), "shards": shards, **summary, **throughput,
    }
    if lineage is not None:
        manifest["lineage"] = lineage
    validate("manifest", manifest)
    return manifest


def write_manifest(output: Where, manifest: dict[str, Any]) -> None:
    manifest_file(output).write_atomic(json.dumps(manifest, indent=1).encode())
