"""Every command that writes is as safe as `mine`: one guard (`mining.sinks.guard`) refuses, before any work and
in one line naming the path, to write into or over an input, inside another output's files, or over another
kind of output; a non-empty foreign folder or file only with --overwrite. The reproductions of the issue are
here, each against the real CLI."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mining.cli import main
from mining.config import load_config
from mining.pipeline import run_mining
from mining.postrun.curate import CurationFilters, curate
from mining.toyworld.make import make_shards

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_CLIP = ROOT / "mining" / "toyworld" / "weights" / "clip"


def run(capsys, *argv):
    try:
        code = main([str(a) for a in argv])
    except SystemExit as stop:
        code = stop.code
    out, err = capsys.readouterr()
    return code, out, err


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under `root` with its bytes (None for folders): equal before and after means untouched."""
    found = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            found[os.path.relpath(os.path.join(folder, name), root)] = None
        for name in files:
            path = os.path.join(folder, name)
            found[os.path.relpath(path, root)] = Path(path).read_bytes()
    return found


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """A workspace as a user has it: a toy-world-like dataset folder, a mined run of it, a curation of that run,
    a CLIP model folder ovmine did not train, and a trained-looking segmenter folder to pass to `segment`."""
    root = tmp_path_factory.mktemp("ws")
    world = root / "world"
    make_shards(world / "shards", shards=2, per_shard=2, size=64)
    (world / "ground_truth.json").write_text("{}")
    mined, cur = root / "mined", root / "cur"
    # as `ovmine mine --config configs/tiny.yaml --executor local` mines it, so that the tests can rerun that
    run_mining(load_config(str(ROOT / "configs" / "tiny.yaml"), ["execution.executor=local"]), [str(world / "shards")],
               str(mined))
    curate(str(mined), str(cur), CurationFilters())
    model = root / "clip"
    model.mkdir()
    shutil.copy(SHIPPED_CLIP / "open_clip_config.json", model)
    (model / "open_clip_model.safetensors").write_bytes(b"weights")
    seg = root / "seg"
    seg.mkdir()
    (seg / "segmenter.json").write_text("{}")
    return {"root": root, "world": world, "shards": world / "shards", "mined": mined, "cur": cur, "model": model,
            "seg": seg}


# (kind of output, argv with the output at T): every writing command
COMMANDS = {
    "mine": lambda w, t: ["mine", "--config", "configs/tiny.yaml", "--input", w["shards"], "--output", t,
                          "--executor", "local"],
    "curate": lambda w, t: ["curate", w["mined"], t],
    "export coco": lambda w, t: ["export", "coco", w["mined"], t],
    "export --images-dir": lambda w, t: ["export", "coco", w["mined"], w["root"] / "new" / "coco.json",
                                         "--images-dir", t],
    "stats --html": lambda w, t: ["stats", w["cur"], "--html", t],
    "segment": lambda w, t: ["segment", "--model", w["seg"], "--classes", "a,b", w["shards"], "--output", t],
    "train clip": lambda w, t: ["train", "clip", "--config", "configs/train_clip_toyworld.yaml", "--data", w["cur"],
                                "--output", t],
    "train segmenter": lambda w, t: ["train", "segmenter", "--config", "configs/train_segmenter_toyworld.yaml",
                                     "--data", w["mined"], "--output", t],
}

# forbidden targets, relative to the workspace, and what the refusal must say
TARGETS = {
    "input tar": ("world/shards/00000.tar", ""),
    "input folder": ("world/shards", ""),
    "folder holding the inputs": ("world", ""),
    "manifest": ("mined/manifest.json", ""),
    "marker": ("mined/_done/00000.json", ""),
    "output shard": ("mined/shards/00000.tar", ""),
    "inside an output's shards": ("mined/shards/new", ""),
    "mining output": ("mined", "mining output"),
    "curated output": ("cur", "curated output"),
    "model folder": ("clip", "model folder"),
}
OWN = {("mine", "mining output"), ("curate", "curated output")}   # a rerun: the command's own business


