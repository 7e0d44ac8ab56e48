"""The write step runs where the mining runs: a chunk holding its whole shard is committed at once, a shard
mined in chunks is written as parts and joined by the write that completes it. Either way the output is the
one a whole-shard run writes, and the driver hears back only small results."""
import json

import pyarrow.parquet as pq
import pytest

from mining.pipeline import run_mining
from mining.postrun.validate import check_output
from mining.records import Sample
from mining.sinks.parts import PARTS, join_parts, write_part
from mining.storage import Location
from mining.stages import build_stages
from mining.stages.read import read_chunks
from mining.stages.write import ShardWriter, WriteResult
from mining.toyworld.make import make_shards
from same_output import assert_same_output


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    """Two shards of 5 images mined whole, and their input."""
    from conftest import tiny_config

    root = tmp_path_factory.mktemp("whole")
    make_shards(root / "in", shards=2, per_shard=5, size=96)
    manifest = run_mining(tiny_config(execution={"executor": "local", "chunk_size": None}), [str(root / "in")],
                          str(root / "out"))
    return root, manifest


def counts(marker):
    """A marker's counts (stage seconds differ from run to run; nouns of equal count may come in any order)."""
    return {k: v for k, v in marker.items() if k not in ("timings", "nouns")} | {"nouns": sorted(marker["nouns"].items())}


def marker(out, stem):
    return json.loads((out / "_done" / f"{stem}.json").read_text())


def test_a_shard_mined_in_chunks_is_the_shard_mined_whole(whole, tiny_cfg, tmp_path):
    root, reference = whole
    manifest = run_mining(tiny_cfg(execution={"executor": "local", "chunk_size": 2}), [str(root / "in")],
                          str(tmp_path / "out"))
    assert_same_output(str(tmp_path / "out"), str(root / "out"))
    assert manifest["totals"] == reference["totals"]
    for stem in ("00000", "00001"):   # counts, and every sample's fate in input order, across the joined parts
        assert counts(marker(tmp_path / "out", stem)) == counts(marker(root / "out", stem))
        assert set(marker(tmp_path / "out", stem)["timings"]) == set(marker(root / "out", stem)["timings"])
        assert pq.read_table(tmp_path / "out" / "status" / f"{stem}.parquet").to_pylist() == \
            pq.read_table(root / "out" / "status" / f"{stem}.parquet").to_pylist()
        stats = json.loads((tmp_path / "out" / "stats" / f"{stem}.json").read_text())
        assert stats["images_in"] == 5 and stats["wall_seconds"] >= 0
    assert not (tmp_path / "out" / PARTS).exists(), "joined parts are removed"
    check_output(str(tmp_path / "out"))


def test_the_driver_receives_small_results_only(whole):
    _, manifest = whole
    driver = manifest["driver"]
    assert 0 < driver["received_bytes"] <= 2048 * manifest["totals"]["images_in"]
    assert driver["bytes_per_image"] == pytest.approx(driver["received_bytes"] / manifest["totals"]["images_in"],
                                                      abs=0.1)
    assert driver["cpu_seconds"] >= 0


def mined_chunks(cfg, uri, chunk_size):
    chunks = read_chunks(uri, None, chunk_size)
    stages = build_stages(cfg)
    for chunk in chunks:
        for stage in stages:
            stage.run(chunk.samples)
    return chunks


def test_the_last_part_joins_and_a_late_or_twin_join_changes_nothing(whole, tiny_cfg, tmp_path, monkeypatch):
    root, reference = whole
    cfg = tiny_cfg()
    out, digest = str(tmp_path / "out"), cfg.config_hash()
    chunks = mined_chunks(cfg, str(root / "in" / "00000.tar"), chunk_size=2)
    assert [(c.part, c.parts, len(c.samples)) for c in chunks] == [(0, 3, 2), (1, 3, 2), (2, 3, 1)]
    # parts arrive out of order; only the one that completes the shard commits it
    assert write_part(chunks[2], out, digest) is None
    assert write_part(chunks[0], out, digest) is None
    assert not (tmp_path / "out" / "_done").exists()
    listed = []
    real_list = Location.list
    monkeypatch.setattr(Location, "list",
                        lambda folder, suffix="": listed.extend(real_list(folder, suffix)) or list(listed))
    joined = write_part(chunks[1], out, digest)
    assert len(listed) == 3
    assert joined["name"] == "00000" and joined["images_in"] == 5
    assert counts(joined | {"schema_version": None}) == counts(marker(root / "out", "00000") | {"schema_version": None})
    committed = (tmp_path / "out" / "shards" / "00000.tar").read_bytes()
    # a twin that listed every part before the joiner removed them, and a retried write after the commit
    assert join_parts(chunks[1], out, digest) is None, "the stale listing's parts are gone, the marker is there"
    monkeypatch.undo()
    assert write_part(chunks[0], out, digest) is None
    assert (tmp_path / "out" / "shards" / "00000.tar").read_bytes() == committed
    assert not (tmp_path / "out" / PARTS / "00000").exists()


