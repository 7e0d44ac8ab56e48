"""A user's data is never lost, corrupted or misplaced: inputs are never written over, a shard that could not
be read is never committed, one writer holds an output at a time, an output is all its committed shards, every
sample's fate is recorded, and failed writes leave nothing behind."""
import json
import os
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest

import mining.pipeline as pipeline
import mining.sources.shards as shards_module
from conftest import write_tar
from mining.pipeline import run_mining
from mining.records import Drop
from mining.sinks.guard import OutputHoldsInputs
from mining.sinks.lease import OutputBusy, OutputLease, OutputNotWritable
from mining.sources import read_shard
from mining.toyworld.make import make_shards
from mining.postrun.validate import check_output


def ovmine(*args):
    return subprocess.run([sys.executable, "-m", "mining.cli", *args], capture_output=True, text=True, timeout=600)


def no_models(monkeypatch):
    """Fail the test if a run gets as far as building (loading) its stages."""
    def refuse(cfg):
        raise AssertionError("stages were built: the check came too late")
    monkeypatch.setattr(pipeline, "build_stages", refuse)


# 1. inputs are never outputs

def test_mining_into_the_inputs_parent_is_refused_and_the_input_survives(tmp_path, tiny_cfg, monkeypatch):
    same = tmp_path / "same"
    paths = make_shards(same / "shards", shards=2, per_shard=2, size=64)
    before = {p: p.read_bytes() for p in paths}
    no_models(monkeypatch)
    with pytest.raises(OutputHoldsInputs, match="holds the input shard"):
        run_mining(tiny_cfg(), [str(same / "shards") + "/"], str(same))
    with pytest.raises(OutputHoldsInputs):   # the same folder through a relative, dotted path
        monkeypatch.chdir(same / "shards")
        run_mining(tiny_cfg(), ["."], "../shards/..")
    assert {p: p.read_bytes() for p in paths} == before
    assert not (same / "manifest.json").exists() and not (same / "_done").exists()


def test_cli_refuses_an_output_that_holds_the_inputs(tmp_path):
    make_shards(tmp_path / "same" / "shards", shards=1, per_shard=2, size=64)
    result = ovmine("mine", "--config", "configs/tiny.yaml", "--input", str(tmp_path / "same" / "shards"),
                    "--output", str(tmp_path / "same"), "--executor", "local")
    assert result.returncode == 1 and "holds the input shard" in result.stderr and "Traceback" not in result.stderr


# 2. unreadable shards are not committed

def test_a_shard_deleted_after_planning_is_not_committed_and_a_rerun_mines_it(tmp_path, tiny_cfg, monkeypatch):
    monkeypatch.setattr(shards_module, "READ_ATTEMPTS", 1)
    paths = make_shards(tmp_path / "in", shards=3, per_shard=2, size=64)
    saved = paths[1].read_bytes()

    def delete_next(marker):
        if marker["name"] == "00000":
            paths[1].unlink()
    manifest = run_mining(tiny_cfg(), [str(tmp_path / "in")], str(tmp_path / "out"), on_shard=delete_next)
    assert [s["name"] for s in manifest["shards"]] == ["00000", "00002"]
    assert [f["name"] for f in manifest["failed_shards"]] == ["00001"]
    assert "FileNotFoundError" in manifest["failed_shards"][0]["error"]
    assert not (tmp_path / "out" / "_done" / "00001.json").exists()
    paths[1].write_bytes(saved)
    mined = []
    again = run_mining(tiny_cfg(), [str(tmp_path / "in")], str(tmp_path / "out"), on_shard=lambda m: mined.append(m["name"]))
    assert mined == ["00001"] and "failed_shards" not in again
    assert again["totals"]["images_in"] == 6
    check_output(str(tmp_path / "out"))


def test_a_connection_reset_mid_shard_is_retried_then_not_committed(tmp_path, monkeypatch):
    shard = write_tar(tmp_path / "s.tar", [("k1.jpg", b"x"), ("k1.txt", b"a cat"), ("k2.jpg", b"y"),
                                           ("k2.txt", b"a dog")])
    real = shards_module._members
    calls = []

    def flaky(shard):
        calls.append(shard)
        for n, member in enumerate(real(shard)):
            if n == 2 and len(calls) < 3:
                raise ConnectionResetError("connection reset by peer")
            yield member
    monkeypatch.setattr(shards_module, "_members", flaky)
    samples = read_shard(str(shard), retry_delay=0.01)
    assert len(calls) == 3 and [s.key for s in samples] == ["k1", "k2"], "a transient failure is retried"
    calls.clear()
    monkeypatch.setattr(shards_module, "_members", lambda shard: (_ for _ in ()).throw(ConnectionResetError("gone")))
    failed = read_shard(str(shard), attempts=2, retry_delay=0.01)
    assert len(failed) == 1 and failed[0].sentinel and "ConnectionResetError" in failed[0].read_error


