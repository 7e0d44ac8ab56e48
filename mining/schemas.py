"""Versioned schemas of what ovmine writes, loaded from the repository's schemas/ (or the copy packed into
the wheel), and validation at the writer's boundary."""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema
import pyarrow as pa

RECORD_VERSION = "ovmine.record/1"
PAIRS_VERSION = "ovmine.pairs/1"
MANIFEST_VERSION = "ovmine.manifest/1"
MARKER_VERSION = "ovmine.shard/1"
STATUS_VERSION = "ovmine.status/1"
DROPPED_VERSION = "ovmine.dropped/1"


class SchemaError(ValueError):
    """Something we were about to write does not match its schema: a bug, never user input."""


def schema_dir() -> Path:
    here = Path(__file__).resolve().parent
    for candidate in (here / "_schemas", here.parent / "schemas"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("ovmine schemas not found (expected mining/_schemas or ./schemas)")


@lru_cache(maxsize=None)
def load_schema(name: str) -> dict[str, Any]:
    return json.loads((schema_dir() / f"{name}.v1.schema.json").read_text())


@lru_cache(maxsize=None)
def validator(name: str) -> jsonschema.protocols.Validator:
    schema = load_schema(name)
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema)


def validate(name: str, document: dict[str, Any]) -> None:
    errors = sorted(validator(name).iter_errors(document), key=lambda e: list(e.path))
    if errors:
        where = "/".join(str(p) for p in errors[0].path) or "<root>"
        raise SchemaError(f"{name} does not match schemas/{name}.v1.schema.json at {where}: {errors[0].message}")


_ARROW_TYPES = {"string": pa.string(), "int32": pa.int32(), "int64": pa.int64(), "float32": pa.float32(),
                "list<float32>": pa.list_(pa.float32())}


@lru_cache(maxsize=None)
def arrow_schema(name: str) -> pa.Schema:
    """The pyarrow schema of a parquet table described in schemas/<name>.v1.schema.json."""
    columns = load_schema(name)["columns"]
    return pa.schema([pa.field(c["name"], _ARROW_TYPES[c["type"]], nullable=c.get("nullable", False))
                      for c in columns])


def pairs_arrow_schema() -> pa.Schema:
    return arrow_schema("pairs")


def validate_table(name: str, table: pa.Table) -> None:
    if not table.schema.equals(arrow_schema(name), check_metadata=False):
        raise SchemaError(f"{name} table schema differs from schemas/{name}.v1.schema.json:\n{table.schema}")


def validate_pairs_table(table: pa.Table) -> None:
    validate_table("pairs", table)
