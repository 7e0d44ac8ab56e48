"""Read one webdataset tar into Samples.

Members are grouped by key with webdataset's naming rule (`base_plus_ext`); the tar itself is streamed with
the standard library's tarfile directly (webdataset's iterator wraps the same call) because on a truncated
tar we need the name of the member that broke: the samples before it are kept, and its key is counted as
`truncated_tar` instead of silently vanishing.
"""
from __future__ import annotations

import gzip
import io
import tarfile
import time
from collections.abc import Iterator

from webdataset.tariterators import base_plus_ext

from mining.logs import logger, warn_limited
from mining.records import Drop, Sample
from mining.sources.uris import shard_stem
from mining.storage import Location, Where

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
READ_ATTEMPTS = 3
CAPTION_EXTS = ("txt", "json")


class MemberError(Exception):
    """A member whose data could not be read; carries its key."""

    def __init__(self, key: str, cause: Exception) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.key = key


def _members(shard: Location) -> Iterator[tuple[str, str, bytes]]:
    with shard.open_stream() as raw:
        stream = io.BufferedReader(raw, buffer_size=1 << 20)  # tarfile's stream mode wants a buffered reader
        with tarfile.open(fileobj=stream, mode="r|*") as tar:
            for info in tar:
                if not info.isreg():
                    continue
                key, ext = base_plus_ext(info.name)
                if key is None or key.rsplit("/", 1)[-1].startswith("__"):
                    continue  # no extension, or webdataset metadata
                if "." in ext:
                    warn_limited("dotted-member", f"{shard}: member {info.name}: webdataset takes the key up to "
                                                  f"the first dot, so it belongs to key {key!r}")
                try:
                    data = tar.extractfile(info).read()
                except Exception as exn:
                    raise MemberError(key, exn) from exn
                tar.members = []  # stream mode would otherwise keep every TarInfo
                yield key, ext.lower(), data


def member_type(ext: str) -> str:
    """webdataset takes the key up to the first dot, so `a.b.jpg` is key `a` with extension `b.jpg`: its last
    part still says what it is. A plain member of that type (`a.jpg`) wins over dotted ones (`a.tags.txt`)."""
    last = ext.rsplit(".", 1)[-1]
    return last if "." in ext and last in IMAGE_EXTS + CAPTION_EXTS else ext


def _complete(sample: Sample) -> bool:
    return any(e in sample.members for e in IMAGE_EXTS) and any(e in sample.members for e in CAPTION_EXTS)


def count_keys(shard: Where, stop_after: int | None = None) -> int:
    """Distinct keys of a shard, reading no further than needed to see `stop_after` of them."""
    keys: set[str] = set()
    try:
        for key, _, _ in _members(Location.of(shard)):
            keys.add(key)
            if stop_after is not None and len(keys) > stop_after:
                return stop_after
    except Exception:  # a broken shard counts what it has; read_shard reports the damage
        pass
    return len(keys)


class ShardUnreadable(Exception):
    """The shard's bytes could not be fetched (missing, no permission, connection lost mid-stream): unlike a
    damaged tar, nothing about its content is known, so it must not be committed."""


def _is_io_failure(exn: BaseException) -> bool:
    # a corrupt gzip stream is damaged content, not a failed read, although gzip raises it as an OSError
    return isinstance(exn, OSError) and not isinstance(exn, gzip.BadGzipFile)


