"""Read image–caption shards: webdataset tars as img2dataset writes them, on local disk or s3://."""
from mining.sources.shards import read_shard
from mining.sources.uris import expand_inputs, shard_stem

__all__ = ["expand_inputs", "read_shard", "shard_stem"]
