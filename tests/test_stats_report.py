"""`ovmine stats` numbers that mean what they say: a curated output against its mining run's images, the
throughput a rerun that mines nothing keeps, a run in progress, `--compare`, refused counts; on the output of
one real (local-executor) mining run whose inputs include images that are dropped for three reasons."""
import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import TINY, jpeg_bytes, scene, write_tar
from mining.cli import main
from mining.config import build_config
from mining.postrun.curate import CurationFilters, curate
from mining.postrun.stats import compute_stats
from mining.sinks.commits import committed_markers
from mining.sinks.manifest import build_manifest
from mining.sinks.reader import iter_records, read_manifest, read_pairs
from mining.toyworld.make import make_shards

DROPPED = {"decode_error": 1, "no_caption": 1, "no_entities": 1}


def tiny_cfg():
    return build_config({k: dict(v) for k, v in TINY.items()})


def mine_with_drops(root: Path) -> Path:
    """Mine two synthetic shards and one whose samples are dropped for DROPPED's reasons (one kept); returns
    the output folder."""
    from mining.pipeline import run_mining

    make_shards(root / "in", shards=2, per_shard=4, size=96)
    write_tar(root / "in" / "00002.tar", [
        ("a0.jpg", jpeg_bytes(scene(1))), ("a0.txt", b"a picture"),
        ("a1.jpg", b"not a jpeg at all"), ("a1.txt", b"a red square on grass"),
        ("a2.jpg", jpeg_bytes(scene(2))), ("a2.txt", b""),
        ("a3.jpg", jpeg_bytes(scene(3))), ("a3.txt", b"a red square on green grass"),
    ])
    run_mining(tiny_cfg(), [str(root / "in")], str(root / "out"))
    return root / "out"


@pytest.fixture(scope="module")
def mined(tmp_path_factory) -> Path:
    out = mine_with_drops(tmp_path_factory.mktemp("stats"))
    assert read_manifest(str(out))["totals"]["drops"] == DROPPED
    return out


def run(capsys, *argv) -> tuple[int, str, str]:
    try:
        code = main([str(a) for a in argv])
    except SystemExit as stop:   # argparse's usage errors
        code = stop.code
    out, err = capsys.readouterr()
    return code, out, err


def median_similarity(output: Path) -> float:
    return float(np.median(read_pairs(str(output)).column("similarity").to_numpy()))


@pytest.mark.parametrize("flag", ["--top", "--gallery"])
@pytest.mark.parametrize("value", ["-3", "0"])
def test_top_and_gallery_must_be_positive_counts(flag, value, tmp_path, capsys):
    code, out, err = run(capsys, "stats", tmp_path, flag, value)
    assert (code, out) == (2, "")
    assert err == f"ovmine stats: error: argument {flag}: must be at least 1, got {value} (see ovmine stats --help)\n"


def test_per_noun_similarity_matches_the_pairs(mined):
    stats = compute_stats(str(mined), top_k=3)
    table = read_pairs(str(mined)).to_pylist()
    assert [row["noun"] for row in stats["nouns"]] == [noun for noun, _ in stats["top_nouns"]]
    for row in stats["nouns"]:
        sims = np.array([p["similarity"] for p in table if p["noun"] == row["noun"]])
        assert row["pairs"] == len(sims) == sum(row["similarity_counts"])
        assert row["similarity_mean"] == pytest.approx(sims.mean(), abs=1e-5)
        assert row["share"] == pytest.approx(len(sims) / len(table))


