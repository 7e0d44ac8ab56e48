"""The README's examples work: its tour runs end to end offline, and every other `ovmine` line parses."""
import re
import shlex
from pathlib import Path

import pytest

from mining.cli import build_parser, main

README = Path(__file__).resolve().parents[1] / "README.md"
TOUR_MARK = "<!-- tour: tests/test_readme.py runs every line of the next block -->"


def code_blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, re.S)


def commands(block: str) -> list[list[str]]:
    """The `ovmine ...` lines of a bash block: comments dropped, continuations joined."""
    joined = re.sub(r"\\\n\s*", " ", block)
    found = []
    for line in joined.splitlines():
        line = line.split("  #")[0].strip()
        if line.startswith("ovmine "):
            found.append(shlex.split(line)[1:])
    return found


def tour_block() -> str:
    text = README.read_text()
    assert TOUR_MARK in text, "the README lost its tour"
    return code_blocks(text.split(TOUR_MARK, 1)[1])[0]


def test_every_ovmine_line_in_the_readme_parses():
    parser = build_parser()
    lines = [argv for block in code_blocks(README.read_text()) for argv in commands(block)]
    assert len(lines) >= 20
    for argv in lines:
        if any("|" in word for word in argv):   # `ovmine jobs status|logs|stop`: one line standing for several
            continue
        try:
            parser.parse_args([word.replace("<submission-id>", "raysubmit_1") for word in argv])
        except SystemExit as stop:
            pytest.fail(f"README line does not parse (exit {stop.code}): ovmine {shlex.join(argv)}")


def test_the_readme_tour_runs_offline(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    steps = commands(tour_block())
    assert [s[0] for s in steps[:2]] == ["toyworld", "mine"] and len(steps) >= 8
    for argv in steps:
        code = main(argv)
        out, err = capsys.readouterr()
        assert code == 0, f"ovmine {shlex.join(argv)} exited {code}:\n{err[-2000:]}"
    assert (tmp_path / "tour" / "mined" / "manifest.json").is_file()
    assert (tmp_path / "tour" / "report.html").stat().st_size > 10_000
    assert (tmp_path / "tour" / "clip" / "open_clip_config.json").is_file()
