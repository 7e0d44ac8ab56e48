"""What `ovmine mine` says while it runs and what it leaves to inspect: one line per committed shard off a
terminal, the shards it skips, a bar built from our stage names, start-up and model loading apart in the
summary, a stats file per committed shard that `validate` checks, and a Ray run without Ray's noise."""
import io
import json
import re
import shutil
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

from mining.cli.mine import ConsoleProgress, Tally, progress_mode, wall_breakdown
from mining.config import StageResources
from mining.inflight import InFlight, Passed
from mining.postrun.validate import check_output
from mining.records import Drop, Sample
from mining.schemas import validate
from mining.stages.base import Stage
from mining.toyworld.make import make_shards

TINY = ["--config", "configs/tiny.yaml", "--set", "source.working_size=64"]


def ovmine(*args):
    """The CLI as a user runs it off a terminal: stderr is a pipe."""
    result = subprocess.run([sys.executable, "-m", "mining.cli", *args], capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stderr
    return result


def markers(out):
    return {p.stem: json.loads(p.read_text()) for p in sorted((out / "_done").glob("*.json"))}


@pytest.fixture(scope="module")
def local_runs(tmp_path_factory):
    """Two shards mined, a rerun over three (the first two are skipped), then quiet reruns with nothing to do."""
    root = tmp_path_factory.mktemp("progress")
    make_shards(root / "in", shards=3, per_shard=2, size=64)
    out = root / "out"
    first = ovmine("mine", *TINY, "--executor", "local", "--input", str(root / "in" / "00000.tar"),
                   str(root / "in" / "00001.tar"), "--output", str(out))
    first_markers = markers(out)
    rerun = ovmine("mine", *TINY, "--executor", "local", "--input", str(root / "in"), "--output", str(out), "--json")
    quiet = ovmine("mine", *TINY, "--executor", "local", "--input", str(root / "in"), "--output", str(out), "-q")
    quiet_json = ovmine("-q", "mine", *TINY, "--executor", "local", "--input", str(root / "in"), "--output", str(out),
                        "--json")
    return SimpleNamespace(root=root, out=out, first=first, first_markers=first_markers, rerun=rerun, quiet=quiet,
                           quiet_json=quiet_json)


def shard_line(marker, done, total):
    dropped = sum(marker["drops"].values())
    return re.escape(f"shard {marker['name']} committed: {marker['images_in']} images, {marker['pairs']} pairs, "
                     f"{dropped} dropped ({done}/{total} shards, ") + r"(\d+\.\d|0\.\d\d) images/s\)"


def test_off_a_terminal_each_committed_shard_is_one_line(local_runs):
    out, first = local_runs.out, local_runs.first
    lines = first.stderr.splitlines()
    assert lines[0] == f"mining 2 shard(s) into {out}"
    assert "loading models ..." in lines
    committed = [line for line in lines if line.startswith("shard ")]
    assert len(committed) == 2
    for done, (line, marker) in enumerate(zip(committed, local_runs.first_markers.values()), start=1):
        assert re.fullmatch(shard_line(marker, done, 2), line), line
    assert "\r" not in first.stderr, "no progress bar off a terminal"


def test_a_rerun_says_what_it_skips(local_runs):
    out, rerun = local_runs.out, local_runs.rerun
    lines = rerun.stderr.splitlines()
    assert lines[0] == f"2 of 3 shards already committed in {out}; mining 1"
    committed = [line for line in lines if line.startswith("shard ")]
    assert len(committed) == 1 and re.fullmatch(shard_line(markers(out)["00002"], 3, 3), committed[0])
    summary = json.loads(rerun.stdout.strip().splitlines()[-1])
    assert summary["shards"] == {"planned": 3, "already_committed": 2, "mined": 1}


def test_quiet_prints_nothing_but_json_when_asked(local_runs):
    assert (local_runs.quiet.stdout, local_runs.quiet.stderr) == ("", "")
    summary = json.loads(local_runs.quiet_json.stdout)   # one object, nothing else: a machine asked for it
    assert local_runs.quiet_json.stderr == "" and summary["shards"] == {"planned": 3, "already_committed": 3,
                                                                         "mined": 0}


def test_a_rerun_that_mines_nothing_passes_off_no_earlier_timings(local_runs):
    from mining.cli.mine import _summary
    from mining.sinks.reader import read_manifest

    tally = Tally(shards=3, committed_before=3, done=3)
    text = _summary(read_manifest(str(local_runs.out)), str(local_runs.out), tally)
    assert "shards             3 (3 already committed, 0 mined now)" in text and "images in" in text
    assert f"timings            none: nothing was mined now (the runs that mined it: ovmine stats " \
           f"{local_runs.out})" in text
    assert "wall time" not in text and "images/s" not in text and "driver" not in text


def test_summary_and_json_report_start_up_and_model_loading_apart(local_runs):
    out, first, rerun = local_runs.out, local_runs.first, local_runs.rerun
    wall = re.search(r"wall time +([\d.]+) s = model loading ([\d.]+) \+ mining ([\d.]+)", first.stdout)
    assert wall, first.stdout
    total, loading, mining = map(float, wall.groups())
    assert loading > 0 and abs(total - loading - mining) <= 0.15, "the parts add up to the wall time"
    assert "ray start-up" not in first.stdout, "the local executor starts no Ray"
    assert re.search(r"stage work \(s\) +decode [\d.]+, entities [\d.]+, teacher [\d.]+, regions [\d.]+, match "
                     r"[\d.]+  \(summed worker seconds\)", first.stdout), first.stdout
    assert re.search(r"model loading \(s\) +entities [\d.]+, teacher [\d.]+, regions [\d.]+", first.stdout)
    assert "driver" not in first.stdout, "in-process, the driver line says nothing (it shows with -v or on Ray)"
    t = json.loads(rerun.stdout.strip().splitlines()[-1])["timings"]
    assert t["wall_ray_startup"] == 0 and t["wall_model_loading"] > 0 and t["setup_regions"] >= 0
    assert {"setup_entities", "setup_teacher", "setup_regions"} <= set(t) and "setup_decode" not in t
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["timings"] == t
    parts = t["wall_ray_startup"] + t["wall_model_loading"] + t["wall_mining"]
    assert parts == pytest.approx(manifest["wall_seconds"], abs=0.01)


def test_each_commit_writes_a_stats_file_that_agrees_with_its_marker(local_runs):
    root, out = local_runs.root, local_runs.out
    for stem, marker in markers(out).items():
        stats = json.loads((out / "stats" / f"{stem}.json").read_text())
        validate("shard_stats", stats)
        assert stats["input"] == str(root / "in" / f"{stem}.tar") and stats["name"] == stem
        assert (stats["images_in"], stats["images_with_pairs"], stats["pairs"], stats["drops"]) == \
            (marker["images_in"], marker["images_with_pairs"], marker["pairs"], marker["drops"])
        assert stats["stage_seconds"] == marker["timings"] and set(stats["stage_seconds"]) >= {"decode", "match"}
        assert stats["started"] < stats["finished"] and stats["wall_seconds"] > 0
    check_output(str(out))


def test_validate_rejects_a_tampered_stats_file(local_runs, tmp_path):
    out = local_runs.out
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    path = copy / "stats" / "00001.json"
    good = json.loads(path.read_text())
    path.write_text(json.dumps(good | {"images_in": good["images_in"] + 1}))
    with pytest.raises(ValueError, match=r"shard 00001: stats file says images_in 3, marker says 2"):
        check_output(str(copy))
    path.write_text(json.dumps({k: v for k, v in good.items() if k != "drops"}))
    with pytest.raises(ValueError, match=r"shard 00001: shard_stats does not match .*'drops' is a required"):
        check_output(str(copy))
    path.unlink()
    with pytest.raises(ValueError, match=r"shard 00001 has no stats file"):
        check_output(str(copy))


def test_the_stats_file_is_written_before_the_marker(tmp_path, tiny_cfg, monkeypatch):
    import mining.sinks.writer as writer
    from mining.storage import Location

    written = []
    real = Location.write_atomic
    monkeypatch.setattr(Location, "write_atomic", lambda where, data: (written.append(where.uri), real(where, data)))
    gone = Sample(shard="in/abc.tar", shard_stem="abc", key="k", index=0, shard_size=1).drop_with(Drop.NO_MASKS)
    marker = writer.write_shard([gone], str(tmp_path), "0123456789abcdef", started=1.0e9)
    assert [uri.split(str(tmp_path))[1] for uri in written[-2:]] == ["/stats/abc.json", "/_done/abc.json"]
    stats = json.loads((tmp_path / "stats" / "abc.json").read_text())
    assert stats["drops"] == {"no_masks": 1} == marker["drops"] and stats["started"].startswith("2001-09-09T01:46:40")


# the terminal bar and the lines, from their formatting

def marker(name, images, pairs, drops, timings):
    return {"name": name, "images_in": images, "pairs": pairs, "drops": drops, "timings": timings}


def test_the_bar_shows_totals_and_our_stage_names_in_flow_order():
    tally = Tally(shards=4, committed_before=1, images_planned=10, done=1)
    assert tally.bar_text().startswith("images 0/10, pairs 0, dropped 0, ")
    tally.add(marker("00001", 6, 9, {"no_entities": 2}, {"match": 1.0, "teacher": 6.0, "decode": 1.0,
                                                        "regions": 2.0}))
    text = tally.bar_text()
    assert re.fullmatch(r"images 6/10, pairs 9, dropped 2, \d+\.\d+ images/s \| decode 10% teacher 60% regions 20% "
                        r"match 10%", text), text
    assert "MapBatches" not in text
    steady = Tally(shards=40, committed_before=12, done=12, start=time.perf_counter() - 10)
    steady.add(marker("00003", 32, 11, {"no_entities": 3, "no_masks": 1}, {}))
    assert steady.shard_line(marker("00003", 32, 11, {"no_entities": 3, "no_masks": 1}, {})) == \
        "shard 00003 committed: 32 images, 11 pairs, 4 dropped (13/40 shards, 3.2 images/s)"
    assert Tally(shards=3).plan_line("OUT") == "mining 3 shard(s) into OUT"
    assert Tally(shards=40, committed_before=12).plan_line("OUT") == \
        "12 of 40 shards already committed in OUT; mining 28"
    assert Tally(shards=2, committed_before=2).plan_line("OUT") == \
        "all 2 shard(s) already committed in OUT; nothing to mine"


def test_bar_mode_draws_one_bar_and_quiet_mode_says_nothing():
    stream = io.StringIO()
    bar = ConsoleProgress("OUT", "bar", stream)
    bar.planned(3, 1, None)
    bar.phase("loading models")
    bar.committed(marker("00001", 4, 5, {}, {"decode": 1.0, "regions": 3.0}))
    bar.close()
    drawn = stream.getvalue()
    assert drawn.startswith("1 of 3 shards already committed in OUT; mining 2\n")
    assert "mining: " in drawn and "2/3" in drawn and "decode 25% regions 75%" in drawn
    assert "shard 00001 committed" not in drawn, "a terminal gets the bar, not the lines"
    quiet = io.StringIO()
    silent = ConsoleProgress("OUT", "quiet", quiet)
    silent.planned(3, 1, None)
    silent.phase("loading models")
    silent.committed(marker("00001", 4, 5, {}, {"decode": 1.0}))
    silent.failed({"input": "x.tar", "name": "00002", "error": "gone"})
    silent.close()
    assert quiet.getvalue() == "" and silent.tally.done == 3 and silent.tally.failed == 1


def test_progress_mode_follows_the_terminal_quiet_and_json():
    class Stream(io.StringIO):
        def __init__(self, tty):
            super().__init__()
            self.tty = tty

        def isatty(self):
            return self.tty

    from argparse import Namespace

    assert progress_mode(Namespace(quiet=False, json=False), Stream(True)) == "bar"
    assert progress_mode(Namespace(quiet=False, json=False), Stream(False)) == "lines"
    assert progress_mode(Namespace(quiet=False, json=True), Stream(True)) == "lines"
    assert progress_mode(Namespace(quiet=True, json=False), Stream(True)) == "quiet"
    assert progress_mode(Namespace(json=False), Stream(False)) == "lines", "before --quiet exists"


def test_wall_breakdown_names_ray_start_up_for_ray_runs_only():
    timings = {"decode": 1.0, "wall_ray_startup": 9.2, "wall_model_loading": 31.0, "wall_mining": 39.9}
    ray = {"timings": timings, "wall_seconds": 80.1, "config": {"execution": {"executor": "ray"}}}
    assert wall_breakdown(ray) == "80.1 s = ray start-up 9.2 + model loading 31.0 + mining 39.9"
    local = ray | {"config": {"execution": {"executor": "local"}}}
    assert wall_breakdown(local) == "80.1 s = model loading 31.0 + mining 39.9"
    assert wall_breakdown(ray | {"timings": {"decode": 1.0}}) == "80.1 s"


# one Ray run, as a user runs it

def test_a_healthy_ray_run_prints_no_deprecation_and_no_error_line(tmp_path):
    make_shards(tmp_path / "in", shards=2, per_shard=2, size=64)
    result = ovmine("mine", *TINY, "--executor", "ray", "--input", str(tmp_path / "in"),
                    "--output", str(tmp_path / "out"), "--json")
    err = result.stderr
    assert not re.search(r"mining/[\w/]+\.py:\d+: \w*Warning", err), "no warning from our own calls: " + err
    assert not re.search(r"\[\d{4}-\d\d-\d\d [\d:,]+ [EFC] \d+ \d+\]", err) and "core_worker.cc" not in err, err
    assert "Running Dataset" not in err and "row/s" not in err and "Progress bars" not in err, \
        "Ray Data draws no bars of its own, and does not say so"
    assert len([line for line in err.splitlines() if line.startswith("shard ")]) == 2
    for noise in ("Token authentication is enabled", "No pretrained weights loaded", "Loading weights"):
        assert noise not in err, f"{noise!r}: Ray's token notice, open_clip's word on a random model by request, " \
                                 f"transformers' loading bars are not ovmine's lines"
    t = json.loads(result.stdout.strip().splitlines()[-1])["timings"]
    assert t["wall_ray_startup"] > 0 and t["wall_model_loading"] > 0
    assert {"setup_entities", "setup_teacher", "setup_regions"} <= set(t)
    check_output(str(tmp_path / "out"))


@pytest.mark.parametrize("rate,shown", [(0.994, "0.99"), (0.996, "1.0"), (1.04, "1.0"), (12.34, "12.3")])
def test_the_rate_has_two_decimals_only_below_one_as_printed(rate, shown):
    tally = Tally(images=1000)
    tally.start = time.perf_counter() - 1000 / rate
    assert tally.rate() == shown


# within a shard: the stages' batches move the bar before the shard commits

def test_in_flight_weighs_each_stage_by_what_a_sample_costs_there():
    flight = InFlight(["decode", "teacher", "match"])
    flight.add([Passed("00000", 10, "decode", 10, 10, 1.0)])   # 0.1 s a sample; teacher and match: unknown yet
    assert flight.snapshot() == {"00000": (pytest.approx(10 / 3), 10)}, "an unheard stage costs the mean"
    flight.add([Passed("00000", 10, "teacher", 4, 4, 3.6), Passed("00001", 10, "decode", 2, 2, 0.2)])
    # seconds a sample: decode 0.1, teacher 0.9, match (unknown) their mean 0.5
    assert flight.snapshot()["00000"] == (pytest.approx((0.1 * 10 + 0.9 * 4) / 1.5), 10)
    flight.add([Passed("00000", 10, "decode", 10, 10, 1.0)])   # a retried batch reports again: capped at the shard
    assert flight.snapshot()["00000"][0] == pytest.approx((0.1 * 10 + 0.9 * 4) / 1.5)
    flight.close("00000")
    flight.add([Passed("00000", 10, "match", 10, 10, 0.5)])    # late, after the commit: not in flight any more
    assert set(flight.snapshot()) == {"00001"}


def test_the_bar_moves_with_work_in_flight_and_the_commit_sets_it_exact():
    stream = io.StringIO()
    progress = ConsoleProgress("OUT", "bar", stream)
    progress.planned(3, 0, 30)
    progress.in_flight({"00000": (4.5, 10), "00001": (2.0, 10)})
    assert progress.tally.images_shown() == 6 and progress.tally.position() == pytest.approx(0.65)
    drawn = str(progress.bar)   # what tqdm draws when its interval allows
    assert progress.bar.n == pytest.approx(0.65) and "images 6/30" in drawn
    assert " 22%|" in drawn and "| 0/3 [" in drawn, "the bar moves; the count shown stays the shards done"
    progress.committed(marker("00000", 9, 4, {"no_masks": 1}, {"decode": 1.0}))   # the estimate is not resent
    assert progress.tally.images_shown() == 11 and progress.bar.n == pytest.approx(1.2)
    assert "images 11/30" in stream.getvalue() and "| 1/3 [" in stream.getvalue(), "a commit draws at once"
    progress.failed({"input": "x.tar", "name": "00001", "error": "gone"})
    assert progress.tally.images_shown() == 9 and progress.bar.n == 2
    progress.in_flight({"00002": (40.0, 50)})   # more than the plan said (a shard retried, a bad count): capped
    assert progress.tally.images_shown() == 30 and progress.bar.n == pytest.approx(2.8)
    progress.close()
    assert ConsoleProgress("OUT", "lines").shows_in_flight is False and progress.shows_in_flight


class Recorder:
    """A listener that wants the work in flight, and opens the gate below once it has heard of some."""
    shows_in_flight = True

    def __init__(self, gate):
        self.gate, self.events = gate, []

    def planned(self, shards, committed, images):
        pass

    def phase(self, name):
        pass

    def in_flight(self, shards):
        self.events.append(("in_flight", dict(shards)))
        if any(0 < done < size for done, size in shards.values()):
            self.gate.touch()

    def committed(self, marker):
        self.events.append(("committed", marker["name"]))

    def failed(self, failure):
        self.events.append(("failed", failure["name"]))


class GateStage(Stage):
    """The last stage: holds its chunk until the driver has shown work in flight (or a minute has passed, and the
    test fails), so that on Ray too the commit cannot come first however the machine is loaded."""
    name = "gate"

    def __init__(self, gate):
        super().__init__(StageResources(concurrency=1, num_cpus=0.25, batch_size=2))
        self.gate = gate

    def process(self, samples):
        waited = 0
        while not self.gate.exists() and waited < 600:
            time.sleep(0.1)
            waited += 1


@pytest.mark.parametrize("executor", ["local", "ray"])
def test_the_stages_report_work_before_the_shard_commits(tmp_path, tiny_cfg, executor):
    from mining.pipeline import run_mining
    from mining.stages import build_stages

    make_shards(tmp_path / "in", shards=1, per_shard=6, size=64)
    cfg = tiny_cfg(source={"working_size": 64}, execution={"executor": executor, "teacher": {"batch_size": 2},
                                                           "decode": {"concurrency": 1}, "write": {"concurrency": 1}})
    recorder = Recorder(tmp_path / "gate")
    if executor == "ray":   # Ray's workers cannot import this test module: the gate travels by value
        from ray import cloudpickle

        cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        run_mining(cfg, [str(tmp_path / "in")], tmp_path / "out", progress=recorder,
                   stages=[*build_stages(cfg), GateStage(tmp_path / "gate")])
    finally:
        if executor == "ray":
            cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert recorder.events[-1] == ("committed", "00000")
    partial = [shards["00000"] for kind, shards in recorder.events[:-1] if kind == "in_flight" and "00000" in shards]
    assert partial and all(0 <= done <= size == 6 for done, size in partial), partial
    assert any(0 < done < 6 for done, _ in partial), partial
