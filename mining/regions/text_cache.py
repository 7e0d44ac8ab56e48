"""Text embeddings kept on disk per (text tower, templates), so that a second training or mining run over the
same vocabulary does not encode it again (OVSeg's ~12K nouns x 14 templates is 168K sequences).

The key names the weights, not the process: a local folder or file by its path, size and modification time; a
pretrained tag, hub id or s3:// URI by name; a random-initialised model (seeded, so always the same) by its
architecture's config. Each batch of newly encoded nouns is one safetensors file written atomically, so workers
that add nouns at once never clobber each other, and a damaged file is ignored (its nouns are encoded again)."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save

from mining.logs import logger
from mining.storage import Location, is_s3


def _file_identity(path: str) -> str:
    stat = os.stat(path)
    return f"{os.path.realpath(path)}:{stat.st_size}:{stat.st_mtime_ns}"


def text_tower_identity(model: str, pretrained: str | None, model_config: dict | None) -> str | None:
    """What determines the text tower's weights, or None when it cannot be told (no caching then)."""
    if model.startswith("local-dir:"):
        folder = model[len("local-dir:"):]
        files = sorted(f for f in os.listdir(folder) if f.endswith((".safetensors", ".bin", ".pt", ".json"))) \
            if os.path.isdir(folder) else []
        return "local-dir:" + ";".join(_file_identity(os.path.join(folder, f)) for f in files) if files else None
    if model.startswith("hf-hub:"):
        return model
    arch = json.dumps(model_config, sort_keys=True) if model_config is not None else model
    if pretrained is None:
        return f"{arch}@random-seed-0"
    if is_s3(pretrained) or not os.path.exists(pretrained):
        return f"{arch}@{pretrained}"   # a tag or a bucket object: its name is its identity
    return f"{arch}@{_file_identity(pretrained)}"


class TextCache:
    """noun -> float32[D] embedding, for one text tower and template set."""

    def __init__(self, root: Path, identity: str, templates: tuple[str, ...]) -> None:
        key = hashlib.sha256(json.dumps([identity, list(templates)]).encode()).hexdigest()[:24]
        self.folder = Path(root) / "text" / key

    def load(self) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        for part in sorted(self.folder.glob("*.safetensors")) if self.folder.is_dir() else []:
            try:
                emb = load_file(str(part))["emb"]
                nouns = json.loads(part.with_suffix(".json").read_text())
            except (OSError, ValueError, KeyError, SafetensorError) as err:
                logger.warning("text cache file %s is unreadable (%s): its nouns are encoded again", part, err)
                continue
            if len(nouns) == len(emb):
                found.update(zip(nouns, emb))
        return found

    def add(self, nouns: list[str], emb: np.ndarray) -> None:
        """One more part (its nouns beside it, written first: a part without them is never read)."""
        digest = hashlib.sha256("\0".join(nouns).encode()).hexdigest()[:16]
        base = self.folder / f"{len(nouns)}-{digest}"
        try:
            Location(str(base.with_suffix(".json"))).write_atomic(json.dumps(nouns).encode())
            Location(str(base.with_suffix(".safetensors"))).write_atomic(
                save({"emb": np.ascontiguousarray(emb, np.float32)}))
        except OSError as err:   # a read-only home: work without the cache
            logger.warning("could not write the text cache %s (%s)", base, err)
