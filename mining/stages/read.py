"""Read: an input shard -> its samples, cut into chunks of `execution.chunk_size` (the unit of work of every
later stage and of the write). Reading never raises: an unreadable shard is one chunk holding one sentinel
sample with its `read_error`, which the write step reports instead of committing."""
from __future__ import annotations

import time

from mining.config import RunConfig, StageResources
from mining.records import ShardChunk
from mining.sources.shards import read_shard
from mining.sources.uris import shard_stem
from mining.stages import READER_FILLS
from mining.stages.base import Step
from mining.storage import Location, S3Options, Where


class ShardReader(Step):
    """The flow's first step: an input shard (its first `max_samples`, with --limit) in, its chunks out."""
    name = "read"
    fills = READER_FILLS

    def __init__(self, resources: StageResources, s3: S3Options | None = None, chunk_size: int | None = None) -> None:
        super().__init__(resources)
        self.s3, self.chunk_size = s3, chunk_size

    @classmethod
    def from_config(cls, cfg: RunConfig) -> "ShardReader":
        return cls(cfg.execution.read, S3Options.from_config(cfg.storage), cfg.execution.chunk_size)

    def read(self, uri: str, max_samples: int | None) -> list[ShardChunk]:
        return read_chunks(Location.of(uri, self.s3), max_samples, self.chunk_size)


def read_chunks(shard: Where, max_samples: int | None, chunk_size: int | None) -> list[ShardChunk]:
    """The shard's samples (its first `max_samples`, if given) in chunks of `chunk_size` (None: one chunk)."""
    started = time.time()
    shard = Location.of(shard)
    uri, samples = shard.uri, read_shard(shard, max_samples)
    size = chunk_size or len(samples)
    runs = [samples[i:i + size] for i in range(0, len(samples), size)]
    return [ShardChunk(uri=uri, stem=shard_stem(uri), limit=max_samples, part=i, parts=len(runs), samples=run,
                       started=started) for i, run in enumerate(runs)]