def test_cli_exits_non_zero_naming_the_failed_shard(tmp_path, monkeypatch, capsys):
    from mining.cli import main

    make_shards(tmp_path / "in", shards=2, per_shard=2, size=64)
    monkeypatch.setattr(shards_module, "READ_ATTEMPTS", 1)
    real = shards_module._members

    def lost(shard):
        if shard.name == "00001.tar":
            raise FileNotFoundError(f"{shard} was deleted")
        return real(shard)
    monkeypatch.setattr(shards_module, "_members", lost)
    code = main(["mine", "--config", "configs/tiny.yaml", "--input", str(tmp_path / "in"), "--output",
                 str(tmp_path / "out"), "--executor", "local", "--json"])
    out, err = capsys.readouterr()
    assert code == 1
    summary = json.loads(out.strip().splitlines()[-1])
    assert [f["name"] for f in summary["failed_shards"]] == ["00001"] and summary["totals"]["images_in"] == 2
    assert "00001.tar" in err and "rerun the same command" in err


# 3. one writer per output

def test_a_second_run_is_refused_while_the_output_is_held(tmp_path, tiny_cfg, monkeypatch):
    make_shards(tmp_path / "in", shards=1, per_shard=2, size=64)
    out = tmp_path / "out"
    no_models(monkeypatch)
    with OutputLease(str(out), "0" * 16):
        with pytest.raises(OutputBusy, match=f"pid {os.getpid()}"):
            run_mining(tiny_cfg(), [str(tmp_path / "in")], str(out))
    assert not (out / "_lease.json").exists(), "released at the end"


