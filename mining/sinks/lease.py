"""One writer per output: a run holds `<output>/_lease.json` while it writes, and a second run is refused.

Local outputs create the lease with O_EXCL; S3 outputs with a conditional PUT (`If-None-Match: *`), which S3
answers with 412 when the object exists. The holder renews the lease every `RENEW_SECONDS`; a lease is stale,
and may be taken over, when its holder's process is gone (same host) or it was not renewed for `STALE_SECONDS`
(a killed driver on another machine). A lease that cannot be parsed, or names no holder, is stale at once: a
lease is never written partly (local: written whole under a temporary name, then linked into place), so such a
file was damaged by something else and no run holds it. Creating the lease is also the run's first write: an
output that cannot be written (read-only, a file, a missing bucket, a full disk) fails here, before any model is
loaded.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import threading
import time
import uuid
from datetime import datetime, timezone
from typing import Any

from mining.logs import logger
from mining.storage import Location, Where, note_endpoint

LEASE_NAME = "_lease.json"
RENEW_SECONDS = 30.0
STALE_SECONDS = 180.0


class OutputBusy(RuntimeError):
    """Another live run holds the output."""


class OutputNotWritable(OSError):
    """The output cannot be written at all."""


def _holder(config_hash: str) -> dict[str, Any]:
    return {"token": uuid.uuid4().hex, "host": socket.gethostname(), "pid": os.getpid(), "config_hash": config_hash,
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_stale(holder: dict[str, Any], age_seconds: float) -> bool:
    """Not renewed for STALE_SECONDS, or (on this host) its process is gone. Age alone also covers a reused
    pid, and hosts that share a name but not a pid namespace."""
    if age_seconds > STALE_SECONDS or not holder.get("token"):
        return True
    return holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int) \
        and not _pid_alive(holder["pid"])


def _parse_holder(data: bytes) -> dict[str, Any]:
    """A lease's holder; {} (stale: no token) when the file is empty or damaged."""
    try:
        holder = json.loads(data or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _busy_message(output: str, holder: dict[str, Any]) -> str:
    return (f"{output} is being written by another ovmine run (pid {holder.get('pid')} on {holder.get('host')}, "
            f"config {holder.get('config_hash')}, since {holder.get('started')}); wait for it to finish, or use "
            f"another --output. If that run is gone, its lease expires {STALE_SECONDS:.0f} s after its last renewal.")


class _LocalLease:
    def __init__(self, output: str) -> None:
        self.path = os.path.join(os.path.abspath(output), LEASE_NAME)

    @contextlib.contextmanager
    def exclusive(self):
        """Serialises lease checks and takeovers of this output between processes on this machine: two runs
        that both find a stale lease must not both take it over. The output folder itself is flock'ed, so
        nothing is left behind for it. Also the output's first write."""
        folder = os.path.dirname(self.path)
        try:
            os.makedirs(folder, exist_ok=True)
            fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        except (FileExistsError, NotADirectoryError):
            raise OutputNotWritable(f"cannot write the output {folder}: it is a file, not a folder") from None
        except OSError as exn:
            raise OutputNotWritable(f"cannot write the output {folder}: {exn.strerror or exn}") from exn
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)   # closing releases the lock

    def create(self, body: bytes) -> bool:
        """Called inside `exclusive`, which made the folder. The body is written whole under a temporary name
        and hard-linked into place: the link fails if a lease exists, and a full disk fails before it."""
        tmp = f"{self.path}.tmp-{os.getpid()}-{threading.get_ident()}"
        try:
            with open(tmp, "wb") as f:
                f.write(body)
                f.flush()
                os.fsync(f.fileno())
            os.link(tmp, self.path)
        except FileExistsError:
            return False
        except OSError as exn:
            raise OutputNotWritable(f"cannot write the lease {self.path}: {exn.strerror or exn}") from exn
        finally:
            with contextlib.suppress(OSError):
                os.remove(tmp)
        return True

    def take_over(self, body: bytes, stale: dict[str, Any]) -> bool:
        """Replace the stale lease (checked under `exclusive`, so it is still the one that was judged)."""
        Location(self.path).write_atomic(body)
        return True

    def read(self) -> tuple[dict[str, Any], float] | None:
        try:
            with open(self.path, "rb") as f:
                data = f.read()
            age = time.time() - os.path.getmtime(self.path)
        except FileNotFoundError:
            return None
        return _parse_holder(data), age

    def renew(self) -> None:
        os.utime(self.path)

    def remove(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.path)


