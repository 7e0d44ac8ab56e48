"""The report's working parts, below the browser: the explorer's per-noun sample, the ground truth's verdict of
each pair, the audit file turned into estimated precision and into curate's deny-list, and the pairs one output
has and another lacks."""
import json
import math
from collections import Counter

import numpy as np
import pytest
from scipy.stats import norm

from mining.cli import main
from mining.postrun.audit import AUDIT_KIND, estimate, read_audit
from mining.postrun.compare_pairs import pair_differences
from mining.postrun.curate import CurationFilters, curate
from mining.postrun.explore import allocate, judge, sample_pairs
from mining.sinks.reader import read_manifest, read_pairs


def test_allocate_keeps_rare_nouns_whole_and_levels_the_frequent():
    counts = {"rare": 2, "mid": 7, "big": 50, "huge": 400}
    share = allocate(counts, 30)
    assert share["rare"] == 2 and share["mid"] == 7   # under the level: every pair
    assert sum(share.values()) == 30 and abs(share["big"] - share["huge"]) <= 1 and share["huge"] >= share["big"]
    assert allocate(counts, 10_000) == counts          # a budget above the total: everything
    assert allocate(counts, 2) == {"huge": 1, "big": 1}   # fewer than one per noun: the most frequent first
    assert allocate({}, 5) == {}


def test_the_sample_holds_every_pair_of_a_rare_noun_and_a_uniform_share_of_the_others(world_mined):
    root, _ = world_mined
    output = str(root / "all")
    pairs = read_pairs(output).to_pylist()
    counts = Counter(p["noun"] for p in pairs)
    budget = len(pairs) // 2
    sample = sample_pairs(output, counts, budget, seed=3)
    share = allocate(counts, budget)
    got = Counter(p.noun for p in sample.pairs)
    assert dict(got) == {n: k for n, k in share.items() if k}
    assert sample.shown == dict(got) and sample.totals == dict(counts)
    ids = {(p["shard"], p["key"], p["mask_index"], p["noun"]) for p in pairs}
    chosen = [(p.shard, p.key, p.mask_index, p.noun) for p in sample.pairs]
    assert len(set(chosen)) == len(chosen) and set(chosen) <= ids
    rare = [n for n, c in counts.items() if c <= min(share.values())]
    assert rare and all(got[n] == counts[n] for n in rare)
    again = sample_pairs(output, counts, budget, seed=3)
    assert [(p.key, p.mask_index) for p in again.pairs] == [(p.key, p.mask_index) for p in sample.pairs]


