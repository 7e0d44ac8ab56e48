"""Read one webdataset tar into Samples with webdataset's own tar iterator.

Grouping by key is done here rather than with `webdataset.group_by_keys` because a truncated tar raises out
of the iterator: we must still hand on the samples already complete, and name the ones the cut destroyed.
"""
from __future__ import annotations

import io
from collections.abc import Iterator

from webdataset.tariterators import base_plus_ext, tar_file_iterator

from mining.logs import logger
from mining.records import Drop, Sample
from mining.sources.uris import shard_stem
from mining.storage import S3Options, filesystem_for


IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
CAPTION_EXTS = ("txt", "json")


def _members(uri: str, s3: S3Options | None, member_errors: list[str]) -> Iterator[tuple[str, str, bytes]]:
    fs, path = filesystem_for(uri, s3)
    with fs.open_input_stream(path) as raw:
        stream = io.BufferedReader(raw, buffer_size=1 << 20)  # tarfile wants a buffered file object

        def on_member_error(exn: Exception) -> bool:
            member_errors.append(f"{type(exn).__name__}: {exn}")
            return True

        for item in tar_file_iterator(stream, handler=on_member_error):
            prefix, suffix = base_plus_ext(item["fname"])
            if prefix is None:
                continue
            yield prefix, suffix.lower(), item["data"]


def _complete(sample: Sample) -> bool:
    return any(e in sample.members for e in IMAGE_EXTS) and any(e in sample.members for e in CAPTION_EXTS)


def count_keys(uri: str, s3: S3Options | None = None, stop_after: int | None = None) -> int:
    """Distinct keys of a shard, reading no further than needed to see `stop_after` of them."""
    keys: set[str] = set()
    try:
        for key, _, _ in _members(uri, s3, []):
            keys.add(key)
            if stop_after is not None and len(keys) > stop_after:
                return stop_after
    except Exception:  # a broken shard counts what it has; read_shard reports the damage
        pass
    return len(keys)


def read_shard(uri: str, s3: S3Options | None = None, max_samples: int | None = None) -> list[Sample]:
    """Every key of the shard (the first `max_samples` if given) as a Sample, in file order; never raises
    for bad content.

    Shard-level problems (unreadable, truncated) are recorded in `shard_errors` of the last sample; a shard
    that yields nothing at all is represented by one sentinel sample so the writer still accounts for it.
    """
    stem = shard_stem(uri)
    samples: list[Sample] = []
    by_key: dict[str, Sample] = {}
    shard_errors: list[str] = []
    try:
        for key, ext, data in _members(uri, s3, shard_errors):
            sample = by_key.get(key)
            if sample is None:
                if max_samples is not None and len(samples) == max_samples:
                    break
                sample = Sample(shard=uri, shard_stem=stem, key=key, index=len(samples))
                by_key[key] = sample
                samples.append(sample)
            sample.members[ext] = data
    except Exception as exn:  # a truncated or corrupt tar: keep everything before the cut
        shard_errors.append(f"{type(exn).__name__}: {exn}")
    if shard_errors:
        logger.warning("shard %s is truncated or corrupt after %d keys: %s", uri, len(samples), shard_errors[0])
        # only the key being read when the stream broke can be missing members
        if samples and not _complete(samples[-1]):
            samples[-1].drop_with(Drop.TRUNCATED_TAR, shard_errors[0])
    if not samples:
        samples.append(Sample(shard=uri, shard_stem=stem, key="", index=0, sentinel=True))
    for sample in samples:
        sample.shard_size = len(samples)
    samples[-1].shard_errors = shard_errors
    return samples