@pytest.mark.parametrize("overwrite", [False, True], ids=["plain", "overwrite"])
@pytest.mark.parametrize("target", list(TARGETS))
@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_writer_refuses_every_forbidden_target(command, target, overwrite, ws, capsys):
    if (command, target) in OWN:
        pytest.skip("the command's own kind of output: resumed or redone, tested apart")
    relative, _ = TARGETS[target]
    path = ws["root"] / relative
    before = snapshot(ws["root"])
    argv = COMMANDS[command](ws, path) + (["--overwrite"] if overwrite else [])
    code, out, err = run(capsys, *argv)
    assert (code, out) == (1, ""), err
    assert err.startswith("ovmine: error: ") and err.count("\n") == 1, err
    assert str(path) in err or str(path.parent) in err, err
    assert "Traceback" not in err
    assert snapshot(ws["root"]) == before, "a refused command changed something"


# --- the reproductions, one by one ------------------------------------------------------------------

def test_curate_into_a_dataset_folder_is_refused_and_its_tars_survive(ws, capsys):
    before = snapshot(ws["world"])
    code, _, err = run(capsys, "curate", ws["mined"], ws["world"], "--overwrite")
    assert code == 1 and f"{ws['world']} holds the input" in err
    assert snapshot(ws["world"]) == before


def test_curate_over_a_mined_run_is_refused_even_with_overwrite(ws, capsys):
    for extra in ([], ["--overwrite"]):
        code, _, err = run(capsys, "curate", ws["cur"], ws["mined"], *extra)
        assert code == 1
        assert "is a mining output, not a curated output" in err or "holds the input" in err, err


def test_a_non_empty_foreign_folder_needs_overwrite_and_keeps_what_is_not_ovmines(ws, tmp_path, capsys):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "todo.txt").write_text("mine")
    code, _, err = run(capsys, "curate", ws["mined"], folder)
    assert code == 1 and err == (f"ovmine: error: --output {folder} is not empty (1 entry, e.g. todo.txt) and not a "
                                 f"curated output: choose a new folder, or pass --overwrite to write into it anyway\n")
    assert run(capsys, "curate", ws["mined"], folder, "--overwrite")[0] == 0
    assert (folder / "todo.txt").read_text() == "mine" and (folder / "manifest.json").exists()
    assert run(capsys, "validate", folder)[0] == 0


def test_curating_again_replaces_the_earlier_curation_and_another_needs_overwrite(ws, tmp_path, capsys):
    out = tmp_path / "cur"
    assert run(capsys, "curate", ws["mined"], out)[0] == 0
    assert run(capsys, "curate", ws["mined"], out)[0] == 0   # the same curation: redone
    code, _, err = run(capsys, "curate", ws["mined"], out, "--min-similarity", "0.3")
    assert code == 1 and "holds another curation" in err and "--overwrite" in err
    assert run(capsys, "curate", ws["mined"], out, "--min-similarity", "0.3", "--overwrite", "--json")[0] == 0
    assert json.loads((out / "manifest.json").read_text())["lineage"]["filters"]["min_similarity"] == 0.3
    assert run(capsys, "validate", out)[0] == 0
    assert not (out / "_lease.json").exists()


@pytest.mark.parametrize("flag,value,message", [
    ("--min-similarity", "2", "--min-similarity must be in [-1, 1] (a cosine similarity), got 2"),
    ("--min-similarity", "-1.5", "--min-similarity must be in [-1, 1] (a cosine similarity), got -1.5"),
    ("--min-margin", "-0.1", "--min-margin must be in [0, 2] (a difference of cosine similarities), got -0.1"),
])
def test_curate_filters_out_of_range_are_refused(ws, tmp_path, capsys, flag, value, message):
    assert run(capsys, "curate", ws["mined"], tmp_path / "c", flag, value) == (1, "", f"ovmine: error: {message}\n")
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("command", ["export coco", "stats --html"])
def test_a_single_file_output_replaces_its_own_kind_and_other_files_only_with_overwrite(command, ws, tmp_path, capsys):
    dest = tmp_path / "out.file"
    argv = COMMANDS[command](ws, dest)
    assert run(capsys, *argv)[0] == 0
    first = dest.read_bytes()
    assert run(capsys, *argv)[0] == 0          # its own earlier output: written again
    assert dest.read_bytes()[:40] == first[:40]
    other = tmp_path / "notes.txt"
    other.write_text("keep me")
    code, _, err = run(capsys, *COMMANDS[command](ws, other))
    assert code == 1 and f"{other} exists and is not an earlier" in err and "--overwrite" in err
    assert other.read_text() == "keep me"
    assert run(capsys, *COMMANDS[command](ws, other), "--overwrite")[0] == 0
    assert other.read_bytes()[:1] in (b"{", b"<")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "out.file"], "no temporary left"