def test_curated_output_speaks_of_its_mining_run(mined, tmp_path, capsys):
    threshold = median_similarity(mined)
    cur = tmp_path / "cur"
    curated = curate(str(mined), str(cur), CurationFilters(min_similarity=threshold))
    source = read_manifest(str(mined))
    lineage = curated["lineage"]
    assert lineage["mining_output"] == str(mined) and lineage["mining_totals"] == source["totals"]
    assert lineage["curate_seconds"] > 0
    # the mining run's throughput and stage seconds, not curate's
    assert (curated["images_per_second"], curated["wall_seconds"], curated["mined_images"]) == \
        (source["images_per_second"], source["wall_seconds"], source["mined_images"])
    assert curated["timings"] == source["timings"]

    stats = compute_stats(str(cur))
    kept = stats["images_with_pairs"]
    curated_out = source["totals"]["images_with_pairs"] - kept
    assert 0 < kept < source["totals"]["images_with_pairs"]
    assert stats["images_in"] == source["totals"]["images_in"] == 12
    assert stats["drops"] == dict(sorted((DROPPED | {"curated_out": curated_out}).items()))
    assert stats["images_in"] == kept + sum(stats["drops"].values())
    assert stats["images_per_second"] == source["images_per_second"]

    code, out, _ = run(capsys, "stats", cur)
    assert code == 0
    lines = out.splitlines()
    assert lines[1] == (f"  curated from {mined}: images in 12, with pairs {source['totals']['images_with_pairs']}, "
                        f"pairs {source['totals']['pairs']} -> kept {kept} images, {stats['pairs']} pairs "
                        f"(min_similarity {threshold}) in {lineage['curate_seconds']:.1f} s")
    assert "  images in             12  (read by the mining run)" in lines
    assert (f"  images/s              {source['images_per_second']:.2f} ({source['mined_images']} images in "
            f"{source['wall_seconds']:.1f} s wall, the mining run {mined})") in lines
    assert f"    curated_out         {curated_out}" in lines

    # every record curate read has its fate, with the filter that removed its pairs
    status = pq.read_table(cur / "status" / "00000.parquet").to_pylist()
    by_key = {r.key: r for r in iter_records(str(mined)) if r.shard.endswith("00000.tar")}
    assert sorted(row["key"] for row in status) == sorted(by_key)
    for row in status:
        survivors = sum(p.similarity >= threshold for p in by_key[row["key"]].pairs)
        removed = len(by_key[row["key"]].pairs) - survivors
        assert row["pairs"] == survivors
        assert row["status"] == ("kept" if survivors else "curated_out")
        assert row["detail"] == (None if survivors else f"pairs filtered by min_similarity ({removed})")


def test_a_run_in_progress_reports_what_is_committed(mined, tmp_path, capsys):
    partial = tmp_path / "partial"
    shutil.copytree(mined, partial)
    (partial / "manifest.json").unlink()
    (partial / "_done" / "00001.json").unlink()   # a shard being written: files there, no marker yet
    markers = [json.loads((partial / "_done" / f"{stem}.json").read_text()) for stem in ("00000", "00002")]
    code, out, err = run(capsys, "stats", partial)
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[1] == ("  run in progress or interrupted: 2 shards committed so far, no manifest yet; "
                        "rerun the mine command to finish it")
    assert f"  images in             {sum(m['images_in'] for m in markers)}" in lines
    assert f"  pairs                 {sum(m['pairs'] for m in markers)}" in lines
    assert "  images/s              - (not measured until the run finishes)" in lines
    assert "    decode_error        1" in lines

    code, out, _ = run(capsys, "stats", partial, "--json")
    doc = json.loads(out)
    assert code == 0 and doc["state"] == "in_progress" and doc["shards"] == 2
    assert doc["pairs"] == sum(m["pairs"] for m in markers) == sum(n for _, n in doc["top_nouns"])
    assert doc["images_per_second"] is None and doc["config"] is None


