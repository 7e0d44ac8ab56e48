"""One way to reach local paths and s3:// URIs: pyarrow filesystems.

pyarrow's S3FileSystem does not read AWS_ENDPOINT_URL itself, so the endpoint is resolved here (config first,
then the environment) and handed over explicitly. Credentials come from the standard AWS chain and are never
copied into anything we write.
"""
from __future__ import annotations

import contextlib
import logging
import os
import random
import re
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlparse

import pyarrow.fs as pafs

logger = logging.getLogger("ovmine")


@dataclass(frozen=True)
class S3Options:
    endpoint_url: str | None = None
    region: str | None = None
    max_attempts: int = 10   # transient errors (throttling, 5xx, dropped connections) retried with backoff

    @classmethod
    def from_source(cls, source) -> "S3Options":
        """From a SourceConfig: the run's S3 settings."""
        return cls(source.s3_endpoint_url, source.s3_region, source.s3_max_attempts)

    def resolved_endpoint(self) -> str | None:
        return self.endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def filesystem_for(uri: str, s3: S3Options | None = None) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) for a local path or an s3:// URI."""
    if is_s3(uri):
        s3 = s3 or S3Options()
        # the AWS SDK's standard strategy: exponential backoff with jitter on retryable errors
        kwargs: dict = {"retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=s3.max_attempts)}
        endpoint = s3.resolved_endpoint()
        if endpoint:
            parsed = urlparse(endpoint)
            kwargs["endpoint_override"] = parsed.netloc or parsed.path
            kwargs["scheme"] = parsed.scheme or "https"
        region = s3.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        if region:
            kwargs["region"] = region
        return pafs.S3FileSystem(**kwargs), uri[len("s3://"):]
    return pafs.LocalFileSystem(), os.path.abspath(uri)


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts])


def read_bytes(uri: str, s3: S3Options | None = None) -> bytes:
    fs, path = filesystem_for(uri, s3)
    with fs.open_input_stream(path) as f:
        return f.read()


def write_bytes_atomic(uri: str, data: bytes, s3: S3Options | None = None) -> None:
    """Readers never see a half-written file: local writes go to a temporary name and are renamed;
    an S3 object only appears when its upload completes."""
    fs, path = filesystem_for(uri, s3)
    parent = path.rsplit("/", 1)[0]
    if isinstance(fs, pafs.LocalFileSystem):
        tmp = f"{path}{TMP_MARK}{os.getpid()}-{threading.get_ident()}"
        try:
            os.makedirs(parent, exist_ok=True)
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except OSError as exn:
            # never leave a half-written temporary behind (a full disk would otherwise keep it forever)
            with contextlib.suppress(OSError):
                os.remove(tmp)
            raise OSError(f"could not write {uri}: {exn.strerror or exn}; nothing was committed for it: "
                          f"fix the cause and rerun the same command") from exn
        return

    def upload() -> None:
        fs.create_dir(parent, recursive=True)
        with fs.open_output_stream(path) as f:
            f.write(data)

    # the SDK retries single requests, but not a throttled CompleteMultipartUpload: the whole upload is
    # repeated instead (writing the same key again is harmless)
    attempts = (s3 or S3Options()).max_attempts
    for attempt in range(attempts):
        try:
            return upload()
        except OSError as exn:
            if attempt == attempts - 1:
                raise
            delay = min(0.2 * 2 ** attempt, 10.0) * (0.5 + random.random())
            logger.warning("upload of %s failed (%s); retrying in %.1f s", uri, exn, delay)
            time.sleep(delay)


TMP_MARK = ".tmp-"   # local temporaries are <name>.tmp-<pid>-<thread>, renamed into place when complete
_TEMPORARY = re.compile(re.escape(TMP_MARK) + r"\d+-\d+$")   # exactly the names write_bytes_atomic makes


def delete(uri: str, s3: S3Options | None = None) -> None:
    """Remove a file or object if it exists."""
    fs, path = filesystem_for(uri, s3)
    with contextlib.suppress(FileNotFoundError):
        fs.delete_file(path)


def delete_tree(uri: str, s3: S3Options | None = None) -> None:
    """Remove a folder (an S3 prefix) and everything in it, if it exists."""
    fs, path = filesystem_for(uri, s3)
    if fs.get_file_info(path).type != pafs.FileType.NotFound:
        with contextlib.suppress(FileNotFoundError):
            fs.delete_dir(path)


def sweep_temporaries(folder: str, subfolders: tuple[str, ...] = ()) -> int:
    """Remove temporaries that earlier writers left in a local output (killed or failed mid-write): only
    names `write_bytes_atomic` makes, only in `folder` and its `subfolders`. Call only while holding the output's
    lease: then no live writer owns them. Returns how many."""
    if is_s3(folder) or not os.path.isdir(folder):
        return 0   # an S3 upload that did not complete leaves no object
    removed = 0
    for sub in ("", *subfolders):
        root = os.path.join(folder, sub)
        for name in (os.listdir(root) if os.path.isdir(root) else []):
            if _TEMPORARY.search(name):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(os.path.join(root, name))
                    removed += 1
    return removed


def exists(uri: str, s3: S3Options | None = None) -> bool:
    fs, path = filesystem_for(uri, s3)
    return fs.get_file_info(path).type != pafs.FileType.NotFound
