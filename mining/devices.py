"""Device choice happens on the worker, in a stage's setup(), never by probing CUDA on the driver."""
from __future__ import annotations

import torch


def resolve_device(setting: str) -> torch.device:
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if setting == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for but this worker has no CUDA device")
    return torch.device(setting)
