"""One guard for every command that writes (mine, curate, export coco, stats --html, segment, train, toyworld
make): before any work, a command names what it reads and where it writes, and is refused, in one line naming
the path and the fix, when it would write

- into or over one of its inputs, or a folder that holds one (paths compared resolved: symlinks, '..'; S3 keys
  as they are);
- inside another ovmine output's own files (its manifest, shards, markers, lease; anything in a model folder);
- into or over another kind of ovmine output, even with --overwrite: the user deletes it, ovmine never does;
- into a non-empty folder, or over a file, that is not its own kind of output, unless --overwrite.

An output of the command's own kind is the command's business: mine resumes it, curate and segment redo it,
train resumes from its checkpoints. Outputs are recognised by the files their writers leave (a manifest, a
model's config, a completion file), so the guard needs no registry.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterable

import pyarrow.fs as pafs

from mining.sinks.commits import read_marker
from mining.sinks.layout import OUTPUT_FOLDERS, manifest_file
from mining.sinks.lease import OutputNotWritable
from mining.storage import TMP_MARK, Location, Where

# the kinds of output, as messages name them
MINED = "mining output"
CURATED = "curated output"
CLIP_MODEL = "CLIP model folder"
SEGMENTER = "segmenter folder"
MODEL = "model folder"                  # one ovmine did not train: a teacher, a downloaded CLIP
SEGMENTATION = "segmentation output"
WORLD = "toy world"
UNCOMMITTED = "unfinished output"         # mining or curation files, none committed: mine and curate take it
COCO = "COCO export"
REPORT = "HTML report"

LEASE_FILES = ("_lease.json", "_lease.lock")   # a run's bookkeeping: a folder holding only these is empty
MINING_FILES = ("manifest.json", "_parts", *LEASE_FILES, *OUTPUT_FOLDERS)   # a mining or curated output's own
SEGMENTATION_DONE = "segmentation.json"  # written last by `segment`


class WriteRefused(ValueError):
    """A command would write into or over its inputs, or over what is not its own kind of output."""


class OutputHoldsInputs(WriteRefused):
    """The output folder is, or contains, one of the command's inputs."""


def _manifest_kind(folder: Location) -> str | None:
    try:
        manifest = json.loads(manifest_file(folder).read())
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or "config_hash" not in manifest:
        return None
    return CURATED if "lineage" in manifest else MINED


def _unfinished_kind(folder: Location) -> str:
    """A mining or curated output without a readable manifest: its committed markers say which (curation
    marks its own); with none committed, what is there is debris that either command may write over."""
    for marker in folder.join("_done").list(".json"):
        doc = read_marker(folder, marker.name.removesuffix(".json"))
        if doc is not None:
            return CURATED if doc.get("written_by") == "curate" else MINED
    return UNCOMMITTED


def folder_kind(folder: Location, names: Iterable[str] | None = None) -> str | None:
    """Which kind of ovmine output `folder` is (one listing, at most one small read), or None."""
    names = set(folder.entry_names() if names is None else names)
    if "manifest.json" in names and (kind := _manifest_kind(folder)):
        return kind
    if "_done" in names or {"shards", "pairs"} <= names or "_parts" in names:
        return _unfinished_kind(folder)
    if "open_clip_config.json" in names:   # trained by `ovmine train clip` (its record beside it), or any other
        return CLIP_MODEL if "training.json" in names else MODEL
    if "segmenter.json" in names:
        return SEGMENTER
    if "_checkpoints" in names or "_ray" in names:   # a training stopped before its folder was written
        try:
            run = json.loads(folder.join("_checkpoints", "run.json").read())
        except (OSError, ValueError):
            run = {}
        runs = set(folder.join("_ray").entry_names()) if "_ray" in names else set()
        segmenter = (run.get("kind") if isinstance(run, dict) else None) == "segmenter" or "train_segmenter" in runs
        return SEGMENTER if segmenter else CLIP_MODEL
    if "config.json" in names and any(n.endswith(".safetensors") for n in names):
        return MODEL
    if SEGMENTATION_DONE in names:
        return SEGMENTATION
    if "ground_truth.json" in names and "shards" in names:
        return WORLD
    return None


def file_kind(file: Location) -> str | None:
    """Which kind of ovmine single-file output `file` is, from its first bytes, or None."""
    try:
        with file.open_stream() as f:
            head = f.read(4096)
    except OSError:
        return None
    if head.startswith(b'{"info": {"description": "ovmine export of '):
        return COCO
    if head.startswith(b"<!doctype html>") and b"<title>ovmine report: " in head:
        return REPORT
    return None


def a(kind: str) -> str:
    """'a mining output', 'an unfinished output', 'an HTML report'."""
    return ("an " if kind[0] in "aeiouAEIOU" or kind.startswith("HTML") else "a ") + kind


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _ancestors(where: Location) -> list[Location]:
    """The folders above `where`, nearest first, that exist (local: up to /; S3: up to the bucket)."""
    found = []
    place = Location(where.comparable(), where.s3)
    while True:
        parent = place.parent
        if parent.uri == place.uri or (where.is_s3 and "/" not in parent.uri[len("s3://"):]) or not parent.uri:
            break
        place = parent
        if place.kind() == pafs.FileType.Directory:
            found.append(place)
    return found


