"""s3:// in and out against a real S3-speaking server (moto's standalone server) on 127.0.0.1."""
import json
import os
import subprocess
import sys

import boto3
import pytest
import torch

from mining.config import build_config
from mining.pipeline import run_mining
from mining.sinks.reader import iter_records, read_manifest, read_pairs
from mining.toyworld.make import make_shards
from mining.postrun.validate import check_output

from conftest import TINY


@pytest.fixture
def bucket(s3_endpoint, tmp_path, request):
    name = request.node.name.lower().replace("_", "-")[:50]
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    client.create_bucket(Bucket=name)
    for path in make_shards(tmp_path / "src", shards=2, per_shard=3, size=96):
        client.upload_file(str(path), name, f"data/{path.name}")
    return client, name


def s3_config(endpoint, **extra):
    tree = {k: dict(v) for k, v in TINY.items()}
    tree["storage"] = {"endpoint_url": endpoint}
    for k, v in extra.items():
        tree.setdefault(k, {}).update(v)
    return build_config(tree)


def test_mine_from_s3_to_s3(s3_endpoint, bucket, tmp_path):
    client, name = bucket
    cfg = s3_config(s3_endpoint, execution={"chunk_size": 2})   # shards of 3: written as two parts, then joined
    out = f"s3://{name}/mined"
    manifest = run_mining(cfg, [f"s3://{name}/data/{{00000..00001}}.tar"], out)
    assert manifest["totals"]["images_in"] == 6
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=name, Prefix="mined/")["Contents"]}
    assert {"mined/manifest.json", "mined/shards/00000.tar", "mined/pairs/00001.parquet",
            "mined/_done/00000.json"} <= keys
    assert not [k for k in keys if k.startswith("mined/_parts/")], "joined parts are removed from the bucket"
    from mining.storage import Location, S3Options

    s3 = S3Options(endpoint_url=s3_endpoint)
    assert len(list(iter_records(Location(out, s3)))) == manifest["totals"]["images_with_pairs"]
    assert read_pairs(Location(out, s3)).num_rows == manifest["totals"]["pairs"]
    check_output(Location(out, s3))
    # a prefix lists its shards; credentials never reach the manifest
    again = run_mining(cfg, [f"s3://{name}/data/"], str(tmp_path / "local-out"))
    assert again["totals"] == manifest["totals"]
    assert "testing" not in json.dumps(read_manifest(Location(out, s3)))


def test_missing_s3_input_fails_clearly(s3_endpoint, bucket, tmp_path):
    _, name = bucket
    from mining.sources.uris import InputError

    with pytest.raises(InputError, match="does not exist"):
        run_mining(s3_config(s3_endpoint), [f"s3://{name}/data/99999.tar"], str(tmp_path / "o"))


def test_clip_weights_from_s3(s3_endpoint, bucket, tmp_path, monkeypatch):
    from safetensors.torch import save_file

    from mining.regions.clip_loader import load_clip
    import mining.regions.clip_loader as loader

    client, name = bucket
    monkeypatch.setattr(loader, "CACHE_DIR", tmp_path / "cache")
    reference = load_clip(s3_config(s3_endpoint).regions, torch.device("cpu")).model
    with torch.no_grad():
        for p in reference.parameters():
            p.mul_(1.5)
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(path))
    client.upload_file(str(path), name, "models/tiny.safetensors")
    cfg = s3_config(s3_endpoint, regions={"pretrained": f"s3://{name}/models/tiny.safetensors"})
    from mining.storage import S3Options

    loaded = load_clip(cfg.regions, torch.device("cpu"), S3Options(endpoint_url=s3_endpoint)).model
    for a, b in zip(reference.state_dict().values(), loaded.state_dict().values()):
        torch.testing.assert_close(a, b)


