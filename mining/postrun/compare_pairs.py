"""The pairs one output has and another lacks (`ovmine stats A --compare B`): what curation removed, or what a
second config finds that the first does not.

A pair is the same in both when it names the same mask (its RLE) of the same image with the same noun. Each pair
is reduced to a 64-bit digest, once, so the comparison of two 1M-pair outputs holds 32 MB of digests (each side's
in reading order, and sorted), not the pairs; a second pass samples the pairs whose digest the other lacks.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from mining.postrun.report_gallery import GALLERY_COLUMNS, GalleryPair, _Reservoir
from mining.sinks.reader import iter_pair_batches, pairs_files
from mining.storage import Where

IDENTITY = ["shard", "key", "noun", "rle_counts"]


def _digests(batch: pa.RecordBatch) -> np.ndarray:
    columns = [batch.column(name).to_pylist() for name in IDENTITY]
    return np.fromiter((int.from_bytes(hashlib.blake2b("\x1f".join(row).encode(), digest_size=8).digest(), "big")
                        for row in zip(*columns)), np.uint64, count=batch.num_rows)


def pair_digests(output: Where) -> list[np.ndarray]:
    """The digests of every pair of `output`, one array per record batch in reading order (GALLERY_COLUMNS'
    batches: the same rows), so the second pass need not hash them again."""
    return [_digests(batch) for pairs in pairs_files(output) for batch in iter_pair_batches(pairs, IDENTITY)]


def _sorted(parts: list[np.ndarray]) -> np.ndarray:
    return np.sort(np.concatenate(parts)) if parts else np.zeros(0, np.uint64)


@dataclass
class OnlyIn:
    count: int                   # pairs of this output the other lacks
    sample: list[GalleryPair]    # a uniform sample of them


def only_in(output: Where, digests: list[np.ndarray], other_digests: np.ndarray, k: int, seed: int) -> OnlyIn:
    """The pairs of `output` (whose `digests` pair_digests gave) that `other_digests` (sorted) lacks."""
    reservoir = _Reservoir(k, np.random.default_rng(seed))
    count = 0
    batches = (batch for pairs in pairs_files(output) for batch in iter_pair_batches(pairs, GALLERY_COLUMNS))
    for batch, mine in zip(batches, digests, strict=True):   # parquet cuts batches by rows, whatever the columns
        assert len(mine) == batch.num_rows, "a second read of the pairs cut other batches"
        missing = ~np.isin(mine, other_digests)
        count += int(missing.sum())
        for row, lacking in zip(batch.to_pylist(), missing):
            if lacking:
                reservoir.offer(GalleryPair(**row))
    return OnlyIn(count, reservoir.items)


def pair_differences(a: Where, b: Where, k: int, seed: int = 0) -> tuple[OnlyIn, OnlyIn]:
    """(pairs only in A, pairs only in B), each with a sample of at most k."""
    digests_a, digests_b = pair_digests(a), pair_digests(b)
    return (only_in(a, digests_a, _sorted(digests_b), k, seed), only_in(b, digests_b, _sorted(digests_a), k, seed))