def read_shard(shard: Where, max_samples: int | None = None,
               attempts: int = READ_ATTEMPTS, retry_delay: float = 1.0) -> list[Sample]:
    """Every key of the shard (the first `max_samples` if given) as a Sample, in file order; never raises.

    A damaged but readable shard keeps every sample before the damage (see `_read_once`). A shard whose
    bytes cannot be read is tried `attempts` times (S3 requests are retried underneath, this retries a stream
    cut mid-shard), then comes back as one sentinel sample carrying `read_error`: the run does not commit
    it, reports it and a rerun tries it again."""
    shard = Location.of(shard)
    uri = shard.uri
    error = ""
    for attempt in range(1, attempts + 1):
        try:
            return _read_once(shard, max_samples)
        except ShardUnreadable as exn:
            error = str(exn)
            if attempt < attempts:
                logger.warning("reading shard %s failed (%s); attempt %d of %d in %.1f s", uri, error, attempt + 1,
                               attempts, retry_delay * 2 ** (attempt - 1))
                time.sleep(retry_delay * 2 ** (attempt - 1))
    logger.error("shard %s could not be read after %d attempts (%s): not committed, a rerun retries it",
                 uri, attempts, error)
    return [Sample(shard=uri, shard_stem=shard_stem(uri), key="", index=0, shard_size=1, sentinel=True,
                   read_error=error)]


def _read_once(shard: Location, max_samples: int | None) -> list[Sample]:
    """One pass over the tar. Members group into samples by key as webdataset does (consecutive members
    of one key); a key met again later, or a member met twice, is a duplicate: the first sample is kept and
    each repeat is counted as `duplicate_key`. Shard-level damage (truncated, not a tar) is recorded in
    `shard_errors` of the last sample; a shard that yields nothing is one sentinel sample."""
    uri, stem = shard.uri, shard_stem(shard.uri)
    samples: list[Sample] = []
    seen: set[str] = set()
    current: Sample | None = None      # the sample the running members belong to (None: a duplicate's)
    current_key: str | None = None
    raw_exts: set[str] = set()         # extensions of the running key's members, as written
    shard_errors: list[str] = []

    def start(key: str, duplicate: bool) -> Sample | None:
        sample = Sample(shard=uri, shard_stem=stem, key=key, index=len(samples))
        samples.append(sample)
        if duplicate:
            sample.drop_with(Drop.DUPLICATE_KEY, f"key {key!r} already read earlier in the shard; kept the first")
            return None
        seen.add(key)
        return sample

    try:
        for key, ext, data in _members(shard):
            if key != current_key or ext in raw_exts:   # a new key, or a member met twice: a new sample
                if max_samples is not None and len(samples) == max_samples:
                    break
                current_key, raw_exts = key, set()
                current = start(key, duplicate=key in seen)
            raw_exts.add(ext)
            kind = member_type(ext)
            if current is None:
                continue
            if kind == ext or kind not in current.members:   # a plain member wins; else the first dotted one
                current.members[kind] = data
    except MemberError as exn:  # cut inside a member: that key is damaged, everything before it is fine
        if _is_io_failure(exn.__cause__):
            raise ShardUnreadable(f"{type(exn.__cause__).__name__}: {exn.__cause__}") from exn
        shard_errors.append(f"truncated in {exn.key}: {exn}")
        damaged = current if (current is not None and exn.key == current_key) else None
        if damaged is None and exn.key not in seen and (max_samples is None or len(samples) < max_samples):
            damaged = start(exn.key, duplicate=False)
        if damaged is not None:
            damaged.drop_with(Drop.TRUNCATED_TAR, str(exn))
    except Exception as exn:  # cut inside a header, or not a tar at all
        if _is_io_failure(exn):
            raise ShardUnreadable(f"{type(exn).__name__}: {exn}") from exn
        shard_errors.append(f"{type(exn).__name__}: {exn}")
        # the key being read when the stream broke may be missing members
        if current is not None and not _complete(current):
            current.drop_with(Drop.TRUNCATED_TAR, shard_errors[-1])
    if shard_errors:
        logger.warning("shard %s is truncated or corrupt after %d keys: %s", uri, len(samples), shard_errors[0])
    if not samples:
        samples.append(Sample(shard=uri, shard_stem=stem, key="", index=0, sentinel=True))
    for sample in samples:
        sample.shard_size = len(samples)
    samples[-1].shard_errors = shard_errors
    return samples
