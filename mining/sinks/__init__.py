"""Curated shard writer and reader, pairs parquet, per-shard markers and the run manifest."""
