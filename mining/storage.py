"""Where files live: a `Location` is a local path or an s3:// URI together with the S3 settings that reach it.

Every read, write, listing and removal of ovmine's inputs, outputs and checkpoints goes through it, over
pyarrow filesystems. A Location is a small frozen value: it pickles, so a stage carries its output to the
workers that write there.

pyarrow's S3FileSystem does not read AWS_ENDPOINT_URL itself, so the endpoint is resolved here (config first,
then the environment) and handed over explicitly. Credentials come from the standard AWS chain and are never
copied into anything we write.
"""
from __future__ import annotations

import contextlib
import functools
import os
import random
import re
import shutil
import socket
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlparse

import pyarrow.fs as pafs

from mining.logs import logger


@dataclass(frozen=True)
class S3Options:
    endpoint_url: str | None = None
    region: str | None = None
    max_attempts: int = 10   # transient errors (throttling, 5xx, dropped connections) retried with backoff

    @classmethod
    def from_config(cls, storage) -> "S3Options":
        """From a config's `storage` section (`mining.config.StorageConfig`)."""
        return cls(storage.endpoint_url, storage.region, storage.max_attempts)

    def resolved_endpoint(self) -> str | None:
        return self.endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


_last_endpoint: list[str | None] = [None]   # the S3 endpoint this process last reached, for error messages


def note_endpoint(endpoint: str | None) -> None:
    _last_endpoint[0] = endpoint


def explain_s3_error(exn: BaseException) -> str | None:
    """One line naming the S3 endpoint and the fix, for the errors a user's setup causes (no credentials,
    refused credentials, an endpoint that cannot be reached); None for any other error."""
    if isinstance(exn, S3Unreachable):
        return str(exn)
    endpoint = _last_endpoint[0] or "AWS's default S3 endpoint"
    text, name = str(exn), type(exn).__name__
    if name in ("NoCredentialsError", "PartialCredentialsError") or "No credentials" in text:
        return (f"no AWS credentials for the S3 endpoint {endpoint}: set AWS_ACCESS_KEY_ID and "
                f"AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) in the environment")
    if name in ("EndpointConnectionError", "ConnectTimeoutError", "ConnectionClosedError") or (
            "AWS Error" in text and ("NETWORK_CONNECTION" in text or "curlCode" in text)):
        return (f"cannot reach the S3 endpoint {endpoint}: check --s3-endpoint, AWS_ENDPOINT_URL or "
                f"storage.endpoint_url, and that the server is up")
    refused = ("InvalidAccessKeyId", "SignatureDoesNotMatch", "INVALID_ACCESS_KEY_ID", "SIGNATURE_DOES_NOT_MATCH",
               "ExpiredToken", "InvalidToken")
    if any(code in text for code in refused) or (name == "ClientError" and "(403)" in text):
        return (f"the S3 endpoint {endpoint} refused the credentials ({text.splitlines()[0][:120]}): check "
                f"AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN")
    return None


class S3Unreachable(OSError):
    """The configured S3 endpoint refuses connections: said at once, not after minutes of retried requests."""


def _probe(endpoint: str) -> None:
    """One TCP connection to a configured endpoint before the first request: the SDK retries a refused
    connection with backoff for minutes, which a user with a wrong --s3-endpoint should not wait for."""
    parsed = urlparse(endpoint if "://" in endpoint else f"https://{endpoint}")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        socket.create_connection((parsed.hostname, port), timeout=10).close()
    except OSError as exn:
        raise S3Unreachable(f"cannot reach the S3 endpoint {endpoint} ({exn.strerror or exn}): check --s3-endpoint, "
                            f"AWS_ENDPOINT_URL or storage.endpoint_url, and that the server is up") from None