def test_a_report_beside_the_run_is_allowed(ws, tmp_path, capsys):
    run_copy = tmp_path / "run"
    shutil.copytree(ws["mined"], run_copy)
    assert run(capsys, "stats", run_copy, "--html", run_copy / "report.html")[0] == 0
    assert run(capsys, "validate", run_copy)[0] == 0


def test_export_images_are_written_again_into_the_earlier_exports_folder(ws, tmp_path, capsys):
    dest, images = tmp_path / "coco.json", tmp_path / "images"
    assert run(capsys, "export", "coco", ws["mined"], dest, "--images-dir", images)[0] == 0
    written = sorted(p.name for p in images.iterdir())
    assert written and all(name.endswith(".jpg") for name in written)
    assert run(capsys, "export", "coco", ws["mined"], dest, "--images-dir", images)[0] == 0
    code, _, err = run(capsys, "export", "coco", ws["mined"], tmp_path / "other.json", "--images-dir", images)
    assert code == 1 and f"--images-dir {images} is not empty" in err   # not that export's folder
    assert sorted(p.name for p in images.iterdir()) == written


# --- damaged outputs: validate names the file and the command that repairs it; that command works -------------

@pytest.fixture
def run_copy(ws, tmp_path):
    out = tmp_path / "mined"
    shutil.copytree(ws["mined"], out)
    return out


def mine_again(ws, out, capsys, *extra):
    return run(capsys, "mine", "--config", "configs/tiny.yaml", "--input", ws["shards"], "--output", out,
               "--executor", "local", *extra)   # not -q: the summary is checked


def test_a_clobbered_marker_is_named_by_validate_and_repaired_by_a_plain_rerun(ws, run_copy, capsys):
    marker = run_copy / "_done" / "00001.json"
    marker.write_text("<html>not a marker</html>")
    code, _, err = run(capsys, "validate", run_copy)
    assert code == 1 and "Traceback" not in err
    assert f"the marker {marker} is damaged: rerun the mine command" in err
    code, out, err = mine_again(ws, run_copy, capsys)
    assert code == 0, err
    assert "1 already committed, 1 mined now" in out   # the damaged shard, and only it, is mined again
    assert run(capsys, "validate", run_copy)[0] == 0


def test_a_clobbered_marker_does_not_crash_mine_overwrite(ws, run_copy, capsys):
    (run_copy / "_done" / "00000.json").write_text("{}")
    code, out, err = mine_again(ws, run_copy, capsys, "--overwrite")
    assert code == 0, err
    assert run(capsys, "validate", run_copy)[0] == 0


def test_a_damaged_manifest_is_repaired_by_a_plain_rerun(ws, run_copy, capsys):
    (run_copy / "manifest.json").write_text('{"config_hash": "x"')
    code, _, err = run(capsys, "validate", run_copy)
    assert code == 1 and "rerun the command that wrote it (the same mine or curate command)" in err
    code, out, err = mine_again(ws, run_copy, capsys)
    assert code == 0 and "2 already committed, 0 mined now" in out, err
    assert run(capsys, "validate", run_copy)[0] == 0


def test_a_damaged_shard_file_is_named_with_its_repair(ws, run_copy, capsys):
    pairs = run_copy / "pairs" / "00000.parquet"
    pairs.write_bytes(b"PAR1 torn")
    code, _, err = run(capsys, "validate", run_copy)
    marker = run_copy / "_done" / "00000.json"
    assert code == 1 and "Traceback" not in err
    assert f"{pairs} is damaged (" in err and f"remove its marker {marker} and rerun the mine command" in err
    marker.unlink()
    assert mine_again(ws, run_copy, capsys)[0] == 0
    assert run(capsys, "validate", run_copy)[0] == 0


# --- segment: names that never collide, a count equal to the files written ------------------------------------

class _Labels:
    """A predictor stand-in: everything is the first class (segment's writing is under test, not the model)."""
    def __call__(self, image, names):
        import numpy as np
        from mining.segmentation.predict import Prediction

        labels = np.zeros(image.shape[:2], np.int32)
        return Prediction(labels, [{"class": names[0], "area": int(labels.size), "score": 1.0}])


