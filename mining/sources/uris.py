"""Turn what the user typed (paths, directories, brace patterns, globs, s3:// prefixes) into shard URIs."""
from __future__ import annotations

import glob
import os

import braceexpand
import pyarrow.fs as pafs

from mining.storage import Location, S3Options, is_s3


class InputError(ValueError):
    """An input that names no readable shard."""


def shard_stem(uri: str) -> str:
    """The output name of a shard: its file name without the .tar suffix."""
    name = uri.rstrip("/").rsplit("/", 1)[-1]
    return name[: -len(".tar")] if name.endswith(".tar") else name


def _list_dir(uri: str, s3: S3Options | None) -> list[str]:
    folder = Location.of(uri, s3).absolute()
    return [shard.uri for shard in folder.list(".tar")]


def _expand_one(pattern: str, s3: S3Options | None) -> list[str]:
    found: list[str] = []
    for uri in braceexpand.braceexpand(pattern):
        if is_s3(uri):
            kind = Location.of(uri, s3).kind()
            if kind == pafs.FileType.File:
                found.append(uri)
            elif kind == pafs.FileType.Directory or uri.endswith("/"):
                found.extend(_list_dir(uri, s3))
            else:
                raise InputError(f"input {uri} does not exist")
        elif os.path.isdir(uri):
            listed = _list_dir(uri, s3)
            if not listed:
                inner = os.path.join(uri, "shards")   # a toy world's folder, or an output's
                hint = f": did you mean {inner}?" if os.path.isdir(inner) and _list_dir(inner, s3) else ""
                raise InputError(f"input directory {uri} holds no .tar shard{hint}")
            found.extend(listed)
        elif any(ch in uri for ch in "*?["):
            matched = sorted(m for m in glob.glob(uri) if m.endswith(".tar"))
            if not matched:
                raise InputError(f"input pattern {uri} matches no .tar shard")
            found.extend(os.path.abspath(m) for m in matched)
        elif os.path.isfile(uri):
            found.append(os.path.abspath(uri))
        else:
            raise InputError(f"input {uri} does not exist")
    return found


def expand_inputs(patterns: list[str], s3: S3Options | None = None) -> list[str]:
    """All shard URIs, in order, each once. Two shards with the same file name would write the same output
    shard, so that is refused up front."""
    if not patterns:
        raise InputError("no input given (--input PATH|DIR|PATTERN|s3://...)")
    uris = list(dict.fromkeys(uri for pattern in patterns for uri in _expand_one(pattern, s3)))  # linear de-dup
    if not uris:
        raise InputError(f"inputs {patterns} name no shard")
    stems: dict[str, str] = {}
    for uri in uris:
        stem = shard_stem(uri)
        if stem in stems:
            raise InputError(f"two input shards would write the same output name {stem!r}: {stems[stem]} and {uri}")
        stems[stem] = uri
    return uris
