"""stats, curate and export coco on the output of a real (local-executor) mining run, checked against the
records themselves, locally and on the loopback S3 server."""
import json
from collections import Counter

import boto3
import numpy as np
import pytest
import yaml
from pycocotools.coco import COCO

from conftest import TINY
from mining.cli import main
from mining.config import build_config
from mining.postrun.curate import CurationFilters, curate
from mining.postrun.export_coco import export_coco
from mining.pipeline import run_mining
from mining.sinks.reader import iter_records, read_manifest, read_pairs
from mining.postrun.stats import compute_stats
from mining.storage import Location, S3Options
from mining.toyworld.make import make_shards
from mining.postrun.validate import check_output


@pytest.fixture(scope="module")
def mined(tmp_path_factory):
    root = tmp_path_factory.mktemp("mined")
    make_shards(root / "in", shards=3, per_shard=6, size=96)
    tree = {k: dict(v) for k, v in TINY.items()}
    run_mining(build_config(tree), [str(root / "in")], str(root / "out"))
    return root


def all_pairs(output, s3=None):
    return [(r, p) for r in iter_records(Location.of(output, s3)) for p in r.pairs]


def test_stats_match_the_records(mined):
    out = str(mined / "out")
    stats = compute_stats(out, top_k=3)
    pairs = all_pairs(out)
    nouns = Counter(p.noun for _, p in pairs)
    assert stats["pairs"] == len(pairs) and stats["unique_nouns"] == len(nouns)
    assert [c for _, c in stats["top_nouns"]] == sorted(nouns.values(), reverse=True)[:3]
    assert all(nouns[noun] == c for noun, c in stats["top_nouns"])
    assert sum(stats["long_tail"].values()) == len(nouns)
    assert stats["long_tail"]["10-99"] == sum(1 for n in nouns.values() if 10 <= n <= 99)
    sims = np.array([p.similarity for _, p in pairs])
    d = stats["distributions"]
    assert d["similarity"]["n"] == len(pairs) and d["similarity"]["mean"] == pytest.approx(sims.mean(), abs=1e-5)
    assert sum(d["similarity"]["counts"]) == len(pairs)
    assert d["similarity"]["p50"] == pytest.approx(np.quantile(sims, 0.5), abs=0.021)
    records = list(iter_records(out))
    assert d["masks_per_image"]["values"] == {str(k): v for k, v in sorted(Counter(len(r.masks) for r in records).items())}
    assert d["pairs_per_image"]["values"] == {str(k): v for k, v in sorted(Counter(len(r.pairs) for r in records).items())}
    areas = np.array([r.masks[p.mask_index].area for r, p in pairs])
    assert d["mask_area"]["mean"] == pytest.approx(areas.mean())
    manifest = read_manifest(out)
    assert stats["images_in"] == manifest["totals"]["images_in"] and stats["drops"] == manifest["totals"]["drops"]