def _refuse_inputs(target: Location, inputs: list[Location], flag: str, noun: str = "input") -> None:
    root = target.comparable()
    for item in inputs:
        if _within(item.comparable(), root):
            what = "is" if item.comparable() == root else "holds"
            raise OutputHoldsInputs(
                f"{flag} {target} {what} the {noun} {item}: writing there would destroy it; choose a path "
                f"outside the inputs")


# what of each kind of output is its own, when other things may live beside it (None: all of it)
OWN_FILES: dict[str, tuple[str, ...] | None] = {MINED: MINING_FILES, CURATED: MINING_FILES,
                                                UNCOMMITTED: MINING_FILES, WORLD: ("shards", "ground_truth.json")}


def _refuse_inside_outputs(target: Location, flag: str) -> None:
    """Never inside another output's own files: a mining output's layout, a world's shards, anything in a
    model folder or a segmentation output. The nearest output above `target` decides."""
    root = target.comparable()
    for ancestor in _ancestors(target):
        kind = folder_kind(ancestor)
        if kind is None:
            continue
        first = root[len(ancestor.uri.rstrip("/")) + 1:].split("/", 1)[0]
        own = OWN_FILES.get(kind)
        if own is not None and first not in own and TMP_MARK not in first:
            return   # a new file or folder beside the output's own (a report, a curated copy) is fine
        raise WriteRefused(f"{flag} {target} is inside the {kind} {ancestor} ({first}): ovmine never writes "
                           f"over another output's files; choose a path outside it")


def check_folder_output(output: Where, kind: str, inputs: Iterable[Where], overwrite: bool = False,
                        flag: str = "--output", noun: str = "input") -> str | None:
    """Refuse, before any work, to write a `kind` output into `output` (see the module's rules). Returns the
    kind `output` already is (None: new, empty, or a foreign folder that --overwrite allows)."""
    output = Location.of(output)
    _refuse_inputs(output, [Location.of(i, output.s3) for i in inputs], flag, noun)
    _refuse_inside_outputs(output, flag)
    found = output.kind()
    if found == pafs.FileType.NotFound:
        return None
    if found == pafs.FileType.File:
        raise OutputNotWritable(f"cannot write the output {output}: it is a file, not a folder")
    names = [n for n in output.entry_names() if n not in LEASE_FILES and TMP_MARK not in n]
    existing = folder_kind(output, names) if names else None
    if existing == kind or not names or (existing == UNCOMMITTED and kind in (MINED, CURATED)):
        return existing
    if existing is not None:
        raise WriteRefused(f"{flag} {output} is {a(existing)}, not {a(kind)}: ovmine never writes over another "
                           f"kind of output (not even with --overwrite); delete it yourself or choose another "
                           f"{flag}")
    if not overwrite:
        raise WriteRefused(f"{flag} {output} is not empty ({len(names)} entr{'ies' if len(names) > 1 else 'y'}, "
                           f"e.g. {sorted(names)[0]}) and not {a(kind)}: choose a new folder, or pass --overwrite "
                           f"to write into it anyway")
    return None


def check_file_output(dest: Where, kind: str, inputs: Iterable[Where], overwrite: bool = False,
                      flag: str = "file") -> None:
    """Refuse, before any work, to write a single-file `kind` output at `dest` (see the module's rules); the
    writer then writes it atomically."""
    dest = Location.of(dest)
    _refuse_inputs(dest, [Location.of(i, dest.s3) for i in inputs], flag)
    _refuse_inside_outputs(dest, flag)
    found = dest.kind()
    if found == pafs.FileType.Directory:
        raise WriteRefused(f"{flag} {dest} is an existing folder: give a file path, e.g. {dest / 'NAME'}")
    if found == pafs.FileType.File and not overwrite and file_kind(dest) != kind:
        raise WriteRefused(f"{flag} {dest} exists and is not an earlier {kind}: choose another path, or pass "
                           f"--overwrite to replace it")


def run_inputs(run: Where) -> list[Location]:
    """What a command over a finished output reads: the output itself and the input shards its images come
    from, the mining run behind a curated output included (its manifest's lineage). A run whose manifest
    cannot be read yields itself only: the command's own read then says what is wrong with it."""
    run = Location.of(run)
    found, seen = [run], set()
    queue = [run]
    while queue:
        current = queue.pop()
        if current.comparable() in seen:
            continue
        seen.add(current.comparable())
        try:
            manifest = json.loads(manifest_file(current).read())
            shards = [run.at(s["input"]) for s in manifest.get("shards", []) if isinstance(s, dict) and "input" in s]
        except (OSError, ValueError, AttributeError):
            continue
        found += shards
        lineage = manifest.get("lineage") or {}
        for key in ("mining_output", "input"):
            if isinstance(lineage.get(key), str):
                origin = run.at(lineage[key])
                found.append(origin)
                queue.append(origin)
    return found


def local_model_folder(spec: str | None) -> list[Location]:
    """The folder of a `local-dir:PATH` model spec (an input of a training that starts from it)."""
    if spec and spec.startswith("local-dir:"):
        return [Location(os.path.abspath(spec[len("local-dir:"):]))]
    return []
