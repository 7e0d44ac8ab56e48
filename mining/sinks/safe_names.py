"""The one way a key, noun or shard name becomes a file name: it cannot leave its folder, whatever it holds.

Keys come from input tars (a hostile tar may name a member `a/../../../pwned/x.jpg`), so they are never used as
paths. Anything but letters, digits, '-', '_' and inner dots is replaced; a name that had to change, or that is
too long for a file system, gets a digest of the original so that distinct keys stay distinct files."""
from __future__ import annotations

import hashlib
import re

MAX_NAME = 180            # bytes; ext4 and S3 key parts allow 255, leave room for suffixes
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def safe_file_name(*parts: str, suffix: str = "") -> str:
    """`parts` joined with '_' as one safe file name ending with `suffix` (e.g. '.jpg')."""
    original = "_".join(parts)
    name = _UNSAFE.sub("_", original).strip(".") or "_"
    name = re.sub(r"\.{2,}", "_", name)          # no '..' anywhere
    # ('a_b', 'c') and ('a', 'b_c') join alike: a part holding the separator also gets the digest
    ambiguous = len(parts) > 1 and any("_" in p for p in parts)
    if name != original or ambiguous or len(name) + len(suffix) > MAX_NAME:
        digest = hashlib.sha1("\0".join(parts).encode("utf-8", "surrogatepass")).hexdigest()[:12]
        name = f"{name[: MAX_NAME - len(suffix) - 13]}-{digest}"
    return name + suffix
