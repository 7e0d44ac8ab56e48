"""Check a finished output against schemas/ and against itself: every record validates, the pairs tables have
the pairs schema and agree with the records, and the manifest's counts add up."""
from __future__ import annotations

import json
from typing import Any

from mining.schemas import validate, validate_pairs_table
from mining.sinks.layout import marker_uri
from mining.sinks.reader import read_manifest, read_pairs, read_shard_documents, shard_files
from mining.storage import S3Options, read_bytes


def check_output(output: str, s3: S3Options | None = None) -> dict[str, Any]:
    """Raises ValueError (or SchemaError) on the first inconsistency; returns the figures it checked."""
    manifest = read_manifest(output, s3)
    validate("manifest", manifest)
    records = 0
    pairs_in_records = 0
    for uri in shard_files(output, s3):
        for doc, _ in read_shard_documents(uri, s3):
            validate("record", doc)
            records += 1
            pairs_in_records += len(doc["pairs"])
    table = read_pairs(output, s3)
    if table.num_rows:
        validate_pairs_table(table)
    totals = manifest["totals"]
    problems = []
    if totals["images_in"] != totals["images_with_pairs"] + sum(totals["drops"].values()):
        problems.append(f"images_in {totals['images_in']} != images_with_pairs {totals['images_with_pairs']} "
                        f"+ drops {sum(totals['drops'].values())}")
    if records != totals["images_with_pairs"]:
        problems.append(f"{records} records in shards but manifest says {totals['images_with_pairs']} images")
    if not (pairs_in_records == table.num_rows == totals["pairs"]):
        problems.append(f"pairs disagree: records {pairs_in_records}, parquet {table.num_rows}, "
                        f"manifest {totals['pairs']}")
    for shard in manifest["shards"]:
        marker = json.loads(read_bytes(marker_uri(output, shard["name"]), s3))
        if marker["config_hash"] != manifest["config_hash"]:
            problems.append(f"shard {shard['name']} was mined with config {marker['config_hash']}")
    if problems:
        raise ValueError("output is inconsistent:\n  " + "\n  ".join(problems))
    return {"records": records, "pairs": table.num_rows, "shards": len(manifest["shards"]), **totals}