def test_leftover_parts_of_a_killed_run_are_not_output_and_are_removed(whole, tiny_cfg, tmp_path):
    root, _ = whole
    cfg = tiny_cfg(execution={"executor": "local", "chunk_size": 2})
    out = tmp_path / "out"
    chunks = mined_chunks(cfg, str(root / "in" / "00001.tar"), chunk_size=2)
    write_part(chunks[0], str(out), cfg.config_hash())   # a run killed after one part of three
    assert (out / PARTS / "00001").is_dir() and not (out / "_done").exists()
    run_mining(cfg, [str(root / "in")], str(out))
    assert not (out / PARTS).exists()
    assert_same_output(str(out), str(root / "out"))


def test_the_write_reports_an_unreadable_shard_instead_of_committing_it(tmp_path):
    sentinel = Sample(shard="in/x.tar", shard_stem="x", key="", index=0, sentinel=True, read_error="boom")
    from mining.config import StageResources
    from mining.records import ShardChunk

    writer = ShardWriter(str(tmp_path / "out"), "0123456789abcdef", StageResources())
    chunk = ShardChunk(uri="in/x.tar", stem="x", limit=None, part=0, parts=1, samples=[sentinel], started=0.0,
                       stamps={"ready_at:teacher": 1.0})
    result = writer.write(chunk)
    assert result.failed == {"input": "in/x.tar", "name": "x", "error": "boom"} and result.committed is None
    assert result.stamps == {"ready_at:teacher": 1.0}
    assert WriteResult.from_json(result.to_json()) == result   # what crosses from a Ray worker to the driver
    assert json.loads(result.to_json(stamps=False)) == {"failed": result.failed}
    with pytest.raises(ValueError, match="one of committed, part or failed"):
        WriteResult(committed={"name": "x"}, failed={"name": "x"})
    assert not (tmp_path / "out").exists()


def test_a_shard_in_chunks_keeps_the_dropped_examples_the_whole_shard_keeps():
    """Each chunk keeps its first examples of each drop reason; the join keeps the shard's first, as one write of
    the whole shard would."""
    import numpy as np

    from mining.masks import encode_json
    from mining.records import Drop, Entity
    from mining.sinks.writer import cap_examples, dropped_examples

    def sample(index: int, reason: Drop, entities: bool) -> Sample:
        s = Sample(shard="in.tar", shard_stem="in", key=f"k{index}", index=index)
        if entities:
            s.entities = [Entity("cat", "a cat", (0, 5), 0)]
            s.rles = encode_json(np.ones((1, 4, 4), bool))
            s.frame_size = (4, 4)
        return s.drop_with(reason, f"why {index}")

    samples = [sample(i, Drop.NO_CONFIDENT_PAIR if i % 3 else Drop.NO_MASKS, entities=i != 4) for i in range(12)]
    whole = dropped_examples(samples, per_reason=2)
    assert [(e["index"], e["reason"]) for e in whole] == [(0, "no_masks"), (1, "no_confident_pair"),
                                                          (2, "no_confident_pair"), (3, "no_masks")]
    assert whole[0]["masks"][0]["area"] == 16 and whole[0]["entities"][0]["noun"] == "cat"
    parts = [dropped_examples(samples[i:i + 5], per_reason=2) for i in (10, 5, 0)]   # parts join in any order
    assert cap_examples([e for part in parts for e in part], per_reason=2) == whole


def test_a_shard_written_again_without_dropped_examples_keeps_none_of_the_old_ones(tmp_path):
    from mining.sinks.layout import dropped_file
    from mining.sinks.writer import write_shard_files

    marker = {"input": "in.tar", "name": "s", "config_hash": "0" * 16, "limit": None, "images_in": 0,
              "images_with_pairs": 0, "pairs": 0, "drops": {}, "errors": [], "timings": {}, "nouns": {}}
    example = {"key": "k", "index": 0, "reason": "no_masks", "detail": None, "width": 4, "height": 4,
               "entities": [], "masks": []}
    write_shard_files(str(tmp_path), "s", [], marker, status=[], dropped=[example])
    assert json.loads(dropped_file(str(tmp_path), "s").read())["samples"] == [example]
    write_shard_files(str(tmp_path), "s", [], marker, status=[], dropped=[])
    assert not dropped_file(str(tmp_path), "s").exists()
