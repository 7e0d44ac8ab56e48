"""Load an open_clip model the ways users name them: a built-in name with a pretrained tag
('ViT-B-16' + 'openai'), 'hf-hub:org/repo', 'local-dir:/path', a local checkpoint file, or an s3:// URI
(fetched once into a local cache). Project model configs in model_configs/ are always registered."""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import open_clip
import torch

from mining.config import RegionsConfig
from mining.regions.text_cache import text_tower_identity
from mining.storage import Location, S3Options, Where, is_s3

MODEL_CONFIG_DIR = Path(__file__).parent / "model_configs"
CACHE_DIR = Path(os.environ.get("OVMINE_CACHE", Path.home() / ".cache" / "ovmine"))


@dataclass
class LoadedClip:
    model: torch.nn.Module
    tokenizer: object
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    input_size: int
    identity: str | None = None   # what fixes the text tower's weights (the text cache's key); None: unknown


def fetch_s3(checkpoint: Where) -> Path:
    """Copy an s3:// object into the cache once; the name keeps its suffix (open_clip reads .safetensors
    by suffix)."""
    checkpoint = Location.of(checkpoint)
    digest = hashlib.sha256(checkpoint.uri.encode()).hexdigest()[:16]
    target = CACHE_DIR / "weights" / f"{digest}-{checkpoint.name}"
    if not target.exists():
        # several region actors on one node may fetch at once: each writes its own temporary, and the
        # atomic rename makes the last complete copy win
        with checkpoint.open_stream() as src:
            Location(str(target)).write_stream(src)
    return target


def fetch_s3_folder(folder: Where, descriptor: str) -> Path:
    """Copy a model folder on S3 (a trained CLIP, a segmenter) into the cache, once per version of it: the key is
    its URI and its `descriptor`'s modification time, which publishing writes last. The descriptor is copied last
    too, so a copy cut short is never taken for a model."""
    folder = Location.of(folder)
    files = folder.files_below()
    if descriptor not in files:
        raise FileNotFoundError(f"{folder}: no {descriptor} there: not a model folder (or not published yet)")
    digest = hashlib.sha256(f"{folder.uri}@{files[descriptor]}".encode()).hexdigest()[:16]
    target = CACHE_DIR / "folders" / f"{digest}-{folder.name}"
    if not (target / descriptor).exists():
        for name in sorted(files, key=lambda n: n == descriptor):
            with folder.join(*name.split("/")).open_stream() as src:
                Location(str(target / name)).write_stream(src)
    return target


def register_model_configs(extra_dir: str | None = None) -> None:
    open_clip.add_model_config(MODEL_CONFIG_DIR)
    if extra_dir:
        open_clip.add_model_config(Path(extra_dir))


@contextlib.contextmanager
def _quiet_random_init(deliberate: bool):
    """open_clip warns on the root logger that a model without weights is random: asked for by the config
    (`pretrained: null`, recorded as "random init" in the manifest), that is a fact, not a warning, and every
    Ray worker would print it."""
    def drop(record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("No pretrained weights loaded")

    root = logging.getLogger()
    if deliberate:
        root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)


def load_clip(cfg: RegionsConfig, device: torch.device, s3: S3Options | None = None) -> LoadedClip:
    register_model_configs(cfg.model_config_dir)
    if cfg.model.startswith("local-dir:s3://"):   # a folder `ovmine train clip --output s3://...` published
        local = fetch_s3_folder(Location.of(cfg.model[len("local-dir:"):], s3), "open_clip_config.json")
        cfg = cfg.model_copy(update={"model": f"local-dir:{local}"})
    pretrained = cfg.pretrained
    if pretrained and is_s3(pretrained):
        pretrained = str(fetch_s3(Location.of(pretrained, s3)))
    if cfg.model.startswith(("hf-hub:", "local-dir:")):
        pretrained = None  # the schema carries its own weights
    deliberate = cfg.pretrained is None and not cfg.model.startswith(("hf-hub:", "local-dir:"))
    with torch.random.fork_rng(devices=[]), _quiet_random_init(deliberate):
        # without weights, a fixed seed makes every worker (and every rerun) build the same random model
        torch.manual_seed(0)
        model, _, _ = open_clip.create_model_and_transforms(cfg.model, pretrained=pretrained, device=device)
    # the tower's own preprocessing, read before mask prompts (if any) wrap it
    visual = model.visual
    size = visual.image_size if hasattr(visual, "image_size") else 224
    size = size[0] if isinstance(size, (tuple, list)) else size
    mean = getattr(visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN
    std = getattr(visual, "image_std", None) or open_clip.OPENAI_DATASET_STD
    if cfg.model.startswith("local-dir:"):   # a folder `ovmine train clip` wrote with mask prompt tuning
        from mining.regions.mask_prompts import apply_mask_prompts

        if apply_mask_prompts(model, cfg.model):
            model.to(device)
    model.eval()
    arch = None if cfg.model.startswith(("hf-hub:", "local-dir:")) else open_clip.get_model_config(cfg.model)
    return LoadedClip(model=model, tokenizer=open_clip.get_tokenizer(cfg.model), mean=tuple(mean),
                      std=tuple(std), input_size=int(size),
                      identity=text_tower_identity(cfg.model, cfg.pretrained, arch))