def test_segment_keeps_relative_paths_so_same_named_inputs_do_not_collide(tmp_path):
    from PIL import Image
    from mining.segmentation.run import segment_inputs

    for sub, colour in (("a", 10), ("b", 200)):
        (tmp_path / "in" / sub).mkdir(parents=True)
        Image.new("RGB", (8, 6), (colour, 0, 0)).save(tmp_path / "in" / sub / "x.jpg")
    Image.new("RGB", (8, 6)).save(tmp_path / "in" / "a" / "x.png")   # same stem, same folder
    out = tmp_path / "labels"
    inputs = [str(tmp_path / "in" / p) for p in ("a/x.jpg", "b/x.jpg", "a/x.png")]
    summary = segment_inputs(_Labels(), ["thing"], inputs, out)
    pngs = sorted(str(p.relative_to(out)) for p in out.rglob("*.png"))
    assert pngs == ["a/x-2.png", "a/x.png", "b/x.png"] and summary["images"] == len(pngs) == 3
    sources = {json.loads(p.read_text())["image"] for p in out.rglob("x*.json")}
    assert sources == set(inputs)
    assert json.loads((out / "segmentation.json").read_text())["images"] == 3
    # a rerun over fewer inputs leaves no file of the earlier run behind
    assert segment_inputs(_Labels(), ["thing"], inputs[:1], out)["images"] == 1
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.png")) == ["x.png"]


def test_segment_refuses_a_folder_that_holds_a_png_input(tmp_path, capsys):
    from PIL import Image

    Image.new("RGB", (8, 6)).save(tmp_path / "photo.png")
    before = snapshot(tmp_path)
    code, _, err = run(capsys, "segment", "--model", tmp_path / "no-model", "--classes", "a", tmp_path / "photo.png",
                       "--output", tmp_path)
    assert code == 1 and f"--output {tmp_path} holds the input {tmp_path / 'photo.png'}" in err
    assert snapshot(tmp_path) == before


# --- eval and eval-seg on the wrong ground truth ---------------------------------------------------------------

def test_eval_against_another_worlds_ground_truth_fails_naming_both_counts(ws, tmp_path, capsys):
    from mining.toyworld.make import make_world

    make_world(tmp_path / "other", shards=1, per_shard=1, seed=9, size=64, progress=False)   # one key in common with the run
    gt = tmp_path / "other" / "ground_truth.json"
    code, out, err = run(capsys, "eval", ws["mined"], "--gt", gt)
    assert (code, out) == (1, "")
    assert err == (f"ovmine: error: the ground truth {gt} has only 1 of the run's 4 images (matched by key or file-name "
                   f"stem): is it the right --gt? Pass --allow-partial to score those 1 anyway\n")
    code, out, _ = run(capsys, "eval", ws["mined"], "--gt", gt, "--allow-partial", "--json")
    assert code == 0 and json.loads(out)["images_not_in_ground_truth"] == 3
    code, out, _ = run(capsys, "eval", ws["mined"], "--gt", gt, "--allow-partial")
    assert "images             1 of the run's 4 are in the ground truth" in out


def test_eval_seg_counts_the_images_the_ground_truth_lacks(tmp_path):
    from mining.evaluation.semantic import evaluate_semantic
    from mining.toyworld.make import make_world

    from PIL import Image

    make_world(tmp_path / "w", shards=1, per_shard=2, seed=3, size=64, progress=False)
    gt = tmp_path / "w" / "ground_truth.json"
    strangers = []   # three photos the ground truth does not list
    for name in ("p", "q", "r"):
        Image.new("RGB", (16, 16)).save(tmp_path / f"{name}.jpg")
        strangers.append(str(tmp_path / f"{name}.jpg"))
    images = strangers + [str(tmp_path / "w" / "shards")]
    with pytest.raises(ValueError, match=r"has only 2 of the images' 5 images .*--allow-partial"):
        evaluate_semantic(str(gt), {"x": _Labels()}, images)
    report = evaluate_semantic(str(gt), {"x": _Labels()}, images, allow_partial=True)
    assert report["images"] == 2 and report["images_not_in_ground_truth"] == 3


# --- leases --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("content", [b"", b"\x00\x00garbage"], ids=["empty", "not-json"])
def test_a_damaged_local_lease_is_stale_at_once(tmp_path, content):
    from mining.sinks.lease import OutputLease

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "_lease.json").write_bytes(content)
    start = time.monotonic()
    with OutputLease(str(tmp_path / "out"), "h"):
        assert json.loads((tmp_path / "out" / "_lease.json").read_text())["config_hash"] == "h"
    assert time.monotonic() - start < 5 and not (tmp_path / "out" / "_lease.json").exists()
    assert os.listdir(tmp_path / "out") == [], "no lock file or temporary is left"