def test_cli_on_ray_reads_s3_with_endpoint_from_environment(s3_endpoint, bucket, tmp_path):
    _, name = bucket
    env = dict(os.environ, AWS_ENDPOINT_URL=s3_endpoint)
    result = subprocess.run(
        [sys.executable, "-m", "mining.cli", "mine", "--config", "configs/tiny.yaml",
         "--input", f"s3://{name}/data/", "--output", f"s3://{name}/ray-out", "--json"],
        capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1])["totals"]["images_in"] == 6
    assert os.environ["AWS_SECRET_ACCESS_KEY"] not in result.stdout + result.stderr, "credentials never logged"



def test_throttled_s3_is_retried(s3_endpoint, bucket, tmp_path):
    from flaky_s3 import FlakyS3Proxy
    from mining.storage import Location, S3Options

    _, name = bucket
    reference = run_mining(s3_config(s3_endpoint), [f"s3://{name}/data/"], f"s3://{name}/steady")
    # each injected 503 costs the SDK's backoff (~0.6 s, most of this test's time): every 5th request gives ~30
    proxy = FlakyS3Proxy(s3_endpoint, fail_every=5, methods=("GET", "HEAD", "PUT", "POST"))
    try:
        manifest = run_mining(s3_config(proxy.endpoint), [f"s3://{name}/data/"], f"s3://{name}/throttled")
    finally:
        proxy.close()
    assert proxy.injected >= 10, "throttling was injected"
    assert manifest["totals"] == reference["totals"]
    s3 = S3Options(endpoint_url=s3_endpoint)
    assert sorted((r.key, len(r.pairs)) for r in iter_records(Location(f"s3://{name}/throttled", s3))) == \
        sorted((r.key, len(r.pairs)) for r in iter_records(Location(f"s3://{name}/steady", s3)))
    check_output(Location(f"s3://{name}/throttled", s3))
    dead = FlakyS3Proxy(s3_endpoint, fail_every=1, methods=("GET", "HEAD", "PUT", "POST"))
    try:
        with pytest.raises(OSError):   # an endpoint that never recovers gives an error, not a hang
            run_mining(s3_config(dead.endpoint, storage={"max_attempts": 2}), [f"s3://{name}/data/"],
                       str(tmp_path / "never"))
    finally:
        dead.close()


def test_toy_world_and_eval_on_s3(s3_endpoint, bucket, tmp_path):
    from mining.evaluation.run import evaluate
    from mining.storage import Location, S3Options
    from mining.toyworld.make import make_world

    _, name = bucket
    s3 = S3Options(endpoint_url=s3_endpoint)
    world = make_world(f"s3://{name}/world", shards=1, per_shard=4, seed=2, s3=s3, progress=False)
    cfg = s3_config(s3_endpoint, match={"min_similarity": -1.0})
    run_mining(cfg, [world["shards_uri"] + "/"], f"s3://{name}/mined-world")
    remote = evaluate(Location(f"s3://{name}/mined-world", s3), Location(world["ground_truth"], s3), progress=False)
    make_world(str(tmp_path / "world"), shards=1, per_shard=4, seed=2, progress=False)
    run_mining(cfg, [str(tmp_path / "world" / "shards")], str(tmp_path / "mined"))
    local = evaluate(str(tmp_path / "mined"), str(tmp_path / "world" / "ground_truth.json"), progress=False)
    assert remote["images"] == 4 and remote["minable"] > 0
    for field in ("pairs", "correct_pairs", "minable", "recalled", "per_category"):
        assert remote[field] == local[field], field


def test_s3_output_has_one_writer_at_a_time(s3_endpoint, bucket):
    from mining.sinks.lease import OutputBusy, OutputLease
    from mining.storage import Location, S3Options

    client, name = bucket
    s3 = S3Options(endpoint_url=s3_endpoint)
    with OutputLease(Location(f"s3://{name}/mined", s3), "0" * 16):   # a conditional create: the second one gets 412
        assert "mined/_lease.json" in {o["Key"] for o in client.list_objects_v2(Bucket=name)["Contents"]}
        with pytest.raises(OutputBusy, match="is being written by another ovmine run"):
            run_mining(s3_config(s3_endpoint), [f"s3://{name}/data/"], f"s3://{name}/mined")
    assert "mined/_lease.json" not in {o["Key"] for o in client.list_objects_v2(Bucket=name)["Contents"]}


