"""Write: the last step, run on the workers. A chunk that holds its whole shard is written and committed at
once (shards/, pairs/, status/, stats/, then the _done marker); a shard mined in chunks is written as parts
and committed by the write that completes it (`mining.sinks.parts`). What goes back to the driver is small:
the marker of a committed shard, a note of a written part, or why a shard could not be read."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from mining.config import RunConfig, StageResources
from mining.records import ShardChunk
from mining.sinks.parts import write_part
from mining.sinks.writer import write_shard
from mining.stages.base import Step
from mining.storage import Location, S3Options, Where


@dataclass
class WriteResult:
    """What one write sends back to the driver: exactly one of `committed` (the shard's marker), `part` (a note
    of a written part of a shard mined in chunks) or `failed` (why the shard could not be read), and the chunk's
    executor stamps (model set-up times, for the driver's start-up figures)."""
    committed: dict[str, Any] | None = None
    part: dict[str, Any] | None = None
    failed: dict[str, Any] | None = None
    stamps: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        given = [k for k in ("committed", "part", "failed") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"a write result is one of committed, part or failed, not {given or 'none'}")

    def to_json(self, stamps: bool = True) -> str:
        doc = {k: v for k, v in asdict(self).items() if v is not None and (stamps or k != "stamps")}
        return json.dumps(doc, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> "WriteResult":
        return cls(**json.loads(text))


class ShardWriter(Step):
    """The flow's last step: a chunk in, its shard (or a part of it) written and committed, a WriteResult out."""
    name = "write"

    def __init__(self, output: Location, config_hash: str, resources: StageResources,
                 image_ext: str | None = None) -> None:
        super().__init__(resources)
        self.output, self.config_hash, self.image_ext = output, config_hash, image_ext

    @classmethod
    def from_config(cls, cfg: RunConfig, output: Where, config_hash: str) -> "ShardWriter":
        image_ext = cfg.output.image_format if cfg.output.write_images else None
        return cls(Location.of(output, S3Options.from_config(cfg.storage)), config_hash, cfg.execution.write, image_ext)

    def write(self, chunk: ShardChunk) -> WriteResult:
        """Write the chunk: its shard committed, a part of it written, or the shard failed."""
        first = chunk.samples[0]
        if first.read_error is not None:
            return WriteResult(failed={"input": chunk.uri, "name": chunk.stem, "error": first.read_error},
                               stamps=chunk.stamps)
        if chunk.parts == 1:
            marker = write_shard(chunk.samples, self.output, self.config_hash, limit=chunk.limit,
                                 started=chunk.started, image_ext=self.image_ext)
        else:
            marker = write_part(chunk, self.output, self.config_hash, self.image_ext)
        if marker is None:
            return WriteResult(part={"name": chunk.stem, "part": chunk.part, "parts": chunk.parts,
                                     "images": sum(not s.sentinel for s in chunk.samples)}, stamps=chunk.stamps)
        return WriteResult(committed=marker, stamps=chunk.stamps)
