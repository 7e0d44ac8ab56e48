"""One writer per output: a run holds `<output>/_lease.json` while it writes, and a second run is refused.

Local outputs create the lease with O_EXCL; S3 outputs with a conditional PUT (`If-None-Match: *`), which S3
answers with 412 when the object exists. The holder renews the lease every `RENEW_SECONDS`; a lease is stale,
and may be taken over, when its holder's process is gone (same host) or it was not renewed for `STALE_SECONDS`
(a killed driver on another machine). Creating the lease is also the run's first write: an output that cannot
be written (read-only, a file, a missing bucket) fails here, before any model is loaded.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from datetime import datetime, timezone
from typing import Any

from mining.logs import logger
from mining.storage import S3Options, is_s3, join

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
    if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
        return not _pid_alive(holder["pid"])
    return age_seconds > STALE_SECONDS


def _busy_message(output: str, holder: dict[str, Any]) -> str:
    return (f"{output} is being written by another ovmine run (pid {holder.get('pid')} on {holder.get('host')}, "
            f"config {holder.get('config_hash')}, since {holder.get('started')}); wait for it to finish, or use "
            f"another --output. If that run is gone, its lease expires {STALE_SECONDS:.0f} s after its last renewal.")


class _LocalLease:
    def __init__(self, output: str) -> None:
        self.path = os.path.join(os.path.abspath(output), LEASE_NAME)

    def create(self, body: bytes) -> bool:
        folder = os.path.dirname(self.path)
        try:
            os.makedirs(folder, exist_ok=True)
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if not os.path.isdir(folder):
                raise OutputNotWritable(f"cannot write the output {folder}: it is a file, not a folder") from None
            return False
        except OSError as exn:
            raise OutputNotWritable(f"cannot write the output {folder}: {exn.strerror or exn}") from exn
        with os.fdopen(fd, "wb") as f:
            f.write(body)
        return True

    def read(self) -> tuple[dict[str, Any], float] | None:
        try:
            with open(self.path, "rb") as f:
                holder = json.loads(f.read() or b"{}")
            return holder, time.time() - os.path.getmtime(self.path)
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def renew(self) -> None:
        os.utime(self.path)

    def remove(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.path)


class _S3Lease:
    def __init__(self, output: str, s3: S3Options | None) -> None:
        import boto3
        from botocore.config import Config

        s3 = s3 or S3Options()
        self.bucket, _, key = output[len("s3://"):].partition("/")
        self.key = f"{key.rstrip('/')}/{LEASE_NAME}" if key.strip("/") else LEASE_NAME
        self.client = boto3.client("s3", endpoint_url=s3.resolved_endpoint(), region_name=s3.region,
                                   config=Config(retries={"max_attempts": s3.max_attempts, "mode": "standard"}))
        self.body = b""

    def _code(self, exn: Exception) -> str:
        return getattr(exn, "response", {}).get("Error", {}).get("Code", "")

    def create(self, body: bytes) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.put_object(Bucket=self.bucket, Key=self.key, Body=body, IfNoneMatch="*")
        except ClientError as exn:
            if self._code(exn) in ("PreconditionFailed", "ConditionalRequestConflict"):
                return False
            raise OutputNotWritable(f"cannot write the output s3://{self.bucket}/{self.key.rsplit('/', 1)[0]}: "
                                    f"{self._code(exn) or exn}") from exn
        self.body = body
        return True

    def read(self) -> tuple[dict[str, Any], float] | None:
        from botocore.exceptions import ClientError

        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=self.key)
        except ClientError:
            return None
        age = (datetime.now(timezone.utc) - obj["LastModified"]).total_seconds()
        try:
            return json.loads(obj["Body"].read() or b"{}"), age
        except json.JSONDecodeError:
            return {}, age

    def renew(self) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self.key, Body=self.body)

    def remove(self) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.key)


class OutputLease:
    """Hold an output for the duration of a `with` block; renewed in a background thread."""

    def __init__(self, output: str, config_hash: str, s3: S3Options | None = None) -> None:
        self.output = output
        self.store = _S3Lease(output, s3) if is_s3(output) else _LocalLease(output)
        self.holder = _holder(config_hash)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> "OutputLease":
        body = json.dumps(self.holder).encode()
        for _ in range(2):   # a second try after removing a stale lease
            if self.store.create(body):
                self._thread = threading.Thread(target=self._renew, name="ovmine-lease", daemon=True)
                self._thread.start()
                return self
            current = self.store.read()
            if current is None:
                continue   # released between our create and read
            holder, age = current
            if not is_stale(holder, age):
                raise OutputBusy(_busy_message(self.output, holder))
            logger.warning("taking over the stale lease of %s (pid %s on %s, last renewed %.0f s ago)",
                           self.output, holder.get("pid"), holder.get("host"), age)
            self.store.remove()
        raise OutputBusy(f"{self.output}: could not take its lease (another run keeps taking it)")

    def _renew(self) -> None:
        while not self._stop.wait(RENEW_SECONDS):
            try:
                self.store.renew()
            except Exception as exn:   # a missed renewal only shortens the lease; the run goes on
                logger.warning("could not renew the lease of %s: %s", self.output, exn)

    def release(self) -> None:
        self._stop.set()
        current = self.store.read()
        if current is not None and current[0].get("token") == self.holder["token"]:
            self.store.remove()

    def __enter__(self) -> "OutputLease":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def lease_uri(output: str) -> str:
    return join(output, LEASE_NAME)