@functools.lru_cache(maxsize=16)
def _s3_filesystem(s3: S3Options, endpoint: str | None, region: str | None) -> pafs.S3FileSystem:
    # the AWS SDK's standard strategy: exponential backoff with jitter on retryable errors
    kwargs: dict = {"retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=s3.max_attempts)}
    if endpoint:
        _probe(endpoint)
        parsed = urlparse(endpoint)
        kwargs["endpoint_override"] = parsed.netloc or parsed.path
        kwargs["scheme"] = parsed.scheme or "https"
    if region:
        kwargs["region"] = region
    return pafs.S3FileSystem(**kwargs)


TMP_MARK = ".tmp-"   # local temporaries are <name>.tmp-<pid>-<thread>, renamed into place when complete
_TEMPORARY = re.compile(re.escape(TMP_MARK) + r"\d+-\d+$")   # exactly the names write_atomic makes


@dataclass(frozen=True)
class Location:
    """A file or folder, local or on S3. `uri` is kept as the user wrote it (messages name it so)."""
    uri: str
    s3: S3Options = field(default_factory=S3Options)

    @classmethod
    def of(cls, where: "Location | str", s3: S3Options | None = None) -> "Location":
        """`where` as a Location; a plain string is reached with `s3` (default settings when None)."""
        if isinstance(where, Location):
            return where
        return cls(str(where), s3 or S3Options())

    def __str__(self) -> str:
        return self.uri

    # --- naming -------------------------------------------------------------------------------------------
    @property
    def is_s3(self) -> bool:
        return is_s3(self.uri)

    @property
    def name(self) -> str:
        return self.uri.rstrip("/").rsplit("/", 1)[-1]

    @property
    def parent(self) -> "Location":
        return Location(self.uri.rstrip("/").rsplit("/", 1)[0], self.s3)

    def join(self, *parts: str) -> "Location":
        return Location("/".join([self.uri.rstrip("/"), *parts]), self.s3)

    def __truediv__(self, part: str) -> "Location":
        return self.join(part)

    def at(self, uri: str) -> "Location":
        """Another place reached with these S3 settings (an input or parent output a manifest names)."""
        return Location(uri, self.s3)

    def with_suffix(self, old: str, new: str) -> "Location":
        return Location(self.uri.removesuffix(old) + new, self.s3)

    def absolute(self) -> "Location":
        """The same place named from anywhere: a local path made absolute (workers on other nodes, or in
        another working directory, must not resolve it against their own)."""
        return self if self.is_s3 else Location(os.path.abspath(self.uri), self.s3)

    def comparable(self) -> str:
        """A form to compare locations by: s3://bucket/key as is, local paths resolved (symlinks, '..')."""
        return self.uri.rstrip("/") if self.is_s3 else os.path.realpath(self.uri)

    # --- reaching it --------------------------------------------------------------------------------------
    def filesystem(self) -> tuple[pafs.FileSystem, str]:
        """(pyarrow filesystem, path inside it); S3 filesystems are made once per process and settings."""
        if self.is_s3:
            region = self.s3.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
            note_endpoint(self.s3.resolved_endpoint())
            return _s3_filesystem(self.s3, self.s3.resolved_endpoint(), region), self.uri[len("s3://"):]
        return pafs.LocalFileSystem(), os.path.abspath(self.uri)

    def kind(self) -> pafs.FileType:
        fs, path = self.filesystem()
        return fs.get_file_info(path).type

    def exists(self) -> bool:
        """A file, or a folder (an S3 prefix "exists" when objects lie under it)."""
        return self.kind() != pafs.FileType.NotFound

    def read(self) -> bytes:
        fs, path = self.filesystem()
        with fs.open_input_stream(path) as f:
            return f.read()

    def open_stream(self):
        """A sequential reader (tar streams)."""
        fs, path = self.filesystem()
        return fs.open_input_stream(path)

    def open_random(self):
        """A seekable reader (parquet)."""
        fs, path = self.filesystem()
        return fs.open_input_file(path)

    def _children(self) -> list[pafs.FileInfo]:
        """What lies directly in this folder: one listing (one request on S3); none if it is missing."""
        fs, path = self.filesystem()
        return fs.get_file_info(pafs.FileSelector(path.rstrip("/"), allow_not_found=True))

    def list(self, suffix: str = "") -> list["Location"]:
        """The files directly in this folder whose names end with `suffix`, sorted."""
        names = sorted(i.base_name for i in self._children()
                       if i.type == pafs.FileType.File and i.base_name.endswith(suffix))
        return [self / name for name in names]

    def modified_times(self, suffix: str = "") -> dict[str, float]:
        """name -> modification time (epoch seconds) of the files directly in this folder ending with `suffix`:
        the same single listing as `list`."""
        return {i.base_name: i.mtime.timestamp() for i in self._children()
                if i.type == pafs.FileType.File and i.base_name.endswith(suffix) and i.mtime is not None}

    def files_below(self) -> dict[str, float]:
        """Every file under this folder, at any depth: relative path ('/'-separated) -> modification time."""
        fs, path = self.filesystem()
        root = path.rstrip("/")
        infos = fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
        return {i.path[len(root) + 1:]: (i.mtime.timestamp() if i.mtime else 0.0)
                for i in infos if i.type == pafs.FileType.File}

    def entry_names(self) -> list[str]:
        """Names of everything directly in this folder (files and folders), sorted."""
        return sorted(i.base_name for i in self._children())

    # --- changing it --------------------------------------------------------------------------------------
    def write_atomic(self, data: bytes) -> None:
        """Readers never see a half-written file: local writes go to a temporary name and are renamed; an S3
        object only appears when its upload completes."""
        self._replace(lambda f: f.write(data))

    def publish(self, local_file: str) -> None:
        """Copy a (large) local file here, atomically as `write_atomic`, without holding it in memory."""
        def copy(dst) -> None:
            with open(local_file, "rb") as src:
                shutil.copyfileobj(src, dst, 1 << 24)
        self._replace(copy)

    def write_stream(self, src) -> None:
        """Copy a readable stream here atomically, 16 MiB at a time. A stream is read once: a failed S3
        upload of it is not repeated here (the SDK still retries each request)."""
        self._replace(lambda dst: shutil.copyfileobj(src, dst, 1 << 24), repeatable=False)

    def _replace(self, fill, repeatable: bool = True) -> None:
        """Write through `fill(file)` to a temporary renamed into place (local) or one upload (S3)."""
        if self.is_s3:
            self._upload(fill, self.s3.max_attempts if repeatable else 1)
            return
        path = os.path.abspath(self.uri)
        tmp = f"{path}{TMP_MARK}{os.getpid()}-{threading.get_ident()}"
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(tmp, "wb") as f:
                fill(f)
            os.replace(tmp, path)
        except BaseException as exn:
            # never leave a half-written temporary behind (a full disk or Ctrl-C would otherwise keep it)
            with contextlib.suppress(OSError):
                os.remove(tmp)
            if isinstance(exn, OSError):
                raise OSError(f"could not write {self.uri}: {exn.strerror or exn}; nothing was committed for "
                              f"it: fix the cause and rerun the same command") from exn
            raise

    def _upload(self, fill, attempts: int) -> None:
        fs, path = self.filesystem()
        # the SDK retries single requests, but not a throttled CompleteMultipartUpload: the whole upload is
        # repeated instead (writing the same key again is harmless)
        for attempt in range(attempts):
            try:
                fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
                with fs.open_output_stream(path) as f:
                    fill(f)
                return
            except OSError as exn:
                if attempt == attempts - 1:
                    raise
                delay = min(0.2 * 2 ** attempt, 10.0) * (0.5 + random.random())
                logger.warning("upload of %s failed (%s); retrying in %.1f s", self.uri, exn, delay)
                time.sleep(delay)

    def delete(self) -> None:
        """Remove this file or object if it exists."""
        fs, path = self.filesystem()
        with contextlib.suppress(FileNotFoundError):
            fs.delete_file(path)

    def delete_tree(self) -> None:
        """Remove this folder (an S3 prefix) and everything in it, if it exists."""
        fs, path = self.filesystem()
        if fs.get_file_info(path).type != pafs.FileType.NotFound:
            with contextlib.suppress(FileNotFoundError):
                fs.delete_dir(path)

    def sweep_temporaries(self, subfolders: tuple[str, ...] = ()) -> int:
        """Remove temporaries that earlier writers left in a local folder (killed or failed mid-write): only
        names `write_atomic` makes, only in this folder and its `subfolders`. Call only while holding the
        output's lease: then no live writer owns them. Returns how many."""
        if self.is_s3 or not os.path.isdir(self.uri):
            return 0   # an S3 upload that did not complete leaves no object
        removed = 0
        for sub in ("", *subfolders):
            root = os.path.join(self.uri, sub)
            for name in (os.listdir(root) if os.path.isdir(root) else []):
                if _TEMPORARY.search(name):
                    with contextlib.suppress(FileNotFoundError):
                        os.remove(os.path.join(root, name))
                        removed += 1
        return removed


Where = Location | str   # what our functions accept: a Location, or a string reached with default S3 settings