def test_stats_cli_table_and_json(mined, capsys):
    out = str(mined / "out")
    assert main(["stats", out, "--json", "--top", "2"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert len(doc["top_nouns"]) == 2 and doc["pairs"] == read_pairs(out).num_rows
    assert main(["stats", out]) == 0
    text = capsys.readouterr().out
    assert f"pairs                 {doc['pairs']}" in text and "top nouns" in text


def test_curate_filters_and_lineage(mined, tmp_path):
    out = str(mined / "out")
    pairs = all_pairs(out)
    threshold = float(np.median([p.similarity for _, p in pairs]))
    manifest = curate(out, str(tmp_path / "cur"), CurationFilters(min_similarity=threshold))
    kept = all_pairs(str(tmp_path / "cur"))
    assert len(kept) == sum(p.similarity >= threshold for _, p in pairs) > 0
    assert all(p.similarity >= threshold for _, p in kept)
    assert manifest["lineage"]["input_config_hash"] == read_manifest(out)["config_hash"]
    assert manifest["lineage"]["filters"]["min_similarity"] == threshold
    t = manifest["totals"]
    assert t["images_in"] == read_manifest(out)["totals"]["images_with_pairs"]
    assert t["images_in"] == t["images_with_pairs"] + t["drops"].get("curated_out", 0)
    check_output(str(tmp_path / "cur"))
    assert read_manifest(out)["totals"]["pairs"] == len(pairs), "the input run is untouched"


def test_curate_max_per_noun_keeps_the_best(mined, tmp_path):
    out = str(mined / "out")
    curate(out, str(tmp_path / "cur"), CurationFilters(max_per_noun=2))
    kept = all_pairs(str(tmp_path / "cur"))
    by_noun: dict[str, list[float]] = {}
    for _, p in all_pairs(out):
        by_noun.setdefault(p.noun, []).append(p.similarity)
    assert Counter(p.noun for _, p in kept) == {n: min(2, len(v)) for n, v in by_noun.items()}
    for _, p in kept:
        assert p.similarity >= sorted(by_noun[p.noun], reverse=True)[min(2, len(by_noun[p.noun])) - 1]


def test_curate_noun_lists_synonyms_and_min_count(mined, tmp_path):
    out = str(mined / "out")
    nouns = Counter(p.noun for _, p in all_pairs(out))
    top, second, *rest = [n for n, _ in nouns.most_common()]
    synonyms = tmp_path / "syn.yaml"
    synonyms.write_text(yaml.safe_dump({"thing-a": [top, second]}))
    deny = tmp_path / "deny.txt"
    deny.write_text(f"# never\n{rest[0]}\n")
    assert main(["curate", out, str(tmp_path / "cur"), "--merge-synonyms", str(synonyms), "--nouns-deny", str(deny),
                 "--min-noun-count", str(nouns[top] + nouns[second])]) == 0
    kept = Counter(p.noun for _, p in all_pairs(str(tmp_path / "cur")))
    assert kept == {"thing-a": nouns[top] + nouns[second]}
    allow = tmp_path / "allow.txt"
    allow.write_text(f"{second}\n")
    assert main(["curate", out, str(tmp_path / "cur2"), "--nouns-allow", str(allow)]) == 0
    assert Counter(p.noun for _, p in all_pairs(str(tmp_path / "cur2"))) == {second: nouns[second]}
    with pytest.raises(ValueError, match="OUTPUT must differ"):
        curate(out, out, CurationFilters())


def test_export_coco_loads_in_pycocotools(mined, tmp_path):
    out = str(mined / "out")
    counts = export_coco(out, str(tmp_path / "coco.json"), images_dir=str(tmp_path / "images"))
    coco = COCO(str(tmp_path / "coco.json"))
    records = list(iter_records(out))
    pairs = all_pairs(out)
    assert counts["images"] == len(coco.getImgIds()) == len(records)
    assert counts["annotations"] == len(coco.getAnnIds()) == len(pairs)
    assert sorted(c["name"] for c in coco.loadCats(coco.getCatIds())) == sorted({p.noun for _, p in pairs})
    by_name = {img["file_name"]: img for img in coco.loadImgs(coco.getImgIds())}
    for record in records:
        stem = record.shard.rsplit("/", 1)[-1].removesuffix(".tar")
        img = by_name[f"{stem}_{record.key}.jpg"]
        assert (img["width"], img["height"]) == (record.width, record.height)
        anns = coco.loadAnns(coco.getAnnIds(imgIds=img["id"]))
        assert len(anns) == len(record.pairs)
        for ann, pair in zip(anns, record.pairs):
            assert coco.loadCats(ann["category_id"])[0]["name"] == pair.noun
            np.testing.assert_array_equal(coco.annToMask(ann).astype(bool), record.masks[pair.mask_index].decode())
    written = sorted(p.name for p in (tmp_path / "images").iterdir())
    assert written == sorted(by_name) and counts["images_written"] == len(records)


def test_inspect_commands_on_s3(mined, s3_endpoint, tmp_path):
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    client.create_bucket(Bucket="inspect")
    for path in (mined / "out").rglob("*"):
        if path.is_file():
            client.upload_file(str(path), "inspect", f"run/{path.relative_to(mined / 'out')}")
    s3 = S3Options(endpoint_url=s3_endpoint)
    local = compute_stats(str(mined / "out"))
    remote = compute_stats(Location("s3://inspect/run", s3))
    assert {k: v for k, v in remote.items() if k != "output"} == {k: v for k, v in local.items() if k != "output"}
    assert main(["stats", "s3://inspect/run", "--s3-endpoint", s3_endpoint, "--html", "s3://inspect/report.html"]) == 0
    page = client.get_object(Bucket="inspect", Key="report.html")["Body"].read().decode()
    assert "<img" in page and "Lowest-similarity pairs" in page and 'id=explore-data' in page
    # an audit file in the bucket: every pair marked, those of one noun wrong; stats and curate read it from S3
    pairs = read_pairs(str(mined / "out")).to_pylist()
    wrong = pairs[0]["noun"]
    marks = [{"shard": p["shard"], "key": p["key"], "mask": p["mask_index"], "noun": p["noun"],
              "verdict": "wrong" if p["noun"] == wrong else "right"} for p in pairs]
    client.put_object(Bucket="inspect", Key="audit.json", Body=json.dumps(
        {"kind": "ovmine.audit/1", "output": "s3://inspect/run", "config_hash": local["config_hash"], "marks": marks}))
    assert main(["curate", "s3://inspect/run", "s3://inspect/audited", "--s3-endpoint", s3_endpoint,
                 "--audit", "s3://inspect/audit.json", "--min-precision", "0.5"]) == 0
    audited = read_pairs(Location("s3://inspect/audited", s3)).column("noun").to_pylist()
    assert audited and wrong not in audited and len(audited) == sum(p["noun"] != wrong for p in pairs)
    assert main(["curate", "s3://inspect/run", "s3://inspect/cur", "--s3-endpoint", s3_endpoint,
                 "--max-per-noun", "1"]) == 0
    cur = read_manifest(Location("s3://inspect/cur", s3))
    assert cur["totals"]["pairs"] == cur["totals"]["unique_nouns"]
    assert main(["export", "coco", "s3://inspect/cur", "s3://inspect/coco.json", "--s3-endpoint", s3_endpoint]) == 0
    doc = json.loads(client.get_object(Bucket="inspect", Key="coco.json")["Body"].read())
    assert len(doc["annotations"]) == cur["totals"]["pairs"]


def test_curate_records_an_absolute_lineage_for_a_relative_input(mined, tmp_path, monkeypatch):
    monkeypatch.chdir(mined)
    manifest = curate("out", str(tmp_path / "cur-rel"), CurationFilters(min_similarity=-1.0))
    assert manifest["lineage"]["input"] == str(mined / "out")
