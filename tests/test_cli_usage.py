"""The command line as a new user meets it: --version, help, misspelt flags, --set typos, shipped configs."""
import argparse
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from mining import __version__
from mining.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]


def leaf_commands(parser: argparse.ArgumentParser, path=()):
    """(words, parser) of every runnable subcommand, e.g. (('export', 'coco'), <parser>)."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
        return
    for name, child in subs[0].choices.items():
        yield from leaf_commands(child, (*path, name))


def run_main(capsys, *argv):
    try:
        code = main(list(argv))
    except SystemExit as stop:
        code = stop.code
    out, err = capsys.readouterr()
    return code, out, err


def test_version(capsys):
    code, out, _ = run_main(capsys, "--version")
    assert (code, out) == (0, f"ovmine {__version__}\n")


def test_every_command_describes_itself_with_an_example_and_its_defaults():
    commands = dict(leaf_commands(build_parser()))
    assert {("mine",), ("stats",), ("export", "coco"), ("train", "clip"), ("config", "show")} <= set(commands)
    for words, parser in commands.items():
        text = parser.format_help()
        assert parser.description, words
        examples = text.split("examples:\n")[1].splitlines()
        assert examples and all(("ovmine " + " ".join(words)) in line for line in examples), words
        for action in parser._actions:
            assert action.help, (words, action.option_strings or action.dest)   # every option says what it does
            if "--json" in action.option_strings:
                assert "JSON" in action.help, words
    mine_help = commands[("mine",)].format_help()
    assert "(default:" not in mine_help.split("--overwrite")[1].split("--json")[0]   # no "default: False"
    assert "(default: 20)" in commands[("stats",)].format_help()


def test_a_misspelt_flag_is_named_with_a_suggestion(capsys):
    code, out, err = run_main(capsys, "mine", "--config", "tiny", "--input", "x", "--ouput", "y")
    assert code == 2 and out == ""
    assert err == "ovmine mine: error: unknown option --ouput; did you mean --output? (see ovmine mine --help)\n"


def test_an_abbreviated_flag_is_not_called_unknown(capsys):
    code, _, err = run_main(capsys, "mine", "--config", "tiny", "--input", "x", "--out", "y", "--limit", "0")
    assert code == 2
    assert err == "ovmine mine: error: argument --limit: must be at least 1, got 0 (see ovmine mine --help)\n"


def test_a_misspelt_command_gets_a_suggestion(capsys):
    code, _, err = run_main(capsys, "minee")
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("ovmine: error: argument COMMAND: invalid choice: 'minee'")
    assert err.endswith("; did you mean mine? (see ovmine --help)\n")


def test_a_set_typo_is_blamed_on_set_not_on_the_config_file(capsys):
    code, _, err = run_main(capsys, "config", "show", "--config", "tiny", "--set", "match.min_similarty=0.3")
    assert (code, err) == (2, "ovmine: --set match.min_similarty=0.3: unknown field "
                              "(did you mean match.min_similarity?)\n")
    code, _, err = run_main(capsys, "config", "show", "--config", "tiny", "--set", "matchh.min_margin=0.3")
    assert (code, err) == (2, "ovmine: --set matchh.min_margin=0.3: unknown field (did you mean match?)\n")
    code, _, err = run_main(capsys, "config", "show", "--config", "tiny", "--set", "match.min_margin=high")
    assert code == 2 and err.startswith("ovmine: --set match.min_margin=high: Input should be a valid number")


def test_a_typo_in_the_file_is_blamed_on_the_file(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("match:\n  min_margn: 0.1\n")
    code, _, err = run_main(capsys, "config", "show", "--config", str(bad))
    assert (code, err) == (2, f"ovmine: {bad}: match.min_margn: unknown field (did you mean match.min_margin?)\n")


@pytest.mark.parametrize("where", ["before", "after"])
def test_verbosity_flags_are_accepted_before_and_after_the_subcommand(where):
    tail = ["mine", "--config", "tiny", "--input", "x", "--output", "y"]
    args = build_parser().parse_args(["-vv", *tail] if where == "before" else [*tail, "-vv"])
    assert args.verbose == 2 and args.quiet is False
    args = build_parser().parse_args(["-q", *tail] if where == "before" else [*tail, "-q"])
    assert args.quiet is True and args.verbose == 0


def test_shipped_configs_load_by_name_from_any_directory(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "mining.cli", "config", "show", "--config", "tiny", "--json",
                           "--set", "match.min_margin=0.125"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    resolved = json.loads(proc.stdout)
    assert resolved["match"]["min_margin"] == 0.125
    assert resolved["source"]["working_size"] == 128   # tiny.yaml's value, not the default 1024
    listed = subprocess.run([sys.executable, "-m", "mining.cli", "config", "list", "--json"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert {"tiny", "coco", "demo", "train_clip_toyworld"} <= set(json.loads(listed.stdout))


def test_config_show_prints_yaml_that_loads_back_to_the_same_config(tmp_path, capsys):
    from mining.config import load_config

    code, out, _ = run_main(capsys, "config", "show", "--config", "demo", "--set", "match.min_margin=0.2")
    assert code == 0 and out.startswith("# mine config resolved from ")
    copy = tmp_path / "resolved.yaml"
    copy.write_text(out)
    assert load_config(copy).resolved() == load_config("demo", ["match.min_margin=0.2"]).resolved()


def test_an_unknown_config_name_lists_the_shipped_ones(capsys):
    code, _, err = run_main(capsys, "config", "show", "--config", "tinny")
    assert code == 2 and err.startswith("ovmine: config file not found: tinny (or name a shipped config: ")
    assert "tiny" in err


@pytest.mark.skipif(shutil.which("uv") is None and not (Path(sys.executable).parent / "uv").exists(),
                    reason="uv builds the wheel")
def test_the_wheel_holds_only_the_mining_package_and_ships_the_configs(tmp_path):
    uv = shutil.which("uv") or str(Path(sys.executable).parent / "uv")
    subprocess.run([uv, "build", "--wheel", "-q", "-o", str(tmp_path), str(ROOT)], check=True, timeout=300)
    (wheel,) = tmp_path.glob("ovmine-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"mining", f"ovmine-{__version__}.dist-info"}
    shipped = {Path(n).name for n in names if n.startswith("mining/_configs/")}
    assert shipped == {p.name for p in (ROOT / "configs").glob("*.yaml")}
    assert "mining/toyworld/demo.yaml" in names


def test_submit_train_checks_the_config_before_it_contacts_the_cluster(capsys):
    code, _, err = run_main(capsys, "submit", "train", "clip", "--address", "http://127.0.0.1:9", "--config",
                            "train_clip_toyworld", "--data", "s3://b/mined", "--output", "s3://b/clip",
                            "--set", "stepz=3")
    assert (code, err) == (2, "ovmine: --set stepz=3: unknown field (did you mean steps?)\n")


def test_the_train_job_runs_ray_train_with_the_given_arguments():
    from mining.cluster.submit import train_entrypoint

    line = train_entrypoint("clip", "configs/train_clip_toyworld.yaml", ["s3://b/a", "s3://b/b"], "s3://b/clip",
                            ["workers=4"])
    assert line == ("python -m jobs.train clip --config configs/train_clip_toyworld.yaml --data s3://b/a s3://b/b "
                    "--output s3://b/clip --set workers=4")
    args = build_parser().parse_args(["train", *line.split()[3:], "--executor", "ray"])   # what jobs/train.py runs
    assert (args.model, args.executor, args.data, args.overrides) == ("clip", "ray", ["s3://b/a", "s3://b/b"],
                                                                      ["workers=4"])
    assert '"--executor", "ray"' in (ROOT / "jobs" / "train.py").read_text()


def test_every_command_that_prints_results_has_json():
    commands = dict(leaf_commands(build_parser()))
    for words, parser in commands.items():
        has_json = any("--json" in a.option_strings for a in parser._actions)
        if words == ("parse",):   # its output is JSON already, one object per caption
            assert not has_json and "JSON" in parser.description
        else:
            assert has_json, words


def test_sample_data_json_names_what_it_wrote(tmp_path, capsys):
    code, out, _ = run_main(capsys, "sample-data", str(tmp_path / "d"), "--shards", "2", "--per-shard", "3", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["images"] == 6 and [Path(p).name for p in doc["shards"]] == ["00000.tar", "00001.tar"]


def test_jobs_actions_are_commands_of_their_own_and_the_address_defaults_as_rays_cli(capsys, monkeypatch):
    commands = dict(leaf_commands(build_parser()))
    assert {("jobs", a) for a in ("list", "status", "logs", "stop")} <= set(commands)
    assert "JOB_ID" in commands[("jobs", "logs")].format_help()
    assert "JOB_ID" not in commands[("jobs", "list")].format_help()
    code, _, err = run_main(capsys, "jobs", "stop", "--address", "http://127.0.0.1:9")
    assert code == 2 and "required: JOB_ID" in err
    for name in ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    code, _, err = run_main(capsys, "jobs", "list")
    assert code == 2 and "--address" in err
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")   # a GCS address, as `ray start` prints it
    code, _, err = run_main(capsys, "jobs", "list")
    assert code == 1 and "--address 127.0.0.1:6379 has no scheme: use http://127.0.0.1:6379" in err
    monkeypatch.setenv("RAY_API_SERVER_ADDRESS", "http://127.0.0.1:9")   # first, as in Ray's job CLI
    code, _, err = run_main(capsys, "jobs", "list")
    assert code == 1 and "no Ray dashboard answers at http://127.0.0.1:9" in err


def test_config_show_tells_every_shipped_kind_and_init_copies_one_that_loads_anywhere(tmp_path, capsys):
    from mining.config import load_config, shipped_configs
    from mining.train.config import load_train_config

    for name in shipped_configs():
        code, out, err = run_main(capsys, "config", "show", "--config", name, "--json")
        assert code == 0, (name, err)
        resolved = json.loads(out)
        kind = ("train-segmenter" if "no_object_weight" in resolved else
                "train-clip" if "pair_weight" in resolved else "mine")
        assert kind == ("mine" if not name.startswith("train_") else
                        "train-segmenter" if name.startswith("train_segmenter") else "train-clip"), name
    copy = tmp_path / "mine.yaml"
    assert run_main(capsys, "config", "init", "demo", str(copy))[0] == 0
    text = copy.read_text()
    assert text.startswith("#") and "${TOYWORLD_WEIGHTS}" in text and str(ROOT) not in text
    assert load_config(copy).resolved() == load_config("demo").resolved()
    code, _, err = run_main(capsys, "config", "init", "train_clip_toyworld", str(copy))
    assert code == 1 and "exists" in err and copy.read_text() == text   # nothing replaced without --overwrite
    shipped = str(shipped_configs()["demo"])
    code, _, err = run_main(capsys, "config", "init", "demo", shipped, "--overwrite")   # the write guard's rules
    assert code == 1 and "is the input" in err
    assert run_main(capsys, "config", "init", "train_clip_toyworld", str(copy), "--overwrite")[0] == 0
    assert load_train_config(copy).wise_ft == load_train_config("train_clip_toyworld").wise_ft
    code, out, _ = run_main(capsys, "config", "show", "--config", str(copy))
    assert code == 0 and out.startswith("# train-clip config resolved from ")


def test_quiet_prints_only_errors_yet_json_and_answers_still_show(tmp_path, capsys):
    data = ["sample-data", str(tmp_path / "d"), "--shards", "1", "--per-shard", "2", "--size", "16"]
    assert run_main(capsys, "-q", *data) == (0, "", "")
    assert run_main(capsys, "config", "init", "demo", str(tmp_path / "c.yaml"), "-q") == (0, "", "")
    code, out, err = run_main(capsys, "toyworld", "make", str(tmp_path / "w"), "--shards", "1", "--per-shard", "2",
                              "--size", "16", "-q", "--json")   # a machine asked for it: printed
    assert (code, err) == (0, "") and json.loads(out)["images"] == 2
    code, out, err = run_main(capsys, "-q", *data)   # a mistake is still told, on stderr, with its exit code
    assert code == 1 and out == "" and err.startswith("ovmine: ") and "--overwrite" in err
    code, out, _ = run_main(capsys, "-q", "config", "show", "--config", "tiny")   # the answer is what was asked for
    assert code == 0 and out.startswith("# mine config resolved from ")
