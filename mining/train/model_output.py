"""The folder a training writes (local or s3://), through the write guard every writing command shares
(`mining.sinks.guard`): never a folder that holds the training's data, the data's input shards or the model it
starts from, never another kind of output; a folder of the same kind is where a rerun resumes. The folder is
leased while the training runs, and published whole: the files are written in a local staging folder, then
copied out with the descriptor that loaders look for first written last (and removed first), so a reader
never takes half a folder, or new weights with an old descriptor, for a model."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from mining.sinks.guard import check_folder_output, local_model_folder, run_inputs
from mining.sinks.lease import OutputLease
from mining.sinks.reader import read_manifest
from mining.storage import Location, S3Options


def _models_of_runs(data: list[str], s3: S3Options | None) -> list[str]:
    """The CLIP and teacher each mining run of `data` used: what a training starts from unless told otherwise."""
    models = []
    for output in data:
        try:
            config = read_manifest(Location.of(output, s3))["config"]
            models += [config["regions"]["model"], config["teacher"]["mask2former"]["model"]]
        except (OSError, ValueError, KeyError, TypeError):
            continue   # the trainer's own reading says what is wrong with it
    return models


def claim_model_folder(out: Location, kind: str, data: list[str], starts_from: list[str | None],
                       overwrite: bool = False, s3: S3Options | None = None) -> OutputLease:
    """Check `out` for a `kind` model trained on `data` from the models `starts_from` (specs or paths; the
    models the mining runs used are added), before any work; returns the (not yet taken) lease that the
    training holds."""
    inputs = [i for d in data for i in run_inputs(Location.of(d, s3))]
    for spec in [*starts_from, *_models_of_runs(data, s3)]:
        inputs += local_model_folder(spec)
        if spec and os.path.isdir(spec):   # a transformers model given as a path
            inputs.append(Location(os.path.abspath(spec)))
    check_folder_output(out, kind, inputs, overwrite)
    return OutputLease(out, f"train {kind}")


@contextlib.contextmanager
def staging(out: Location):
    """A local folder to write the model into (beside `out` when local, so that publishing renames)."""
    parent = None if out.is_s3 else os.path.dirname(os.path.abspath(out.uri))
    if parent:
        os.makedirs(parent, exist_ok=True)
    folder = tempfile.mkdtemp(prefix=".ovmine-staging-", dir=parent)
    try:
        yield Path(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def publish_folder(local: Path, out: Location, descriptor: str) -> None:
    """Every file of `local` (subfolders too) into `out`: the `descriptor` removed first and written last."""
    (out / descriptor).delete()
    files = sorted(p for p in local.rglob("*") if p.is_file())
    for path in [p for p in files if p.name != descriptor or p.parent != local] + [local / descriptor]:
        target = out.join(*path.relative_to(local).parts)
        if out.is_s3:
            target.publish(str(path))
        else:
            os.makedirs(os.path.dirname(os.path.abspath(target.uri)), exist_ok=True)
            os.replace(path, os.path.abspath(target.uri))
