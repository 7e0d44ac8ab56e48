"""Device choice happens on the worker, in a stage's setup(), never by probing CUDA on the driver."""
from __future__ import annotations

import contextlib

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


# ---- numeric precision of a model stage's forward passes ----------------------------------------------------
PRECISIONS = ("auto", "fp32", "tf32", "bf16", "fp16")
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_precision(setting: str, device: torch.device) -> str:
    """'auto' is bf16 on CUDA (its pairs agree with fp32's: bench/precision.py) and fp32 on the CPU, where
    reduced precision only pays on CPUs with bf16 matrix units; any other setting is taken as asked."""
    if setting not in PRECISIONS:
        raise ValueError(f"precision {setting!r} is not one of {', '.join(PRECISIONS)}")
    if setting != "auto":
        return setting
    return "bf16" if device.type == "cuda" else "fp32"


@contextlib.contextmanager
def forward_precision(device: torch.device, precision: str):
    """Run the enclosed forward passes at `precision` (already resolved): bf16/fp16 under autocast (weights stay
    fp32; outputs may be reduced, so callers cast what they keep to float), tf32 as fp32 with TF32 matmuls and
    convolutions on CUDA (fp32 on the CPU), fp32 with TF32 off, whatever the process-wide default."""
    if precision in AUTOCAST_DTYPES:
        with torch.autocast(device.type, dtype=AUTOCAST_DTYPES[precision]):
            yield
        return
    if device.type != "cuda":
        yield
        return
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = precision == "tf32"
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def keep_fp32(module: torch.nn.Module) -> None:
    """Run `module` in fp32 inside an autocast region: its floating inputs are cast up and autocast is off
    within it (for the heads whose outputs are thresholded, where a reduced-precision rounding flips a pair)."""
    forward = module.forward

    def cast(value):   # through the lists and tuples of features a decoder takes
        if isinstance(value, (list, tuple)):
            return type(value)(cast(v) for v in value)
        return value.float() if torch.is_tensor(value) and value.is_floating_point() else value

    def forward_fp32(*args, **kwargs):
        device = next(module.parameters()).device.type
        with torch.autocast(device, enabled=False):
            return forward(*map(cast, args), **{k: cast(v) for k, v in kwargs.items()})

    module.forward = forward_fp32


def to_device(array, device: torch.device) -> torch.Tensor:
    """A numpy array as a tensor on `device`, in its own dtype (uint8 pixels cross the bus, not floats): through
    pinned memory and a non-blocking copy on CUDA, so the copy overlaps the host's next work."""
    tensor = torch.from_numpy(array)
    if device.type != "cuda":
        return tensor
    return tensor.pin_memory().to(device, non_blocking=True)


COMPILE_BACKEND = "inductor"


def compiled(module: torch.nn.Module, enabled: bool) -> torch.nn.Module:
    """`module` through torch.compile when `execution.<stage>.compile` asks for it (shapes vary with the
    number of masks, so dynamic shapes are allowed from the start)."""
    if not enabled:
        return module
    return torch.compile(module, backend=COMPILE_BACKEND, dynamic=True)