def test_missing_output_bucket_fails_fast_before_models_load(s3_endpoint, bucket, monkeypatch):
    import time

    import mining.pipeline as pipeline
    from mining.sinks.lease import OutputNotWritable

    _, name = bucket
    monkeypatch.setattr(pipeline, "build_stages", lambda cfg: pytest.fail("models were loaded first"))
    start = time.perf_counter()
    with pytest.raises(OutputNotWritable, match="NoSuchBucket"):
        run_mining(s3_config(s3_endpoint), [f"s3://{name}/data/"], "s3://no-such-bucket-here/mined")
    assert time.perf_counter() - start < 10


def test_s3_object_deleted_after_planning_is_not_committed(s3_endpoint, bucket, monkeypatch):
    import mining.sources.shards as shards_module
    from mining.storage import Location, S3Options

    client, name = bucket
    monkeypatch.setattr(shards_module, "READ_ATTEMPTS", 2)
    saved = client.get_object(Bucket=name, Key="data/00001.tar")["Body"].read()

    def delete_next(marker):
        client.delete_object(Bucket=name, Key="data/00001.tar")
    out = f"s3://{name}/mined"
    manifest = run_mining(s3_config(s3_endpoint), [f"s3://{name}/data/"], out, on_shard=delete_next)
    assert [f["name"] for f in manifest["failed_shards"]] == ["00001"]
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=name, Prefix="mined/")["Contents"]}
    assert "mined/_done/00000.json" in keys and "mined/_done/00001.json" not in keys
    client.put_object(Bucket=name, Key="data/00001.tar", Body=saved)
    again = run_mining(s3_config(s3_endpoint), [f"s3://{name}/data/"], out)
    assert "failed_shards" not in again and again["totals"]["images_in"] == 6
    check_output(Location(out, S3Options(endpoint_url=s3_endpoint)))


def test_concurrent_s3_weight_fetches_do_not_race(s3_endpoint, bucket, tmp_path, monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    import mining.regions.clip_loader as loader
    from mining.storage import Location, S3Options

    client, name = bucket
    payload = os.urandom(3 << 20)
    client.put_object(Bucket=name, Key="weights/w.safetensors", Body=payload)
    monkeypatch.setattr(loader, "CACHE_DIR", tmp_path / "cache")
    s3 = S3Options(endpoint_url=s3_endpoint)
    with ThreadPoolExecutor(6) as pool:
        paths = list(pool.map(lambda _: loader.fetch_s3(Location(f"s3://{name}/weights/w.safetensors", s3)), range(6)))
    assert len(set(paths)) == 1 and paths[0].read_bytes() == payload
    assert [p.name for p in paths[0].parent.iterdir()] == [paths[0].name], "no temporary left behind"


def test_s3_lease_takeover_is_conditional_and_the_old_holder_cannot_renew(s3_endpoint, bucket, monkeypatch):
    import mining.sinks.lease as lease_module
    from mining.sinks.lease import OutputBusy, OutputLease
    from mining.storage import Location, S3Options

    _, name = bucket
    s3 = S3Options(endpoint_url=s3_endpoint)
    old = OutputLease(Location(f"s3://{name}/mined", s3), "0" * 16)
    old.store.create(json.dumps(old.holder | {"host": "elsewhere"}).encode())
    monkeypatch.setattr(lease_module, "STALE_SECONDS", -1.0)   # as if it had not been renewed for long
    with OutputLease(Location(f"s3://{name}/mined", s3), "1" * 16) as new:
        with pytest.raises(OutputBusy, match="taken over"):
            old.store.renew()
        holder, _ = new.store.read()
        assert holder["token"] == new.holder["token"]