def test_a_rerun_that_mines_nothing_keeps_the_miners_throughput(mined, tmp_path, monkeypatch, capsys):
    from mining import pipeline

    again = tmp_path / "again"
    shutil.copytree(mined, again)
    first = read_manifest(str(again))
    assert first["mined_images"] == 12 and first["throughput_of"] == first["created"]
    # the full path (every marker read), as when the manifest does not describe the listing
    monkeypatch.setattr(pipeline, "manifest_if_current", lambda *args, **kwargs: None)
    rerun = pipeline.run_mining(tiny_cfg(), [str(mined.parent / "in")], str(again))
    assert rerun["totals"] == first["totals"]
    assert {k: rerun[k] for k in ("wall_seconds", "images_per_second", "mined_images", "throughput_of")} == \
        {k: first[k] for k in ("wall_seconds", "images_per_second", "mined_images", "throughput_of")}
    assert rerun["timings"] == first["timings"]
    code, out, _ = run(capsys, "stats", again)
    assert code == 0
    assert (f"  images/s              {first['images_per_second']:.2f} (12 images in {first['wall_seconds']:.1f} s "
            f"wall, the run of {first['created']} (the last run mined nothing))") in out.splitlines()

    # killed after its last commit, before the manifest: no run left a figure to keep, and none is made up
    (again / "manifest.json").unlink()
    rerun = pipeline.run_mining(tiny_cfg(), [str(mined.parent / "in")], str(again))
    assert (rerun["images_per_second"], rerun["mined_images"], rerun["throughput_of"]) == (0.0, 0, rerun["created"])
    code, out, _ = run(capsys, "stats", again)
    assert "  images/s              - (no run that wrote this output mined any image)" in out.splitlines()


def test_build_manifest_carries_a_given_previous_throughput(mined):
    previous = read_manifest(str(mined))
    markers = committed_markers(str(mined))
    # `previous` is what the output had when the run started (the run deletes it before mining)
    manifest = build_manifest("/nonexistent", sorted(markers), tiny_cfg(), 0.01, images_this_run=0,
                              markers=markers, previous=previous)
    assert (manifest["images_per_second"], manifest["throughput_of"]) == (previous["images_per_second"],
                                                                           previous["created"])
    other = dict(previous, config_hash="0" * 16)   # another config's figure is not this run's
    manifest = build_manifest("/nonexistent", sorted(markers), tiny_cfg(), 0.01, images_this_run=0,
                              markers=markers, previous=other)
    assert (manifest["images_per_second"], manifest["mined_images"]) == (0.0, 0)


def test_compare_two_outputs(mined, tmp_path, capsys):
    cur = tmp_path / "cur"
    curate(str(mined), str(cur), CurationFilters(min_similarity=median_similarity(mined)))
    a, b = Counter(read_pairs(str(mined)).column("noun").to_pylist()), Counter(read_pairs(str(cur)).column("noun").to_pylist())
    code, out, err = run(capsys, "stats", mined, "--compare", cur, "--json")
    assert (code, err) == (0, "")
    doc = json.loads(out)
    compare = doc["compare"]
    assert (compare["a"], compare["b"]) == (str(mined), str(cur))
    assert compare["totals"]["pairs"] == [sum(a.values()), sum(b.values())]
    assert compare["totals"]["images_in"] == [12, 12]
    assert compare["drops"]["curated_out"] == [0, doc["b"]["drops"]["curated_out"]]
    assert {n["noun"]: (n["a"], n["b"]) for n in compare["nouns"]} == {n: (a[n], b[n]) for n in set(a) | set(b)}
    assert compare["nouns_only_in_a"]["count"] == len(set(a) - set(b))

    code, out, _ = run(capsys, "stats", mined, "--compare", cur)
    lines = out.splitlines()
    assert code == 0
    assert lines[:3] == [f"A {mined}  (config {doc['a']['config_hash']})", f"B {cur}  (config {doc['b']['config_hash']})",
                         f"  {'':<22}{'A':>10}{'B':>10}{'B - A':>10}"]
    pairs_a, pairs_b = sum(a.values()), sum(b.values())
    assert f"  {'pairs':<22}{pairs_a:>10}{pairs_b:>10}{pairs_b - pairs_a:>+10d}" in lines
    top = max(a, key=lambda n: (a[n], n))
    assert any(line.split() == [top, str(a[top]), str(b[top]), f"{b[top] - a[top]:+d}"] for line in lines)

    missing = tmp_path / "nowhere"
    assert run(capsys, "stats", mined, "--compare", missing) == (1, "", f"ovmine: error: no such output: {missing}\n")
