"""A training's checkpoints, the same for both trainers and both executors: `<output>/_checkpoints/` (local or
s3://) holds `run.json` (which trainer, and the hash of everything that decides the result) and one
`step-NNNNNNNN.pt` per checkpoint, each written whole (a reader never sees part of one); the latest two are kept.

A rerun into the same output resumes from the latest checkpoint that loads (a damaged one is named and the one
before it used) when its config hash is the same; with another one (other data, steps, lr, seed...) it is
refused before any work, and `--overwrite` starts over. States are loaded with `weights_only=True`: tensors,
numbers, strings, lists and dicts only."""
from __future__ import annotations

import hashlib
import io
import json
import tempfile
from dataclasses import asdict
from typing import Any

import torch

from mining.logs import logger
from mining.storage import Location

CHECKPOINTS = "_checkpoints"
RUN_FILE = "run.json"
KEEP = 2
# settings that change how a run is watched, not what it computes
NOT_HASHED = ("log_every", "checkpoint_every", "max_failures", "storage_path", "storage", "wise_ft")


class TrainingConflict(ValueError):
    """The output holds a training with another config."""


def plan_hash(kind: str, plan: Any) -> str:
    """What decides a training's result: the trainer, its config, the data (shards), the vocabulary, the
    models it starts from and its length."""
    doc = {k: v for k, v in asdict(plan).items() if k not in ("scan", "s3")}
    doc["cfg"] = {k: v for k, v in doc["cfg"].items() if k not in NOT_HASHED}
    if doc["cfg"].get("precision") in ("auto", "fp32"):
        # hashed as the `bf16` switch these two replaced (true: auto, false: fp32), so a run begun before the
        # rename resumes after it
        doc["cfg"]["bf16"] = doc["cfg"].pop("precision") == "auto"
    return hashlib.sha256(json.dumps([kind, doc], sort_keys=True, default=str).encode()).hexdigest()[:16]


class CheckpointStore:
    def __init__(self, folder: Location) -> None:
        self.folder = folder

    @classmethod
    def of_output(cls, out: Location) -> "CheckpointStore":
        return cls(out.absolute().join(CHECKPOINTS))

    def begin(self, kind: str, config_hash: str, overwrite: bool = False) -> None:
        """Claim the folder for this run: the same config resumes, another is refused (or, with `overwrite`,
        the old checkpoints are removed and the run starts over)."""
        run = self._run()
        if run is not None and (run.get("kind"), run.get("config_hash")) != (kind, config_hash):
            if not overwrite:
                raise TrainingConflict(
                    f"{self.folder.parent} holds a {run.get('kind')} training with another config "
                    f"({run.get('config_hash')}, this run: {config_hash}: other data, length or settings); use "
                    f"another --output, or --overwrite to start over there")
            logger.warning("--overwrite: removing the checkpoints of the earlier training in %s", self.folder)
            self.folder.delete_tree()
        (self.folder / RUN_FILE).write_atomic(json.dumps({"kind": kind, "config_hash": config_hash}).encode())

    def _run(self) -> dict[str, Any] | None:
        try:
            run = json.loads((self.folder / RUN_FILE).read())
        except (OSError, ValueError):
            return None
        return run if isinstance(run, dict) else None

    def _checkpoints(self) -> list[Location]:
        return [f for f in self.folder.list(".pt") if f.name.startswith("step-")]

    def save(self, state: dict[str, Any]) -> Location:
        """Write one checkpoint whole, then drop all but the latest KEEP."""
        target = self.folder / f"step-{int(state['step']):08d}.pt"
        with tempfile.NamedTemporaryFile(suffix=".pt") as tmp:
            torch.save(state, tmp.name)
            target.publish(tmp.name)
        for old in self._checkpoints()[:-KEEP]:
            old.delete()
        return target

    def latest(self) -> dict[str, Any] | None:
        """The newest checkpoint that loads, or None; a damaged one is named and skipped."""
        for checkpoint in reversed(self._checkpoints()):
            try:
                return torch.load(io.BytesIO(checkpoint.read()), map_location="cpu", weights_only=True)
            except Exception as err:   # torch raises many kinds for a torn or foreign file
                logger.warning("checkpoint %s is damaged (%s): resuming from the one before it", checkpoint,
                               str(err).splitlines()[0] if str(err) else type(err).__name__)
        return None


def rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def restore_rng(saved: dict[str, Any]) -> None:
    torch.set_rng_state(saved["torch"])
    if saved.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(saved["cuda"])


def worker_resume(resume: dict[str, Any] | None, rank: int) -> dict[str, Any] | None:
    """This worker's part of a checkpoint (its streams' positions and its random state), or None."""
    workers = (resume or {}).get("workers") or []
    return workers[rank] if rank < len(workers) else None


def checkpointing(store: CheckpointStore | None) -> dict[str, Any]:
    """`train_loop`'s `report` and `resume` for an in-process run: checkpoints into `store`, from its latest."""
    if store is None:
        return {}
    return {"report": lambda metrics, state: store.save(state), "resume": store.latest()}