def test_ground_truth_verdicts_add_up_to_what_ovmine_eval_prints(world_mined, capsys):
    root, gt = world_mined
    output = str(root / "all")
    pairs = read_pairs(output).to_pylist()
    wanted = {(p["shard"], p["key"]) for p in pairs[:5]}
    truth = judge(output, gt, None, wanted)
    assert main(["eval", output, "--gt", gt, "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    rows = truth.noun_rows()
    assert sum(r["pairs"] for r in rows) == printed["pairs"]
    assert sum(r["judged"] for r in rows) == printed["judged_pairs"]
    assert sum(r["right"] for r in rows) == printed["correct_pairs"] > 0
    assert sum(r["duplicates"] for r in rows) == printed["duplicate_pairs"]
    # one verdict for every pair of the wanted images, and only those
    assert set(truth.verdicts) == {(p["shard"], p["key"], p["mask_index"], p["noun"]) for p in pairs
                                   if (p["shard"], p["key"]) in wanted}
    assert set(truth.verdicts.values()) <= {"right", "wrong", "duplicate", "unjudged"}


def wilson(right: int, n: int, z: float) -> tuple[float, float]:
    p = right / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def audit_doc(marks, config_hash="h"):
    return {"kind": AUDIT_KIND, "output": "o", "config_hash": config_hash,
            "marks": [{"shard": "s", "key": str(i), "mask": 0, "noun": noun, "verdict": verdict}
                      for i, (noun, verdict) in enumerate(marks)]}


def test_audit_estimates_precision_per_noun_with_wilson_intervals():
    marks = [("cat", "right")] * 7 + [("cat", "wrong")] * 3 + [("dog", "right"), ("dog", "wrong")] \
        + [("zebra", "right")]
    doc = audit_doc(marks)
    doc["marks"].append(dict(doc["marks"][0], verdict="wrong"))   # cat #0 marked again: the last mark counts
    result = estimate(doc, {"cat": 100, "dog": 2, "bird": 5})
    by_noun = {r["noun"]: r for r in result["nouns"]}
    assert set(by_noun) == {"cat", "dog"} and result["marks_of_other_nouns"] == 1 and result["marks"] == 13
    cat = by_noun["cat"]
    assert (cat["marked"], cat["right"], cat["precision"]) == (10, 6, 0.6)
    low, high = wilson(6, 10, norm.ppf(0.975))
    assert cat["interval"] == pytest.approx([low, high], abs=1e-4)
    assert by_noun["dog"]["interval"] == [0.5, 0.5]   # both of dog's pairs marked: known exactly
    overall = result["overall"]
    assert overall["precision"] == pytest.approx((100 * 0.6 + 2 * 0.5) / 102, abs=1e-4)
    assert overall["interval"][0] < overall["precision"] < overall["interval"][1]
    assert overall["pairs"] == 102 and overall["share_of_pairs"] == pytest.approx(102 / 107, abs=1e-4)


@pytest.mark.parametrize("content, why", [
    ("not json", "not a JSON audit file"),
    (json.dumps({"kind": "something else"}), "not an audit file saved by an ovmine report"),
    (json.dumps({"kind": AUDIT_KIND, "output": "o", "config_hash": "h",
                 "marks": [{"shard": "s", "key": "k", "mask": 0, "noun": "n", "verdict": "maybe"}]}), "marks/0/verdict: 'maybe' is not one of"),
    (json.dumps({"kind": AUDIT_KIND, "output": "o", "config_hash": "h", "marks": [{"shard": "s"}]}),
     "marks/0: 'key' is a required property"),
])
def test_a_bad_audit_file_is_one_line_naming_the_flag(tmp_path, content, why):
    path = tmp_path / "a.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=f"--audit {path}: {why}"):
        read_audit(str(path))
    with pytest.raises(ValueError, match="no such file"):
        read_audit(str(tmp_path / "missing.json"))


def marks_of(output: str, wrong_nouns: set[str]) -> dict:
    """An audit marking every pair of `output`: wrong for `wrong_nouns`, right otherwise."""
    pairs = read_pairs(output).to_pylist()
    return {"kind": AUDIT_KIND, "output": output, "config_hash": read_manifest(output)["config_hash"],
            "marks": [{"shard": p["shard"], "key": p["key"], "mask": p["mask_index"], "noun": p["noun"],
                       "verdict": "wrong" if p["noun"] in wrong_nouns else "right"} for p in pairs]}


def test_stats_and_curate_read_the_audit(world_mined, tmp_path, capsys):
    root, _ = world_mined
    output = str(root / "all")
    counts = Counter(read_pairs(output).column("noun").to_pylist())
    bad = sorted(counts)[:2]
    audit = tmp_path / "audit.json"
    audit.write_text(json.dumps(marks_of(output, set(bad))))

    assert main(["stats", output, "--audit", str(audit), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)["audit"]
    assert {r["noun"]: r["precision"] for r in result["nouns"]} == {n: 0.0 if n in bad else 1.0 for n in counts}
    assert main(["stats", output, "--audit", str(audit)]) == 0
    assert f"audit: {sum(counts.values())} pairs marked" in capsys.readouterr().out

    assert main(["curate", output, "--output", str(tmp_path / "cur"), "--audit", str(audit),
                 "--min-precision", "0.5", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert sorted(r["noun"] for r in printed["audit_deny"]) == bad
    kept = Counter(read_pairs(str(tmp_path / "cur")).column("noun").to_pylist())
    assert kept == Counter({n: c for n, c in counts.items() if n not in bad})
    assert read_manifest(str(tmp_path / "cur"))["lineage"]["filters"]["audit_deny"] == bad

    other = tmp_path / "other.json"
    other.write_text(json.dumps(dict(marks_of(output, set()), config_hash="0123456789abcdef")))
    assert main(["curate", output, "--output", str(tmp_path / "cur2"), "--audit", str(other),
                 "--min-precision", "0.5"]) == 1
    assert "marks the pairs of" in capsys.readouterr().err and not (tmp_path / "cur2").exists()
    assert main(["curate", output, "--output", str(tmp_path / "cur3"), "--min-precision", "0.5"]) == 2
    assert "--audit and --min-precision go together" in capsys.readouterr().err


def test_an_audit_leaves_the_curation_digest_of_a_run_without_one_as_it_was():
    plain = CurationFilters(min_similarity=0.2)
    assert "audit_deny" not in plain.to_json()
    assert plain.digest() != CurationFilters(min_similarity=0.2, audit_deny=["cat"]).digest()


def test_pairs_only_in_one_output_are_the_set_difference(world_mined, tmp_path):
    root, _ = world_mined
    output = str(root / "all")
    median = float(np.median(read_pairs(output).column("similarity").to_numpy()))
    curate(output, str(tmp_path / "cur"), CurationFilters(min_similarity=median))

    def ids(where):
        return {(p["shard"], p["key"], p["noun"], p["rle_counts"]) for p in read_pairs(where).to_pylist()}

    only_a, only_b = pair_differences(output, str(tmp_path / "cur"), k=3)
    expected = ids(output) - ids(str(tmp_path / "cur"))
    assert only_a.count == len(expected) > 3 and only_b.count == 0 and not only_b.sample
    assert len(only_a.sample) == 3
    assert {(p.shard, p.key, p.noun, p.rle_counts) for p in only_a.sample} <= expected
    # two different runs: each side's count is its own pairs the other lacks
    mined = str(root / "mined")
    a, b = pair_differences(output, mined, k=50)
    assert (a.count, b.count) == (len(ids(output) - ids(mined)), len(ids(mined) - ids(output)))


def test_dropped_samples_keep_their_entities_masks_and_the_closest_pair(world_mined):
    import pyarrow.parquet as pq

    from mining.postrun.report_drops import dropped_card, fetch_dropped, select_drops
    from mining.sinks.writer import DROPPED_EXAMPLES

    root, _ = world_mined
    output = root / "mined"
    floor = read_manifest(str(output))["config"]["match"]["min_similarity"]
    examples = {}
    for file in sorted((output / "dropped").glob("*.json")):
        doc = json.loads(file.read_text())
        status = {r["index"]: r for r in pq.read_table(output / "status" / f"{file.stem}.parquet").to_pylist()}
        dropped = [i for i, r in sorted(status.items()) if r["status"] == "no_confident_pair"]
        # the first of the shard's drops, in input order, each with its status and what matching saw
        assert [e["index"] for e in doc["samples"]] == dropped[:DROPPED_EXAMPLES]
        for e in doc["samples"]:
            assert e["entities"] and e["masks"] and e["detail"] == status[e["index"]]["detail"]
            similarity = float(e["detail"].split("similarity ")[1].split(" ")[0])
            assert e["detail"].startswith("closest: ") and f"< match.min_similarity {floor:g}" in e["detail"]
            assert similarity < floor
            examples[(file.stem, e["index"])] = e
    assert examples
    manifest = read_manifest(str(output))
    drops = select_drops(str(output), manifest, 4)
    pictures = fetch_dropped(str(output), manifest, drops)
    shown = drops["no_confident_pair"]
    assert shown and all(pictures[(s.stem, s.index)].evidence == examples[(s.stem, s.index)] for s in shown)
    card = dropped_card(shown[0], pictures)
    entities = ", ".join(e["phrase"] for e in examples[(shown[0].stem, shown[0].index)]["entities"])
    assert f"entities: {entities}" in card and 'class=mask alt="masks of' in card


def test_quiet_output_commands_print_nothing_but_errors(world_mined, tmp_path, capsys):
    root, _ = world_mined
    output = str(root / "mined")
    assert main(["validate", output, "-q"]) == 0
    assert main(["curate", output, "--output", str(tmp_path / "cur"), "--min-similarity", "0", "-q"]) == 0
    assert main(["export", "coco", str(tmp_path / "cur"), "--output", str(tmp_path / "coco.json"), "-q"]) == 0
    assert main(["stats", output, "--html", str(tmp_path / "r.html"), "--explore", "4", "-q"]) == 0
    assert capsys.readouterr() == ("", "") and (tmp_path / "r.html").stat().st_size > 0 \
        and (tmp_path / "coco.json").exists()
    assert main(["validate", output, "-q", "--json"]) == 0   # a machine asked for it
    assert json.loads(capsys.readouterr().out)["shards"] == 2
    assert main(["stats", output, "-q"]) == 0                # without --html the numbers are the answer
    assert "images in" in capsys.readouterr().out
    assert main(["validate", str(tmp_path / "nothing"), "-q"]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("ovmine: error:")


def test_a_large_output_is_sampled_from_a_few_shards(world_mined):
    root, _ = world_mined
    output = str(root / "all")
    pairs = read_pairs(output).to_pylist()
    counts = Counter(p["noun"] for p in pairs)
    sample = sample_pairs(output, counts, len(pairs), seed=0, max_shards=1)
    shards = {p.shard for p in sample.pairs}
    assert sample.shards == (1, 2) and len(shards) == 1
    (shard,) = shards
    # the budget covers the whole output, so every pair of the chosen shard is there, and none of the other's
    assert sorted((p.key, p.mask_index, p.noun) for p in sample.pairs) == sorted(
        (p["key"], p["mask_index"], p["noun"]) for p in pairs if p["shard"] == shard)
    assert sample.pool == dict(Counter(p["noun"] for p in pairs if p["shard"] == shard))
    assert sample.totals == dict(counts)
