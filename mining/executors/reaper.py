"""A local Ray that ovmine starts goes with its driver, even a SIGKILLed one.

Ray's own fate-sharing stops the GCS, the raylet and the workers within seconds of a killed driver, but its
dashboard and runtime-env agents first try to tell the (dead) GCS why their raylet died and wait 60 s for it.
So, while ovmine holds a local Ray, a small reaper process watches the driver through a pipe: it notes the
driver's descendants every second, and when the pipe closes without a "done" (the driver died without shutting
Ray down) it kills those still alive. Processes are matched by pid and start time, so a reused pid is never hit.

Run as `python -m mining.executors.reaper DRIVER_PID` with the pipe's read end as stdin.
"""
from __future__ import annotations

import os
import select
import subprocess
import sys

import psutil

POLL_SECONDS = 1.0
DONE = b"done\n"


class Reaper:
    """The driver's side: start it once Ray is up, `release()` it after a clean `ray.shutdown()`."""

    def __init__(self) -> None:
        read_end, self._write_end = os.pipe()   # the write end is not inherited: only this process holds it
        self._proc = subprocess.Popen([sys.executable, "-m", "mining.executors.reaper", str(os.getpid())],
                                      stdin=read_end, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                      start_new_session=True)   # outside the terminal's Ctrl-C group
        os.close(read_end)

    def release(self) -> None:
        """Ray was shut down in order: the reaper leaves without killing anything."""
        if self._write_end < 0:
            return
        try:
            os.write(self._write_end, DONE)
        finally:
            os.close(self._write_end)
            self._write_end = -1
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()


def _descendants(driver: psutil.Process) -> dict[int, float]:
    found = {}
    for child in driver.children(recursive=True):
        if child.pid == os.getpid():   # the reaper is the driver's child too
            continue
        try:
            found[child.pid] = child.create_time()
        except psutil.Error:
            continue
    return found


def _kill(seen: dict[int, float]) -> None:
    for pid, started in seen.items():
        try:
            process = psutil.Process(pid)
            if process.create_time() == started:
                process.kill()
        except psutil.Error:
            continue


def watch(driver_pid: int, pipe: int) -> None:
    """Until the pipe says done (return) or closes (kill what the driver started)."""
    seen: dict[int, float] = {}
    try:
        driver = psutil.Process(driver_pid)
    except psutil.NoSuchProcess:
        return
    while True:
        ready, _, _ = select.select([pipe], [], [], POLL_SECONDS)
        if ready:
            data = os.read(pipe, 64)
            if data.startswith(DONE):
                return
            if not data:   # the driver is gone and did not shut Ray down
                _kill(seen)
                return
        try:
            seen.update(_descendants(driver))
        except psutil.NoSuchProcess:
            _kill(seen)
            return


if __name__ == "__main__":
    watch(int(sys.argv[1]), sys.stdin.fileno())