def test_a_dead_runs_lease_is_taken_over(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    out = tmp_path / "out"
    out.mkdir()
    lease = OutputLease(str(out), "0" * 16)
    (out / "_lease.json").write_text(json.dumps({**lease.holder, "pid": int(dead.stdout), "token": "old"}))
    with lease:
        assert json.loads((out / "_lease.json").read_text())["token"] == lease.holder["token"]


def test_two_cli_runs_with_different_configs_into_one_output(tmp_path):
    make_shards(tmp_path / "in", shards=2, per_shard=2, size=64)
    base = [sys.executable, "-m", "mining.cli", "mine", "--config", "configs/tiny.yaml", "--input",
            str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--executor", "local"]
    first = subprocess.Popen(base, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not (tmp_path / "out" / "_lease.json").exists() and time.time() < deadline:
        time.sleep(0.05)
    second = ovmine(*base[3:], "--set", "match.min_similarity=0.5")
    assert second.returncode == 1 and "is being written by another ovmine run" in second.stderr
    assert first.wait(timeout=300) == 0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert len(manifest["shards"]) == 2


# 4. an output is all its committed shards

def test_subset_and_limited_reruns_keep_the_whole_output(tmp_path, tiny_cfg):
    make_shards(tmp_path / "in", shards=3, per_shard=4, size=64)
    out = str(tmp_path / "out")
    run_mining(tiny_cfg(), [str(tmp_path / "in")], out)
    mined = []
    subset = run_mining(tiny_cfg(), [str(tmp_path / "in" / "00000.tar")], out, on_shard=lambda m: mined.append(m))
    assert mined == [] and subset["totals"]["images_in"] == 12 and len(subset["shards"]) == 3
    limited = run_mining(tiny_cfg(), [str(tmp_path / "in")], out, limit=6, on_shard=lambda m: mined.append(m))
    assert mined == [], "a whole committed shard stands for any --limit cut of it"
    assert limited["totals"]["images_in"] == 12
    figures = check_output(out)
    assert figures["records"] == figures["images_with_pairs"]
    from mining.postrun.stats import compute_stats

    assert compute_stats(out)["images_in"] == 12


def test_validate_names_committed_shards_missing_from_the_manifest(tmp_path, tiny_cfg):
    make_shards(tmp_path / "in", shards=2, per_shard=2, size=64)
    out = tmp_path / "out"
    run_mining(tiny_cfg(), [str(tmp_path / "in")], str(out))
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["shards"] = manifest["shards"][:1]
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="missing from the manifest"):
        check_output(str(out))


# 5. duplicate keys

def test_duplicate_keys_keep_the_first_sample_and_count_the_rest(tmp_path):
    shard = write_tar(tmp_path / "d.tar", [("k1.jpg", b"first"), ("k1.txt", b"a cat"), ("k2.jpg", b"y"),
                                           ("k2.txt", b"a dog"), ("k1.jpg", b"second"), ("k1.txt", b"a rat")])
    samples = read_shard(str(shard))
    assert [(s.key, s.drop) for s in samples] == [("k1", None), ("k2", None), ("k1", Drop.DUPLICATE_KEY)]
    assert samples[0].members == {"jpg": b"first", "txt": b"a cat"}


def test_dotted_members_belong_to_their_key_and_plain_members_win(tmp_path):
    # webdataset's rule: the key runs to the first dot. a.b.jpg is key a's image; extra dotted members
    # (a.tags.txt, a.x.jpg) are not samples of their own, and a plain a.txt wins over a.tags.txt
    shard = write_tar(tmp_path / "d.tar", [("a.b.jpg", b"one"), ("a.tags.txt", b"tag tag"), ("a.txt", b"a cat"),
                                           ("a.x.jpg", b"two"), ("k.jpg", b"k"), ("k.txt", b"a dog")])
    samples = read_shard(str(shard))
    assert [(s.key, s.drop) for s in samples] == [("a", None), ("k", None)]
    assert samples[0].members == {"jpg": b"one", "txt": b"a cat"}


# 6. failed writes leave nothing behind

def test_a_failed_write_leaves_no_temporary_and_says_what_to_do(tmp_path, tiny_cfg, monkeypatch):
    make_shards(tmp_path / "in", shards=1, per_shard=2, size=64)
    out = tmp_path / "out"
    real_replace = os.replace

    def disk_full(src, dst):
        if str(dst).endswith(".parquet"):
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)
    monkeypatch.setattr(os, "replace", disk_full)
    with pytest.raises(OSError, match=r"could not write .*pairs/00000.parquet: No space left on device.*rerun"):
        run_mining(tiny_cfg(), [str(tmp_path / "in")], str(out))
    monkeypatch.setattr(os, "replace", real_replace)
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]
    assert not (out / "_lease.json").exists()
    (out / "shards" / "00000.tar.tmp-999-1").write_bytes(b"left by a killed run")
    run_mining(tiny_cfg(), [str(tmp_path / "in")], str(out))
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name], "a rerun sweeps stale temporaries"


# 8. every sample's fate

def test_status_table_records_every_sample_and_validate_checks_it(tmp_path, tiny_cfg):
    make_shards(tmp_path / "in", shards=1, per_shard=4, size=64)
    write_tar(tmp_path / "in" / "00001.tar", [("ok.jpg", b"not an image"),
                                              ("ok.txt", b"a red square"), ("nocap.jpg", b"x")])
    out = tmp_path / "out"
    manifest = run_mining(tiny_cfg(), [str(tmp_path / "in")], str(out))
    status = pq.read_table(out / "status" / "00001.parquet").to_pylist()
    assert [(r["key"], r["status"]) for r in status] == [("ok", "decode_error"), ("nocap", "no_caption")]
    assert status[0]["detail"]
    first = pq.read_table(out / "status" / "00000.parquet")
    assert first.num_rows == 4 and manifest["totals"]["images_in"] == 6
    check_output(str(out))
    pq.write_table(first.slice(0, 3), out / "status" / "00000.parquet")
    with pytest.raises(ValueError, match="status has 3 samples, marker says 4"):
        check_output(str(out))


# 10. output problems surface before any model loads

def test_an_output_that_cannot_be_written_fails_before_models_load(tmp_path, tiny_cfg, monkeypatch):
    make_shards(tmp_path / "in", shards=1, per_shard=2, size=64)
    (tmp_path / "a-file").write_text("not a folder")
    no_models(monkeypatch)
    with pytest.raises(OutputNotWritable, match="cannot write the output"):
        run_mining(tiny_cfg(), [str(tmp_path / "in")], str(tmp_path / "a-file"))
    with pytest.raises(OutputNotWritable):
        run_mining(tiny_cfg(), [str(tmp_path / "in")], str(tmp_path / "a-file" / "out"))


# 9. keys never become paths