class _S3Lease:
    def __init__(self, output: Location) -> None:
        import boto3
        from botocore.config import Config

        s3 = output.s3
        note_endpoint(s3.resolved_endpoint())
        self.bucket, _, key = output.uri[len("s3://"):].partition("/")
        self.key = f"{key.rstrip('/')}/{LEASE_NAME}" if key.strip("/") else LEASE_NAME
        self.client = boto3.client("s3", endpoint_url=s3.resolved_endpoint(), region_name=s3.region,
                                   config=Config(retries={"max_attempts": s3.max_attempts, "mode": "standard"}))
        self.body = b""
        self.etag = ""

    def _code(self, exn: Exception) -> str:
        return getattr(exn, "response", {}).get("Error", {}).get("Code", "")

    def create(self, body: bytes) -> bool:
        return self._put(body, IfNoneMatch="*")

    def _put(self, body: bytes, **condition: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.etag = self.client.put_object(Bucket=self.bucket, Key=self.key, Body=body, **condition)["ETag"]
        except ClientError as exn:
            if self._code(exn) in ("PreconditionFailed", "ConditionalRequestConflict"):
                return False
            raise OutputNotWritable(f"cannot write the output s3://{self.bucket}/{self.key.rsplit('/', 1)[0]}: "
                                    f"{self._code(exn) or exn}") from exn
        self.body = body
        return True

    def exclusive(self):
        return contextlib.nullcontext()   # S3's conditional writes do the serialising

    def take_over(self, body: bytes, stale: dict[str, Any]) -> bool:
        """Replace the stale lease only if it is still the object that was judged stale (If-Match)."""
        return self._put(body, IfMatch=stale["_etag"])

    def read(self) -> tuple[dict[str, Any], float] | None:
        from botocore.exceptions import ClientError

        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=self.key)
        except ClientError:
            return None
        age = (datetime.now(timezone.utc) - obj["LastModified"]).total_seconds()
        return _parse_holder(obj["Body"].read()) | {"_etag": obj["ETag"]}, age

    def renew(self) -> None:
        """Only while the lease is still ours (If-Match): a holder that was paused past STALE_SECONDS and taken
        over must not overwrite the new holder's lease."""
        if not self._put(self.body, IfMatch=self.etag):
            raise OutputBusy(f"the lease of s3://{self.bucket}/{self.key} was taken over by another run")

    def remove(self) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.key)


class OutputLease:
    """Hold an output for the duration of a `with` block; renewed in a background thread."""

    def __init__(self, output: Where, config_hash: str) -> None:
        self.output = Location.of(output)
        self.store = _S3Lease(self.output) if self.output.is_s3 else _LocalLease(self.output.uri)
        self.holder = _holder(config_hash)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> "OutputLease":
        with self.store.exclusive():
            if not self._take():
                raise OutputBusy(f"{self.output}: could not take its lease (another run keeps taking it)")
        self._thread = threading.Thread(target=self._renew, name="ovmine-lease", daemon=True)
        self._thread.start()
        return self

    def _take(self) -> bool:
        body = json.dumps(self.holder).encode()
        for _ in range(3):
            if self.store.create(body):
                return True
            current = self.store.read()
            if current is None:
                continue   # released between our create and read
            holder, age = current
            if not is_stale(holder, age):
                raise OutputBusy(_busy_message(self.output, holder))
            if holder.get("token"):
                logger.warning("taking over the stale lease of %s (pid %s on %s, last renewed %.0f s ago)",
                               self.output, holder.get("pid"), holder.get("host"), age)
            else:
                logger.warning("replacing the damaged lease of %s (no holder in it)", self.output)
            if self.store.take_over(body, holder):
                return True
        return False

    def _renew(self) -> None:
        while not self._stop.wait(RENEW_SECONDS):
            try:
                self.store.renew()
            except Exception as exn:   # a missed renewal only shortens the lease; the run goes on
                logger.warning("could not renew the lease of %s: %s", self.output, exn)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()   # a renewal in flight must not bring the lease back after it is removed
        current = self.store.read()
        if current is not None and current[0].get("token") == self.holder["token"]:
            self.store.remove()

    def __enter__(self) -> "OutputLease":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

