"""Ray Train execution of a trainer (`mining.train.run.Trainer`): `TorchTrainer` runs the trainer's
`train_loop` on each worker (gloo on CPU, NCCL on GPUs), the trained module wrapped for data parallelism by
`prepare_model`. Rank 0 writes the checkpoints (`mining.train.checkpoints`, every worker's stream position and
random state gathered into it) to the output's own storage; a restarted worker group, or the same command run
again, resumes from the latest one, and `FailureConfig(max_failures)` restarts lost workers."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import ray
import torch

from mining.executors.ray_start import init_ray
from mining.train.checkpoints import CheckpointStore
from mining.storage import Location, is_s3

STATE_FILE = "state.pt"


def init_local_ray(address: str | None = None) -> bool:
    """Start (or join) Ray as mining's Ray executor does: a Ray of our own stays on loopback. True when started."""
    return init_ray(address)


def refuse_local_storage_on_a_cluster(storage: str, workers: int) -> None:
    """Workers on other nodes would checkpoint into their own disks, and a restarted worker would find nothing:
    a run over several nodes needs storage every node reaches."""
    nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
    if not is_s3(storage) and nodes > 1 and workers > 1:
        raise ValueError(f"storage_path {storage} is on this machine's disk, but the cluster has {nodes} nodes: set "
                         f"storage_path to s3://... (or train into an --output on s3://) so that every worker "
                         f"reaches the checkpoints")


def load_state(directory: str | Path) -> dict[str, Any]:
    return torch.load(Path(directory) / STATE_FILE, map_location="cpu", weights_only=True)


def _worker(config: dict[str, Any]) -> None:
    import ray.train
    import ray.train.torch

    trainer, plan = config["trainer"], config["plan"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    # ovmine's own checkpoints (a restarted worker group reads them as a rerun does): the latest that loads
    store = CheckpointStore(Location.of(config["checkpoints"], plan.s3_options()))
    resume = store.latest()

    def report(metrics: dict[str, Any], state: dict[str, Any] | None) -> None:
        if state is not None and world > 1:   # every worker's stream positions and random state, in rank order
            workers: list[Any] = [None] * world
            torch.distributed.all_gather_object(workers, state["workers"][0])
            state = state | {"workers": workers}
        if rank == 0 and state is not None:
            store.save(state)
        ray.train.report(metrics)

    trainer.train_loop(plan, rank, world, ray.train.torch.get_device(),
                      wrap=lambda m: ray.train.torch.prepare_model(
                          m, parallel_strategy_kwargs={"find_unused_parameters": False}),
                      report=report, resume=resume)


def run_ray(trainer: Any, plan: Any, out: Location | Path | str, store: CheckpointStore,
            address: str | None = None) -> dict[str, Any]:
    """Train `plan` with Ray Train and `trainer`'s loop (both travel to the workers pickled); returns the state of
    the latest checkpoint (the last step's). Checkpoints go to `store` (`mining.train.checkpoints`); Ray
    Train's own run folder to `storage_path`, by default `<out>/_ray` on the output's own storage."""
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    cfg = plan.train
    out = Location.of(str(out), plan.s3_options()) if not isinstance(out, Location) else out
    storage = cfg.storage_path or out.absolute().join("_ray").uri
    storage_kwargs: dict[str, Any] = {"storage_path": storage}
    if is_s3(storage):
        fs, path = Location.of(storage, plan.s3_options()).filesystem()
        storage_kwargs = {"storage_path": path, "storage_filesystem": fs}
    init_local_ray(address)
    refuse_local_storage_on_a_cluster(store.folder.uri, cfg.workers)
    torch_trainer = TorchTrainer(
        _worker,
        train_loop_config={"trainer": trainer, "plan": plan, "checkpoints": store.folder.uri},
        torch_config=TorchConfig(backend="nccl" if cfg.use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=cfg.workers, use_gpu=cfg.use_gpu),
        run_config=RunConfig(name=f"train_{trainer.kind}",
                             failure_config=FailureConfig(max_failures=cfg.max_failures), **storage_kwargs),
    )
    result = torch_trainer.fit()
    if result.error is not None:
        raise result.error
    state = store.latest()
    if state is None:
        raise RuntimeError(f"Ray Train finished without a checkpoint in {store.folder}")
    return state