def test_export_writes_hostile_and_long_keys_inside_the_images_folder(tmp_path, tiny_cfg):
    from mining.postrun.export_coco import export_coco
    from conftest import jpeg_bytes, scene

    hostile, long_key = "a/../../../pwned/PWNED", "k" * 300
    write_tar(tmp_path / "in" / "00000.tar", [(f"{hostile}.jpg", jpeg_bytes(scene(1))),
                                              (f"{hostile}.txt", b"a red square on grass"),
                                              (f"{long_key}.jpg", jpeg_bytes(scene(2))),
                                              (f"{long_key}.txt", b"a blue circle on sand")])
    run_mining(tiny_cfg(), [str(tmp_path / "in")], str(tmp_path / "out"))
    images = tmp_path / "export" / "images"
    counts = export_coco(str(tmp_path / "out"), str(tmp_path / "export" / "coco.json"), images_dir=str(images))
    assert counts["images_written"] == 2
    written = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.jpg"))
    assert all(p.parts[:2] == ("export", "images") for p in written), written
    assert not (tmp_path / "pwned").exists() and not list(tmp_path.rglob("PWNED*"))
    doc = json.loads((tmp_path / "export" / "coco.json").read_text())
    assert sorted(i["file_name"] for i in doc["images"]) == sorted(p.name for p in images.iterdir())
    assert {i["ovmine_key"] for i in doc["images"]} == {hostile, long_key}


def test_safe_file_names_stay_distinct_and_short():
    from mining.sinks.safe_names import safe_file_name

    names = {safe_file_name("s", k, suffix=".jpg") for k in ["a/b", "a_b", "a..b", "..", "k" * 300, "k" * 301]}
    assert len(names) == 6
    assert all("/" not in n and ".." not in n and len(n) <= 180 for n in names)
    assert safe_file_name("00000", "key-1") == "00000_key-1"


# 14. a rerun with nothing to do reads the manifest, not every marker

def test_a_rerun_with_nothing_to_mine_reads_no_marker(tmp_path, tiny_cfg, monkeypatch):
    import mining.sinks.commits as commits

    make_shards(tmp_path / "in", shards=3, per_shard=2, size=64)
    out = str(tmp_path / "out")
    first = run_mining(tiny_cfg(), [str(tmp_path / "in")], out)
    monkeypatch.setattr(commits, "committed_markers", lambda *a, **k: pytest.fail("read every marker"))
    monkeypatch.setattr(pipeline, "committed_markers", commits.committed_markers)
    again = run_mining(tiny_cfg(), [str(tmp_path / "in")], out)
    assert again == first, "the manifest stands, with the throughput of the run that mined"
    monkeypatch.undo()
    (tmp_path / "out" / "_done" / "00001.json").unlink()   # the listing no longer matches: markers are read
    mined = []
    run_mining(tiny_cfg(), [str(tmp_path / "in")], out, on_shard=lambda m: mined.append(m["name"]))
    assert mined == ["00001"]


def test_a_lease_not_renewed_for_long_is_stale_even_if_its_pid_lives(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    holder = OutputLease(str(out), "0" * 16).holder | {"token": "old"}   # this very process: alive
    (out / "_lease.json").write_text(json.dumps(holder))
    long_ago = time.time() - 3600
    os.utime(out / "_lease.json", (long_ago, long_ago))
    with OutputLease(str(out), "1" * 16) as lease:
        assert json.loads((out / "_lease.json").read_text())["token"] == lease.holder["token"]


def test_export_names_of_keys_that_join_alike_stay_distinct():
    from mining.sinks.safe_names import safe_file_name

    assert safe_file_name("a_b", "c") != safe_file_name("a", "b_c")


def test_curate_refuses_its_own_input_however_it_is_spelt(tmp_path, tiny_cfg, monkeypatch):
    from mining.postrun.curate import CurationFilters, curate

    make_shards(tmp_path / "in", shards=1, per_shard=2, size=64)
    run_mining(tiny_cfg(), [str(tmp_path / "in")], str(tmp_path / "runs" / "a"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="OUTPUT must differ from INPUT"):
        curate("runs/a", "./runs/../runs/a/", CurationFilters())


def test_config_hash_does_not_depend_on_where_the_weights_live(monkeypatch):
    import mining.config as config

    here = config.load_config("mining/toyworld/demo.yaml").config_hash()
    monkeypatch.setitem(config.PLACEHOLDERS, "TOYWORLD_WEIGHTS", "/elsewhere/weights")
    moved = config.load_config("mining/toyworld/demo.yaml")
    assert moved.regions.model == "local-dir:/elsewhere/weights/clip" and moved.config_hash() == here
