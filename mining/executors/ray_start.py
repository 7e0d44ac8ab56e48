"""Starting or joining Ray, the one way mining and training do it.

A Ray that ovmine starts for itself serves this machine only, so it stays on loopback, and it goes with the
process that started it: a reaper (`mining.executors.reaper`) stops what Ray's own fate-sharing leaves behind
when that process is killed."""
from __future__ import annotations

import atexit
import logging
import os
import sys

import ray

from mining.executors.reaper import Reaper

# Ray rewrites 127.0.0.1 to the machine's network address, but leaves the rest of 127.0.0.0/8 (routed to lo on
# Linux) alone.
LOCAL_NODE_IP = "127.0.0.2" if sys.platform.startswith("linux") else None

_reaper: Reaper | None = None
# Ray says on every start that token authentication is on (a Ray of our own has it on, which is right): a
# notice, not a warning; `-v` shows it
TOKEN_NOTICE_LOGGER = "ray._private.authentication.authentication_token_setup"


def init_ray(address: str | None = None) -> bool:
    """Join the cluster at `address` (or RAY_ADDRESS), or start a Ray of our own; True when this call started
    or joined one (False: Ray was already initialised in this process)."""
    global _reaper
    if ray.is_initialized():
        return False
    own = address is None and not os.environ.get("RAY_ADDRESS")
    if not logging.getLogger("mining").isEnabledFor(logging.INFO):
        logging.getLogger(TOKEN_NOTICE_LOGGER).setLevel(logging.ERROR)
    local = {"_node_ip_address": LOCAL_NODE_IP} if own and LOCAL_NODE_IP else {}
    ray.init(address=address, ignore_reinit_error=True, include_dashboard=False, logging_level="WARNING",
             log_to_driver=True, **local)
    if own and _reaper is None:
        _reaper = Reaper()
        atexit.register(_release_reaper)   # an orderly exit shuts Ray down itself
    return True


def shutdown_ray() -> None:
    ray.shutdown()
    _release_reaper()


def _release_reaper() -> None:
    global _reaper
    if _reaper is not None:
        _reaper.release()
        _reaper = None
