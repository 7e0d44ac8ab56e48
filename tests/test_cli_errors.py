"""Errors a user makes: each gives one line naming the thing and the fix (exact messages and exit codes), never a
traceback, and leaves nothing behind."""
import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
from functools import partial

import boto3
import numpy as np
import pytest
from webdataset import TarWriter

from conftest import free_port, jpeg_bytes
from mining.cli import main
from mining.postrun.export_coco import image_file_name
from mining.records import Entity, Pair, Sample
from mining.sinks.manifest import build_manifest, write_manifest
from mining.sinks.writer import write_shard
from mining.masks import encode_json as rle_json

SIZE = 16
KEYS = ("a", "b")


def run(capsys, *argv):
    """(exit code, stdout, stderr) of `ovmine ARGV`, in-process."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as stop:   # argparse's usage errors
        code = stop.code
    out, err = capsys.readouterr()
    return code, out, err


def listing(folder):
    """Every path under `folder`, relative: to show that a refused or failed command left nothing behind."""
    return sorted(os.path.relpath(os.path.join(d, n), folder) for d, dirs, files in os.walk(folder)
                  for n in dirs + files)


def square(y0, x0):
    mask = np.zeros((SIZE, SIZE), bool)
    mask[y0:y0 + 8, x0:x0 + 8] = True
    return mask


@pytest.fixture
def mined(tmp_path, tiny_cfg):
    """A finished two-shard output, written by the real writer and manifest code (no models needed)."""
    cfg = tiny_cfg()
    out = tmp_path / "mined"
    stems = []
    for n in range(2):
        stem = f"{n:05d}"
        shard = tmp_path / "in" / f"{stem}.tar"
        shard.parent.mkdir(exist_ok=True)
        with TarWriter(str(shard)) as tar:
            for key in KEYS:
                tar.write({"__key__": key, "jpg": jpeg_bytes(np.zeros((SIZE, SIZE, 3), np.uint8)),
                           "txt": b"A red square."})
        samples = []
        for index, key in enumerate(KEYS):
            s = Sample(shard=str(shard), shard_stem=stem, key=key, index=index, shard_size=len(KEYS),
                       captions=["A red square."], orig_size=(SIZE, SIZE), frame_size=(SIZE, SIZE),
                       entities=[Entity("square", "a red square", (0, 3), 0)],
                       mask_scores=np.ones(1, np.float32), pairs=[Pair(0, 0, 0.5, 0.1, 0.9, [0.5])])
            s.rles = rle_json(square(index, 4)[None])
            samples.append(s)
        write_shard(samples, str(out), cfg.config_hash())
        stems.append(stem)
    write_manifest(str(out), build_manifest(str(out), stems, cfg, 1.0))
    return out


@pytest.fixture
def gt_file(tmp_path):
    """Valid COCO ground truth for the mined fixture."""
    path = tmp_path / "gt.json"
    images = [{"id": i, "file_name": f"{k}.jpg", "width": SIZE, "height": SIZE} for i, k in enumerate(KEYS, 1)]
    anns = [{"id": i, "image_id": i, "category_id": 1, "segmentation": rle_json(square(i - 1, 4)[None])[0],
             "area": 64, "bbox": [4, i - 1, 8, 8], "iscrowd": 0} for i in (1, 2)]
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "square"}]}))
    return path


def reading_commands(path, tmp_path, gt):
    """Every command that reads an output, aimed at `path`; none of them may write anything."""
    return {"stats": ["stats", path],
            "validate": ["validate", path],
            "curate": ["curate", path, tmp_path / "curated", "--max-per-noun", "1"],
            "export": ["export", "coco", path, tmp_path / "coco.json", "--images-dir", tmp_path / "images"],
            "eval": ["eval", path, "--gt", gt]}


# --- 1. a folder that is not an (finished) ovmine output --------------------------------------------------------

@pytest.mark.parametrize("command", ["stats", "validate", "curate", "export", "eval"])
def test_a_folder_that_is_not_an_output_is_named(command, tmp_path, gt_file, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    before = listing(tmp_path)
    code, out, err = run(capsys, *reading_commands(empty, tmp_path, gt_file)[command])
    assert (code, out, err) == (1, "", f"ovmine: error: {empty} is not an ovmine output "
                                       f"(no manifest.json and no committed shards)\n")
    assert listing(tmp_path) == before

    missing = tmp_path / "nowhere"
    code, out, err = run(capsys, *reading_commands(missing, tmp_path, gt_file)[command])
    assert (code, out, err) == (1, "", f"ovmine: error: no such output: {missing}\n")
    assert listing(tmp_path) == before


@pytest.mark.parametrize("command", ["validate", "curate", "export", "eval"])
def test_an_interrupted_run_says_rerun_the_mine_command(command, mined, tmp_path, gt_file, capsys):
    (mined / "manifest.json").unlink()   # both shards committed, the run killed before its manifest
    before = listing(tmp_path)
    code, out, err = run(capsys, *reading_commands(mined, tmp_path, gt_file)[command])
    assert (code, out, err) == (1, "", f"ovmine: error: {mined} was interrupted (2 shards committed, no manifest): "
                                       f"rerun the mine command to finish it\n")
    assert listing(tmp_path) == before


def test_a_damaged_manifest_is_named(mined, capsys):
    (mined / "manifest.json").write_text('{"shards": [')
    code, _, err = run(capsys, "validate", mined)
    assert code == 1
    assert err.startswith(f"ovmine: error: {mined}/manifest.json is not valid JSON (")
    # (not --overwrite, which re-mines every shard: a plain rerun rewrites the manifest, test_writers_guard)
    assert err.endswith("): the output is damaged; rerun the command that wrote it (the same mine or curate "
                        "command) to rewrite it\n")


def test_an_s3_prefix_that_is_not_an_output_is_named(s3_endpoint, capsys):
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(Bucket="errors")
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").put_object(
        Bucket="errors", Key="half/_done/00000.json", Body=b"{}")
    endpoint = ["--s3-endpoint", s3_endpoint]
    assert run(capsys, "validate", "s3://errors/nothing", *endpoint) == (
        1, "", "ovmine: error: no such output: s3://errors/nothing\n")
    assert run(capsys, "validate", "s3://errors/half", *endpoint) == (
        1, "", "ovmine: error: s3://errors/half was interrupted (1 shard committed, no manifest): "
               "rerun the mine command to finish it\n")


# --- 2. eval --gt on a file that is not COCO instances JSON -----------------------------------------------------

FIX = "expected COCO instances JSON (images, annotations, categories), e.g. a toy world's ground_truth.json"
GOOD_IMAGE = {"id": 1, "file_name": "a.jpg", "width": SIZE, "height": SIZE}


@pytest.mark.parametrize("content, problem", [
    ([], "the top level is a JSON list, not an object"),
    ({"images": []}, "no annotations, categories"),
    ({"images": [{"id": 1, "width": 4, "height": 4}], "annotations": [], "categories": []},
     "images[0] has neither a 'key' nor a 'file_name'"),
    ({"images": [GOOD_IMAGE], "annotations": [{"image_id": "1", "category_id": 1, "segmentation": []}],
      "categories": []}, "annotations[0].image_id is '1', expected a whole number"),
    ({"images": [GOOD_IMAGE], "annotations": [{"image_id": 1, "category_id": 1, "segmentation": {"size": [4, 4]}}],
      "categories": []}, "annotations[0].segmentation is an RLE without 'size' and 'counts'"),
    ({"images": [GOOD_IMAGE], "annotations": [], "categories": [{"id": 1}]}, "categories[0] has no 'name'"),
])
def test_ground_truth_that_is_not_coco_is_named(content, problem, mined, tmp_path, capsys):
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps(content))
    assert run(capsys, "eval", mined, "--gt", gt) == (
        1, "", f"ovmine: error: {gt} is not COCO instances ground truth: {problem}; {FIX}\n")


def test_ground_truth_that_is_not_json_or_missing_is_named(mined, tmp_path, capsys):
    gt = tmp_path / "gt.txt"
    gt.write_text("images,annotations\n")
    code, out, err = run(capsys, "eval", mined, "--gt", gt)
    assert (code, out) == (1, "")
    assert err.startswith(f"ovmine: error: {gt} is not JSON (Expecting value: line 1 column 1 (char 0)): {FIX}")
    assert run(capsys, "eval", mined, "--gt", tmp_path / "none.json") == (
        1, "", f"ovmine: error: ground truth not found: {tmp_path / 'none.json'}\n")
    code, _, err = run(capsys, "eval", mined, "--gt", tmp_path)
    assert code == 1 and err.startswith(f"ovmine: error: cannot read ground truth {tmp_path}: ")
    assert err.count("\n") == 1


def test_valid_ground_truth_still_scores(mined, gt_file, capsys):
    code, out, _ = run(capsys, "eval", mined, "--gt", gt_file, "--json")
    assert code == 0 and json.loads(out)["images"] == 4   # the ground truth covers keys a and b of both shards


# --- 3. export coco onto a folder, and an export that fails -----------------------------------------------------

def test_export_onto_an_existing_folder_is_refused_and_leaves_nothing(mined, tmp_path, capsys):
    dest = tmp_path / "edir"
    dest.mkdir()
    before = listing(tmp_path)
    assert run(capsys, "export", "coco", mined, dest) == (
        1, "", f"ovmine: error: export destination {dest} is an existing folder: give a file path, "
               f"e.g. {dest}/coco.json\n")
    assert listing(tmp_path) == before   # no edir.tmp
    (tmp_path / "a-file").write_text("x")
    assert run(capsys, "export", "coco", mined, tmp_path / "coco.json", "--images-dir", tmp_path / "a-file") == (
        1, "", f"ovmine: error: --images-dir {tmp_path / 'a-file'} is a file: give a folder\n")
    assert run(capsys, "export", "coco", mined, tmp_path / "a-file" / "coco.json") == (
        1, "", f"ovmine: error: export destination {tmp_path / 'a-file' / 'coco.json'}: "
               f"{tmp_path / 'a-file'} is a file, not a folder\n")


def test_an_export_that_fails_midway_removes_what_it_wrote(mined, tmp_path, capsys):
    images = tmp_path / "images"
    blocker = images / image_file_name("00001", "a")   # the second shard's first image cannot be written
    blocker.mkdir(parents=True)
    dest = tmp_path / "out" / "coco.json"
    # (--overwrite: the folder is not empty; the guard refuses it otherwise, see test_writers_guard)
    code, out, err = run(capsys, "export", "coco", mined, dest, "--images-dir", images, "--overwrite")
    assert (code, out) == (1, "") and err.startswith(f"ovmine: error: could not write {blocker}: ")
    assert listing(images) == [blocker.name], "the first shard's images are removed again, no temporaries"
    assert not dest.exists() and listing(dest.parent) == []
    os.rmdir(blocker)
    assert run(capsys, "export", "coco", mined, dest, "--images-dir", images)[0] == 0
    assert len(listing(images)) == 4 and listing(dest.parent) == ["coco.json"]


# --- 4. output piped into a reader that goes away ---------------------------------------------------------------

def test_a_closed_pipe_is_not_an_error(monkeypatch, capsys):
    read_end, write_end = os.pipe()
    os.close(read_end)   # `| head` that has already exited
    stdout = open(write_end, "w")
    monkeypatch.setattr(sys, "stdout", stdout)
    assert main(["config", "list"]) == 141
    assert capsys.readouterr().err == ""
    stdout.write("after")
    stdout.flush()   # stdout now points at devnull: the interpreter's exit flush is silent
    stdout.close()


def test_ovmine_into_head_exits_quietly(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "mining.cli", "config", "list"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()   # the reader is gone before ovmine prints
    err = proc.stderr.read()
    assert (proc.wait(timeout=120), err) == (141, b"")


# --- 5. jobs and submit against an address without a scheme or with nothing behind it --------------------------

def test_an_address_without_a_scheme_is_refused_at_once(capsys, tmp_path):
    start = time.monotonic()
    assert run(capsys, "jobs", "list", "--address", "127.0.0.1:8265") == (
        1, "", "ovmine: error: --address 127.0.0.1:8265 has no scheme: use http://127.0.0.1:8265 "
               "(the Ray dashboard's address, port 8265 by default)\n")
    assert run(capsys, "submit", "mine", "--address", "head:8265", "--config", "tiny", "--input", tmp_path,
               "--output", tmp_path / "out") == (
        1, "", "ovmine: error: --address head:8265 has no scheme: use http://head:8265 "
               "(the Ray dashboard's address, port 8265 by default)\n")
    assert run(capsys, "jobs", "list", "--address", "ray://head:10001") == (
        1, "", "ovmine: error: --address ray://head:10001: the Job Submission API needs the Ray dashboard's "
               "http:// or https:// address, e.g. http://head:8265\n")
    assert time.monotonic() - start < 10


def test_a_dead_address_fails_within_seconds(capsys, monkeypatch):
    from mining.cluster import submit

    port = free_port()   # nothing listens: refused at once
    start = time.monotonic()
    code, out, err = run(capsys, "jobs", "status", "some-job", "--address", f"http://127.0.0.1:{port}")
    assert time.monotonic() - start < submit.CONNECT_SECONDS + 5
    assert (code, out) == (1, "")
    assert err == (f"ovmine: error: no Ray dashboard answers at http://127.0.0.1:{port} ([Errno 111] Connection "
                   f"refused): check the address and that the cluster is up (`ray status` on the head node)\n")
    # something that accepts connections but never answers HTTP is given ANSWER_SECONDS (shortened here)
    monkeypatch.setattr(submit, "ANSWER_SECONDS", 1.0)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        address = f"http://127.0.0.1:{silent.getsockname()[1]}"
        start = time.monotonic()
        code, _, err = run(capsys, "jobs", "list", "--address", address)
        assert time.monotonic() - start < 6
    assert (code, err) == (1, f"ovmine: error: {address} accepts connections but gave no HTTP answer (timed out): "
                              f"is it the dashboard's port (8265 by default)? check the address and that the "
                              f"cluster is up (`ray status` on the head node)\n")


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):   # the server's access log would land in the captured stderr
        pass


def test_an_http_server_that_is_not_ray_is_named(capsys, tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(QuietHandler, directory=str(tmp_path)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        address = f"http://127.0.0.1:{server.server_address[1]}"
        code, out, err = run(capsys, "jobs", "list", "--address", address)
    finally:
        server.shutdown()
        server.server_close()
    assert (code, out) == (1, "") and err.count("\n") == 1
    assert err.startswith(f"ovmine: error: {address}: Version check returned 404.")


# --- 6. counts below 1 are refused at parse time ----------------------------------------------------------------

@pytest.mark.parametrize("command, argv, message", [
    ("sample-data", ["d", "--shards", "-1"], "argument --shards: must be at least 1, got -1"),
    ("sample-data", ["d", "--per-shard", "0"], "argument --per-shard: must be at least 1, got 0"),
    ("sample-data", ["d", "--size", "0"], "argument --size: must be at least 1, got 0"),
    ("sample-data", ["d", "--size", "8"], "argument --size: must be at least 16 pixels, got 8"),
    ("sample-data", ["d", "--seed", "-3"], "argument --seed: must be 0 or more, got -3"),
    ("toyworld make", ["w", "--shards", "0"], "argument --shards: must be at least 1, got 0"),
    ("toyworld make", ["w", "--per-shard", "-5"], "argument --per-shard: must be at least 1, got -5"),
    ("toyworld make", ["w", "--size", "-128"], "argument --size: must be at least 1, got -128"),
    ("demo", ["--shards", "0"], "argument --shards: must be at least 1, got 0"),
    ("demo", ["--per-shard", "-1"], "argument --per-shard: must be at least 1, got -1"),
    ("curate", ["a", "b", "--max-per-noun", "0"], "argument --max-per-noun: must be at least 1, got 0"),
    ("curate", ["a", "b", "--min-noun-count", "-2"], "argument --min-noun-count: must be at least 1, got -2"),
])
def test_counts_below_one_are_refused(command, argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run(capsys, *command.split(), *argv) == (
        2, "", f"ovmine {command}: error: {message} (see ovmine {command} --help)\n")
    assert listing(tmp_path) == []


# --- 7. generated datasets go into new or empty folders ---------------------------------------------------------

def test_sample_data_refuses_a_non_empty_folder_and_overwrite_replaces(tmp_path, capsys):
    out = tmp_path / "data"
    assert run(capsys, "sample-data", out, "--shards", "3", "--per-shard", "1", "--size", "32")[0] == 0
    (out / "notes.txt").write_text("mine")
    assert run(capsys, "sample-data", out, "--shards", "1", "--per-shard", "1") == (
        1, "", f"ovmine: error: {out} is not empty (4 entries, e.g. 00000.tar): choose a new folder, or pass "
               f"--overwrite to replace the dataset there\n")
    assert listing(out) == ["00000.tar", "00001.tar", "00002.tar", "notes.txt"]
    assert run(capsys, "sample-data", out, "--shards", "1", "--per-shard", "2", "--size", "32", "--overwrite") == (
        0, f"wrote 1 shard(s) of 2 images to {out}\n", "")
    assert listing(out) == ["00000.tar", "notes.txt"], "no stale shard of the earlier dataset is left"
    (tmp_path / "a-file").write_text("x")
    assert run(capsys, "sample-data", tmp_path / "a-file") == (
        1, "", f"ovmine: error: {tmp_path / 'a-file'} is a file: a dataset needs a folder\n")


def test_toyworld_refuses_a_non_empty_folder_and_overwrite_replaces(tmp_path, capsys):
    out = tmp_path / "world"
    small = ["--per-shard", "1", "--size", "32", "--json"]
    assert run(capsys, "toyworld", "make", out, "--shards", "2", *small)[0] == 0
    assert run(capsys, "toyworld", "make", out, "--shards", "1", *small) == (
        1, "", f"ovmine: error: {out} is not empty (2 entries, e.g. ground_truth.json): choose a new folder, or "
               f"pass --overwrite to replace the dataset there\n")
    code, out_text, _ = run(capsys, "toyworld", "make", out, "--shards", "1", *small, "--overwrite")
    assert code == 0 and json.loads(out_text)["shards"] == 1
    assert listing(out) == ["ground_truth.json", "shards", "shards/00000.tar"]
    assert len(json.loads((out / "ground_truth.json").read_text())["images"]) == 1


def test_toyworld_counts_an_s3_prefix_with_objects_as_non_empty(s3_endpoint, capsys):
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    client.create_bucket(Bucket="worlds")
    client.put_object(Bucket="worlds", Key="w/shards/00007.tar", Body=b"old")
    args = ["toyworld", "make", "s3://worlds/w", "--shards", "1", "--per-shard", "1", "--size", "32",
            "--s3-endpoint", s3_endpoint, "--json"]
    assert run(capsys, *args) == (
        1, "", "ovmine: error: s3://worlds/w is not empty (1 entry, e.g. shards): choose a new folder, or pass "
               "--overwrite to replace the dataset there\n")
    assert run(capsys, *args, "--overwrite")[0] == 0
    objects = client.list_objects_v2(Bucket="worlds")["Contents"]
    keys = sorted(o["Key"] for o in objects if not o["Key"].endswith("/"))   # pyarrow keeps folder markers
    assert keys == ["w/ground_truth.json", "w/shards/00000.tar"], "the stale shard 00007 is gone"


@pytest.mark.parametrize("flag,target,why", [
    ("--nouns-deny", "missing.txt", "no such file"), ("--nouns-allow", ".", "a folder, not a file"),
    ("--merge-synonyms", "missing.yaml", "no such file")])
def test_a_file_a_flag_names_that_cannot_be_read_is_blamed_on_the_flag(flag, target, why, mined, tmp_path,
                                                                        capsys):
    path = tmp_path / target
    code = main(["curate", str(mined), str(tmp_path / "curated"), flag, str(path)])
    err = capsys.readouterr().err
    assert (code, err) == (1, f"ovmine: error: {flag} {path}: {why}\n")
    assert not (tmp_path / "curated").exists()


def test_a_world_folder_given_as_input_points_at_its_shards(tmp_path, capsys):
    from mining.toyworld.make import make_world

    make_world(str(tmp_path / "world"), shards=1, per_shard=1, seed=3, size=32, progress=False)
    code = main(["mine", "--config", "tiny", "--input", str(tmp_path / "world"), "--output", str(tmp_path / "out"),
                 "--executor", "local"])
    assert code == 1 and capsys.readouterr().err.endswith(
        f"holds no .tar shard: did you mean {tmp_path / 'world' / 'shards'}?\n")


def test_writers_take_output_as_a_flag_or_in_the_older_positional_form(mined, tmp_path, capsys):
    assert main(["curate", str(mined), "--output", str(tmp_path / "flag"), "--json"]) == 0
    assert main(["curate", str(mined), str(tmp_path / "positional"), "--json"]) == 0
    capsys.readouterr()
    assert sorted(p.name for p in (tmp_path / "flag" / "shards").iterdir()) == \
        sorted(p.name for p in (tmp_path / "positional" / "shards").iterdir())
    for argv, message in ((["curate", str(mined)], "the following arguments are required: --output"),
                          (["curate", str(mined), str(tmp_path / "a"), "--output", str(tmp_path / "b")],
                           "two outputs given")):
        with pytest.raises(SystemExit) as stop:
            main(argv)
        assert stop.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    assert main(["export", "coco", str(mined), "--output", str(tmp_path / "coco.json")]) == 0
    assert json.loads((tmp_path / "coco.json").read_text())["annotations"]
