"""Device choice happens on the worker, in a stage's setup(), never by probing CUDA on the driver."""
from __future__ import annotations

import torch

from mining.logs import logger


def resolve_device(setting: str) -> torch.device:
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if setting == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for but this worker has no CUDA device")
    return torch.device(setting)


def stage_device(num_gpus: float | str) -> torch.device:
    """A stage's device follows its one GPU setting, `execution.<stage>.num_gpus`: 0 is the CPU; otherwise the
    worker's GPU. A worker granted a GPU that shows no CUDA device (a cluster declaring GPUs it lacks, as the
    test clusters do) runs on the CPU and says so."""
    if num_gpus != "auto" and float(num_gpus) == 0:
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    if num_gpus != "auto":
        logger.warning("num_gpus=%s was asked for, but this worker sees no CUDA device: running on the CPU", num_gpus)
    return torch.device("cpu")
