"""Read one webdataset tar into Samples.

Members are grouped by key with webdataset's naming rule (`base_plus_ext`); the tar itself is streamed with
the standard library's tarfile directly (webdataset's iterator wraps the same call) because on a truncated
tar we need the name of the member that broke: the samples before it are kept, and its key is counted as
`truncated_tar` instead of silently vanishing.
"""
from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator

from webdataset.tariterators import base_plus_ext

from mining.logs import logger
from mining.records import Drop, Sample
from mining.sources.uris import shard_stem
from mining.storage import S3Options, filesystem_for

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
CAPTION_EXTS = ("txt", "json")


class MemberError(Exception):
    """A member whose data could not be read; carries its key."""

    def __init__(self, key: str, cause: Exception) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.key = key


def _members(uri: str, s3: S3Options | None) -> Iterator[tuple[str, str, bytes]]:
    fs, path = filesystem_for(uri, s3)
    with fs.open_input_stream(path) as raw:
        stream = io.BufferedReader(raw, buffer_size=1 << 20)  # tarfile's stream mode wants a buffered reader
        with tarfile.open(fileobj=stream, mode="r|*") as tar:
            for info in tar:
                if not info.isreg():
                    continue
                key, ext = base_plus_ext(info.name)
                if key is None or key.rsplit("/", 1)[-1].startswith("__"):
                    continue  # no extension, or webdataset metadata
                try:
                    data = tar.extractfile(info).read()
                except Exception as exn:
                    raise MemberError(key, exn) from exn
                tar.members = []  # stream mode would otherwise keep every TarInfo
                yield key, ext.lower(), data


def _complete(sample: Sample) -> bool:
    return any(e in sample.members for e in IMAGE_EXTS) and any(e in sample.members for e in CAPTION_EXTS)


def count_keys(uri: str, s3: S3Options | None = None, stop_after: int | None = None) -> int:
    """Distinct keys of a shard, reading no further than needed to see `stop_after` of them."""
    keys: set[str] = set()
    try:
        for key, _, _ in _members(uri, s3):
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
        for key, ext, data in _members(uri, s3):
            sample = by_key.get(key)
            if sample is None:
                if max_samples is not None and len(samples) == max_samples:
                    break
                sample = by_key[key] = Sample(shard=uri, shard_stem=stem, key=key, index=len(samples))
                samples.append(sample)
            sample.members[ext] = data
    except MemberError as exn:  # cut inside a member: that key is damaged, everything before it is fine
        shard_errors.append(f"truncated in {exn.key}: {exn}")
        if exn.key not in by_key:
            by_key[exn.key] = Sample(shard=uri, shard_stem=stem, key=exn.key, index=len(samples))
            samples.append(by_key[exn.key])
        by_key[exn.key].drop_with(Drop.TRUNCATED_TAR, str(exn))
    except Exception as exn:  # cut inside a header, or not a tar at all
        shard_errors.append(f"{type(exn).__name__}: {exn}")
        # the key being read when the stream broke may be missing members
        if samples and not _complete(samples[-1]):
            samples[-1].drop_with(Drop.TRUNCATED_TAR, shard_errors[-1])
    if shard_errors:
        logger.warning("shard %s is truncated or corrupt after %d keys: %s", uri, len(samples), shard_errors[0])
    if not samples:
        samples.append(Sample(shard=uri, shard_stem=stem, key="", index=0, sentinel=True))
    for sample in samples:
        sample.shard_size = len(samples)
    samples[-1].shard_errors = shard_errors
    return samples