def test_a_full_disk_at_lease_creation_names_the_file_and_leaves_no_empty_lease(tmp_path, monkeypatch):
    import errno

    from mining.sinks.lease import OutputLease, OutputNotWritable

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OutputNotWritable, match=f"cannot write the lease {tmp_path / 'out' / '_lease.json'}: "
                                                f"No space left on device"):
        OutputLease(str(tmp_path / "out"), "h").acquire()
    assert os.listdir(tmp_path / "out") == []


# --- S3 set-up errors are one line ------------------------------------------------------------------------------

def test_an_unreachable_s3_endpoint_is_one_line_naming_it(capsys):
    from conftest import free_port

    endpoint = f"http://127.0.0.1:{free_port()}"   # nothing listens there
    code, out, err = run(capsys, "validate", "s3://bucket/run", "--s3-endpoint", endpoint)
    assert (code, out) == (1, "")
    assert err.startswith(f"ovmine: error: cannot reach the S3 endpoint {endpoint} (") and err.count("\n") == 1
    assert err.endswith("): check --s3-endpoint, AWS_ENDPOINT_URL or storage.endpoint_url, and that the server is "
                        "up\n")


def test_missing_s3_credentials_are_one_line_naming_the_endpoint(s3_endpoint, tmp_path):
    # a process of its own: boto3's default session keeps the credentials it found first
    env = {k: v for k, v in os.environ.items()
           if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE")}
    env |= {"AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"), "AWS_CONFIG_FILE": str(tmp_path / "none"),
            "AWS_EC2_METADATA_DISABLED": "true"}   # never ask the instance metadata address
    make_shards(tmp_path / "in", shards=1, per_shard=1, size=32)
    result = subprocess.run(
        [sys.executable, "-m", "mining.cli", "mine", "--config", "configs/tiny.yaml", "--input", str(tmp_path / "in"),
         "--output", "s3://nobucket/run", "--executor", "local", "--s3-endpoint", s3_endpoint],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert (result.returncode, result.stdout) == (1, ""), result.stderr
    assert result.stderr == (f"ovmine: error: no AWS credentials for the S3 endpoint {s3_endpoint}: set "
                             f"AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) in the environment\n")


# --- SIGTERM on the local executor unwinds like Ray's ---------------------------------------------------------

def test_sigterm_on_the_local_executor_exits_130_releases_the_lease_and_removes_parts(tmp_path):
    make_shards(tmp_path / "in", shards=6, per_shard=4, size=64)
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "mining.cli", "mine", "--config", "configs/tiny.yaml", "--input", str(tmp_path / "in"),
         "--output", str(out), "--executor", "local", "--set", "execution.chunk_size=2"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not (out / "_parts").exists() or not list((out / "_parts").rglob("*.json")):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert not (out / "_lease.json").exists() and not (out / "_parts").exists()


def test_toyworld_make_never_replaces_a_mined_run_even_with_overwrite(ws, capsys):
    before = snapshot(ws["mined"])
    for target in (ws["mined"], ws["mined"] / "shards"):
        code, _, err = run(capsys, "toyworld", "make", target, "--shards", "1", "--per-shard", "1", "--overwrite")
        assert code == 1 and ("is a mining output, not a toy world" in err or "is inside the mining output" in err), err
    assert snapshot(ws["mined"]) == before


def test_outputs_may_live_beside_a_worlds_shards_but_not_among_them(ws, capsys):
    from mining.sinks.guard import MINED, WriteRefused, check_folder_output

    assert check_folder_output(ws["world"] / "mined", MINED, [ws["shards"]]) is None
    with pytest.raises(WriteRefused, match=r"is inside the toy world .* \(shards\)"):
        check_folder_output(ws["shards"] / "mined", MINED, [])


def test_the_demo_never_deletes_a_folder_it_did_not_make(tmp_path, capsys):
    (tmp_path / "mined").mkdir()
    (tmp_path / "mined" / "thesis.tex").write_text("years of work")
    code, _, err = run(capsys, "demo", "--output", tmp_path, "--executor", "local")
    assert code == 1 and f"demo folder {tmp_path / 'mined'} is not empty" in err
    assert (tmp_path / "mined" / "thesis.tex").read_text() == "years of work"


def test_a_sigkilled_drivers_own_ray_is_gone_within_seconds(tmp_path):
    """Ray's fate-sharing stops most of a killed driver's Ray, but its agents wait 60 s on the dead GCS; the
    reaper stops them (and anything else the driver started) within about a second."""
    import psutil

    make_shards(tmp_path / "in", shards=6, per_shard=4, size=64)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mining.cli", "mine", "--config", "configs/tiny.yaml", "--input", str(tmp_path / "in"),
         "--output", str(tmp_path / "out"), "--executor", "ray", "--set", "execution.chunk_size=2"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stderr:
            if "loading models" in line:   # Ray is up
                break
        time.sleep(2)   # its agents too
        ray_processes = [p for p in psutil.Process(proc.pid).children(recursive=True)
                         if "reaper" not in " ".join(p.cmdline())]
        names = " ".join(" ".join(p.cmdline()) for p in ray_processes)
        assert "raylet" in names and "DashboardAgent" in names, names
        proc.kill()
        proc.wait()
        gone, alive = psutil.wait_procs(ray_processes, timeout=15)
        assert not alive, [p.cmdline() for p in alive]
    finally:
        proc.kill()
        for p in psutil.Process().children(recursive=True):
            if "ray::" in " ".join(p.cmdline()):
                p.kill()


# --- the same guard through symlinks, '..' and on S3 -----------------------------------------------------------

def test_inputs_are_recognised_through_symlinks_and_dotted_paths(ws, tmp_path, capsys):
    link = tmp_path / "alias"
    link.symlink_to(ws["world"])
    before = snapshot(ws["world"])
    dotted = ws["shards"] / ".." / "shards" / "00000.tar"
    for argv in (["curate", ws["mined"], link, "--overwrite"],
                 ["export", "coco", ws["mined"], link / "shards" / "00001.tar", "--overwrite"],
                 ["stats", ws["mined"], "--html", dotted, "--overwrite"],
                 ["segment", "--model", ws["seg"], "--classes", "a", link / "shards", "--output", ws["world"],
                  "--overwrite"]):
        code, _, err = run(capsys, *argv)
        assert code == 1 and "the input" in err, (argv, err)
    assert snapshot(ws["world"]) == before


def test_the_guard_and_the_lease_on_s3(ws, s3_endpoint, capsys):
    import boto3

    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    client.create_bucket(Bucket="guard")
    for path in ws["mined"].rglob("*"):
        if path.is_file():
            client.upload_file(str(path), "guard", f"mined/{path.relative_to(ws['mined'])}")

    def objects():
        listed = client.list_objects_v2(Bucket="guard").get("Contents", [])
        return {o["Key"]: client.get_object(Bucket="guard", Key=o["Key"])["Body"].read() for o in listed}

    s3 = ["--s3-endpoint", s3_endpoint]
    client.put_object(Bucket="guard", Key="cur/_lease.json", Body=b"")   # damaged: taken over at once
    assert run(capsys, "curate", "s3://guard/mined", "s3://guard/cur", *s3)[0] == 0
    assert run(capsys, "validate", "s3://guard/cur", *s3)[0] == 0
    before = objects()
    assert "cur/_lease.json" not in before
    for argv in (["curate", "s3://guard/cur", "s3://guard/mined", "--overwrite"],
                 ["curate", "s3://guard/mined", "s3://guard/mined/shards/x"],
                 ["export", "coco", "s3://guard/mined", "s3://guard/mined/manifest.json", "--overwrite"],
                 ["stats", "s3://guard/cur", "--html", "s3://guard/mined/_done/00000.json", "--overwrite"],
                 ["stats", "s3://guard/cur", "--html", "s3://guard/cur/", "--overwrite"]):
        code, _, err = run(capsys, *argv, *s3)
        assert code == 1 and "s3://guard/" in err and err.count("\n") == 1, (argv, err)
    assert objects() == before


def test_a_tampered_segmentation_listing_never_deletes_outside_its_folder(tmp_path):
    from PIL import Image
    from mining.segmentation.run import segment_inputs

    Image.new("RGB", (8, 6)).save(tmp_path / "x.jpg")
    out = tmp_path / "labels"
    segment_inputs(_Labels(), ["thing"], [str(tmp_path / "x.jpg")], out)
    victim = tmp_path / "victim.json"
    victim.write_text("keep")
    done = json.loads((out / "segmentation.json").read_text())
    (out / "segmentation.json").write_text(json.dumps(done | {"files": ["../victim.json", "x.png", "x.json"]}))
    segment_inputs(_Labels(), ["thing"], [str(tmp_path / "x.jpg")], out)
    assert victim.read_text() == "keep"
