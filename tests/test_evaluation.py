"""The evaluator on hand-made cases whose precision and recall are worked out by hand."""
import json

import numpy as np
import pytest
from webdataset import TarWriter

from conftest import jpeg_bytes
from mining.evaluation.ground_truth import load_ground_truth
from mining.evaluation.names import CategoryNames
from mining.evaluation.run import evaluate, format_eval
from mining.records import Drop, Entity, Pair, Sample
from mining.sinks.manifest import build_manifest, write_manifest
from mining.sinks.reader import read_pairs
from mining.sinks.writer import write_shard
from mining.masks import encode_json as rle_json

SIZE = 20
CATEGORIES = [{"id": 1, "name": "circle", "synonyms": ["disc"]}, {"id": 2, "name": "square"},
              {"id": 3, "name": "grass"}, {"id": 4, "name": "fire hydrant"}]


def box(y0, y1, x0, x1):
    m = np.zeros((SIZE, SIZE), bool)
    m[y0:y1, x0:x1] = True
    return m


# image "a": a circle, a square and the grass around them
A_CIRCLE, A_SQUARE = box(0, 10, 0, 10), box(10, 20, 10, 20)
A_GRASS = ~(A_CIRCLE | A_SQUARE)
# image "b": two circles; image "c": a square nobody mined (dropped image); "d": a hydrant, not mentioned
B_LEFT, B_RIGHT = box(0, 10, 0, 6), box(0, 10, 12, 18)
C_SQUARE, D_HYDRANT = box(5, 15, 5, 15), box(2, 12, 2, 12)
CAPTIONS = {"a": ["A red circle and a square on the grass."], "b": ["Two discs and a dog."],
            "c": ["A blue square."], "d": ["Abstract art."]}


def ground_truth(path, exhaustive=True):
    instances = {"a": [(1, A_CIRCLE), (2, A_SQUARE), (3, A_GRASS)], "b": [(1, B_LEFT), (1, B_RIGHT)],
                 "c": [(2, C_SQUARE)], "d": [(4, D_HYDRANT)]}
    images, anns = [], []
    for i, (key, insts) in enumerate(instances.items(), 1):
        images.append({"id": i, "file_name": f"{key}.jpg", "width": SIZE, "height": SIZE})
        for cid, mask in insts:
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": cid, "segmentation": rle_json(mask[None])[0],
                         "area": int(mask.sum()), "bbox": [0, 0, 1, 1], "iscrowd": 0})
    path.write_text(json.dumps({"info": {"exhaustive": exhaustive}, "images": images, "annotations": anns,
                                "categories": CATEGORIES}))
    return str(path)


def sample(key, index, masks, entities, pairs, shard):
    s = Sample(shard=shard, shard_stem="00000", key=key, index=index, shard_size=4, captions=CAPTIONS[key],
               orig_size=(SIZE, SIZE), frame_size=(SIZE, SIZE),
               entities=[Entity(n, n, (0, 1), 0) for n in entities],
               mask_scores=np.ones(len(masks), np.float32),
               pairs=[Pair(m, e, 0.5, 0.1, 0.9, [0.5]) for m, e in pairs])
    s.rles = rle_json(np.stack(masks))
    return s


def write_input_shard(shard, captions_by_key: dict[str, list[str]]) -> None:
    """The input shard a hand-built output was 'mined' from: blank images with their first caption."""
    shard.parent.mkdir()
    with TarWriter(str(shard)) as tar:
        for key, captions in captions_by_key.items():
            tar.write({"__key__": key, "jpg": jpeg_bytes(np.zeros((SIZE, SIZE, 3), np.uint8)),
                       "txt": captions[0].encode()})


@pytest.fixture
def mined(tmp_path, tiny_cfg):
    shard = tmp_path / "in" / "00000.tar"
    write_input_shard(shard, CAPTIONS)
    off_by_two = box(0, 10, 2, 12)        # IoU with A_CIRCLE: 80/120 = 0.67 -> right
    sliver = box(0, 10, 0, 4)             # IoU with A_CIRCLE: 0.4 -> wrong
    a = sample("a", 0, [off_by_two, A_CIRCLE, A_GRASS, sliver], ["circle", "square", "grass", "disc"],
               [(0, 0), (1, 1), (2, 2), (3, 3)], str(shard))
    b = sample("b", 1, [B_LEFT, box(10, 20, 0, 20)], ["disc", "dog"], [(0, 0), (1, 1)], str(shard))
    cfg = tiny_cfg()
    out = tmp_path / "mined"
    dropped = Sample(shard=str(shard), shard_stem="00000", key="c", index=2, shard_size=4)
    dropped.drop_with(Drop.NO_MASKS)
    no_pairs = Sample(shard=str(shard), shard_stem="00000", key="d", index=3, shard_size=4)
    no_pairs.drop_with(Drop.NO_ENTITIES)
    write_shard([a, b, dropped, no_pairs], str(out), cfg.config_hash())
    write_manifest(str(out), build_manifest(str(out), ["00000"], cfg, 1.0))
    return str(out)


def test_precision_and_recall_worked_by_hand(mined, tmp_path):
    report = evaluate(mined, ground_truth(tmp_path / "gt.json"), progress=False)
    # pairs: a/circle right (IoU .67), a/square wrong (its mask is the circle), a/grass right,
    # a/disc wrong (IoU .4 < .5), b/disc right, b/dog wrong (exhaustive ground truth: dog names nothing there)
    assert (report["judged_pairs"], report["correct_pairs"], report["unjudged_pairs"]) == (6, 3, 0)
    assert report["precision"] == pytest.approx(0.5)
    # minable: a: circle, square, grass; b: both circles ("discs"); c: its square (mentioned, image dropped);
    # d: the hydrant is not mentioned. Recalled: a circle, a grass, b left circle.
    assert (report["minable"], report["recalled"]) == (6, 3)
    assert report["recall"] == pytest.approx(0.5)
    # noun level: a {circle, square, grass}, b {circle}, c {square}: circle(a), grass(a), circle(b) found
    assert (report["noun_minable"], report["noun_recalled"]) == (5, 3)
    per = report["per_category"]
    assert per["circle"] == {"pairs": 3, "correct": 2, "duplicates": 0, "precision": pytest.approx(2 / 3, abs=1e-3),
                             "minable": 3, "recalled": 2, "recall": pytest.approx(2 / 3, abs=1e-3)}
    assert per["square"]["precision"] == 0.0 and per["square"]["minable"] == 2
    assert "fire hydrant" not in per
    assert report["images"] == 4 and report["images_with_pairs"] == 2
    assert "precision          50.0%" in format_eval(report)


def test_stricter_iou_and_unjudged_nouns(mined, tmp_path):
    gt = ground_truth(tmp_path / "gt.json", exhaustive=False)
    report = evaluate(mined, gt, iou=0.7, progress=False)
    # not exhaustive: "dog" is unjudged; at IoU 0.7 the off-by-two circle (.67) is wrong too
    assert (report["judged_pairs"], report["unjudged_pairs"], report["correct_pairs"]) == (5, 1, 2)
    forced = evaluate(mined, gt, unknown_nouns="wrong", progress=False)
    assert forced["judged_pairs"] == 6


def test_names_map_lemmas_synonyms_and_compounds(tmp_path):
    gt = load_ground_truth(ground_truth(tmp_path / "gt.json"))
    names = CategoryNames(gt.categories, {"grass": ["lawn"]})
    assert names.category_of("circle") == 1 and names.category_of("disc") == 1
    assert names.category_of("lawn") == 3 and names.category_of("fire hydrant") == 4
    assert names.category_of("dog") is None
    assert names.mentioned(["Two fire hydrants near some discs on a lawn."]) == {1, 3, 4}
    with pytest.raises(ValueError, match="tree"):
        CategoryNames(gt.categories, {"tree": ["oak"]})


def test_bad_ground_truth_is_named(tmp_path, mined):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"images": []}))
    with pytest.raises(ValueError, match="annotations, categories"):
        evaluate(mined, str(bad), progress=False)
    with pytest.raises(FileNotFoundError, match="ground truth not found"):
        evaluate(mined, str(tmp_path / "missing.json"), progress=False)


def test_eval_command_text_and_json(mined, tmp_path, capsys):
    from mining.cli import main

    gt = ground_truth(tmp_path / "gt.json")
    assert main(["eval", mined, "--gt", gt, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["precision"], report["recall"]) == (0.5, 0.5)
    assert main(["eval", mined, "--gt", gt, "--unknown-nouns", "skip"]) == 0
    text = capsys.readouterr().out
    assert "precision          60.0%  (3/5 judged; 1 unjudged: noun names no category)" in text
    assert main(["eval", mined, "--gt", gt, "--iou", "1.5"]) == 1
    assert "--iou must be in (0, 1]" in capsys.readouterr().err


# --- curated outputs are scored on the original input images ---------------------------------------------

def test_curated_output_is_scored_on_all_input_images(world_mined):
    from mining.postrun.curate import CurationFilters, curate

    root, gt = world_mined
    mined = str(root / "mined")
    # keep the better half of the pairs: images whose pairs are all in the worse half leave the curated output
    median = float(np.median(read_pairs(mined)["similarity"].to_numpy()))
    curated = curate(mined, str(root / "cur"), CurationFilters(min_similarity=median))
    mined_report = evaluate(mined, gt, progress=False)
    assert mined_report["images"] == 10 and 0 < mined_report["images_with_pairs"] < 10
    assert 0 < curated["totals"]["images_with_pairs"] < mined_report["images_with_pairs"]
    curated_report = evaluate(str(root / "cur"), gt, progress=False)
    # the images curation emptied are still scored: their instances count as missed
    assert curated_report["images"] == mined_report["images"]
    assert curated_report["images_with_pairs"] == curated["totals"]["images_with_pairs"]
    assert curated_report["minable"] == mined_report["minable"]
    assert curated_report["noun_minable"] == mined_report["noun_minable"]
    assert curated_report["recalled"] <= mined_report["recalled"]
    assert curated_report["recall"] <= mined_report["recall"]
    # curating a curated output chains back to the mining run's input shards
    curate(str(root / "cur"), str(root / "cur2"), CurationFilters(max_per_noun=1))
    chained = evaluate(str(root / "cur2"), gt, progress=False)
    assert (chained["images"], chained["minable"]) == (mined_report["images"], mined_report["minable"])
    assert chained["recalled"] <= curated_report["recalled"]


def test_curated_output_whose_source_is_gone_is_named(world_mined, tmp_path):
    import shutil

    from mining.postrun.curate import CurationFilters, curate

    root, gt = world_mined
    copy = tmp_path / "mined"
    shutil.copytree(root / "mined", copy)
    curate(str(copy), str(tmp_path / "cur"), CurationFilters(max_per_noun=1))
    (copy / "manifest.json").unlink()
    with pytest.raises(FileNotFoundError, match="curated from"):
        evaluate(str(tmp_path / "cur"), gt, progress=False)


# --- one-to-one matching, duplicates, unjudged pairs, null margins ---------------------------------------------

# image "e": two circles side by side; "f": one circle
E_LEFT, E_RIGHT = box(0, 10, 0, 10), box(0, 10, 10, 20)
F_CIRCLE = box(5, 15, 5, 15)
MATCH_CAPTIONS = {"e": ["Two circles."], "f": ["A circle and a dog."]}


def matching_ground_truth(path):
    instances = {"e": [E_LEFT, E_RIGHT], "f": [F_CIRCLE]}
    images, anns = [], []
    for i, (key, masks) in enumerate(instances.items(), 1):
        images.append({"id": i, "file_name": f"{key}.jpg", "width": SIZE, "height": SIZE})
        for mask in masks:
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": 1, "segmentation": rle_json(mask[None])[0],
                         "area": int(mask.sum()), "bbox": [0, 0, 1, 1], "iscrowd": 0})
    path.write_text(json.dumps({"info": {"exhaustive": False}, "images": images, "annotations": anns,
                                "categories": CATEGORIES}))
    return str(path)


def null_margins(output):
    """Rewrite the output's shard with every pair's margin null ('no rival'), as newer mining writes."""
    from mining.sinks.reader import read_shard_documents

    uri = f"{output}/shards/00000.tar"
    docs = read_shard_documents(uri)
    with TarWriter(uri) as tar:
        for doc, _ in docs:
            doc["pairs"] = [{**p, "margin": None} for p in doc["pairs"]]
            tar.write({"__key__": doc["key"], "json": json.dumps(doc).encode()})


@pytest.fixture
def overlapping(tmp_path, tiny_cfg):
    """e: one mask spanning both circles (IoU .44 with each); f: two masks on the one circle, and a dog."""
    shard = tmp_path / "in" / "00000.tar"
    write_input_shard(shard, MATCH_CAPTIONS)
    span = box(0, 10, 2, 18)               # 80 px on each circle: IoU 80/180 = .44 with each
    near = box(5, 15, 6, 16)               # IoU with F_CIRCLE 90/110 = .82
    samples = []
    for index, (key, masks, entities, pairs) in enumerate([
            ("e", [span], ["circle"], [(0, 0)]),
            ("f", [F_CIRCLE, near, box(15, 20, 0, 20)], ["circle", "circle", "dog"], [(0, 0), (1, 1), (2, 2)])]):
        s = Sample(shard=str(shard), shard_stem="00000", key=key, index=index, shard_size=2,
                   captions=MATCH_CAPTIONS[key], orig_size=(SIZE, SIZE), frame_size=(SIZE, SIZE),
                   entities=[Entity(n, n, (0, 1), 0) for n in entities], mask_scores=np.ones(len(masks), np.float32),
                   pairs=[Pair(m, e, 0.5, 0.1, 0.9, [0.5]) for m, e in pairs])
        s.rles = rle_json(np.stack(masks))
        samples.append(s)
    cfg = tiny_cfg()
    out = tmp_path / "overlap"
    write_shard(samples, str(out), cfg.config_hash())
    write_manifest(str(out), build_manifest(str(out), ["00000"], cfg, 1.0))
    null_margins(str(out))
    return str(out)


def test_one_pair_recalls_one_instance_at_low_iou(overlapping, tmp_path):
    gt = matching_ground_truth(tmp_path / "gt.json")
    report = evaluate(overlapping, gt, iou=0.4, progress=False)
    # e: the spanning circle pair is eligible for both circles but takes one; f: circle (IoU 1) and
    # near (.82) both hit the one circle: one is matched, the other is a duplicate and counts wrong.
    # "dog" names no category and the ground truth is not exhaustive: unjudged.
    assert (report["judged_pairs"], report["correct_pairs"], report["duplicate_pairs"],
            report["unjudged_pairs"]) == (3, 2, 1, 1)
    assert report["precision"] == pytest.approx(2 / 3, abs=1e-3)
    assert (report["minable"], report["recalled"]) == (3, 2)
    assert report["per_category"]["circle"]["duplicates"] == 1
    # at the usual 0.5 the spanning mask hits neither circle
    strict = evaluate(overlapping, gt, progress=False)
    assert (strict["correct_pairs"], strict["duplicate_pairs"], strict["recalled"]) == (1, 1, 1)


def test_matching_is_maximum_not_greedy(tmp_path):
    """Pair p1 overlaps both instances, p2 only the first: a maximum matching recalls both (p1 takes the
    second), whatever order the pairs come in and whichever IoU is higher."""
    from mining.evaluation.score import match_one_to_one

    eligible = np.array([[True, True], [True, False]])
    ious = np.array([[0.9, 0.45], [0.6, 0.0]])
    assert sorted(match_one_to_one(eligible, ious)) == [(0, 1), (1, 0)]
    assert match_one_to_one(np.zeros((2, 0), bool), np.zeros((2, 0))) == []
    # among maximum matchings the one with the larger total IoU wins
    both = np.ones((2, 2), bool)
    assert sorted(match_one_to_one(both, np.array([[0.9, 0.5], [0.5, 0.6]]))) == [(0, 0), (1, 1)]


def test_text_shows_unjudged_and_duplicates_on_the_precision_line(overlapping, tmp_path, capsys):
    from mining.cli import main

    gt = matching_ground_truth(tmp_path / "gt.json")
    assert main(["eval", overlapping, "--gt", gt, "--iou", "0.4"]) == 0
    text = capsys.readouterr().out
    precision = next(line for line in text.splitlines() if line.strip().startswith("precision"))
    assert precision.split() == ["precision", "66.7%", "(2/3", "judged;", "1", "unjudged:", "noun", "names", "no",
                                 "category;", "1", "duplicate:", "a", "second", "pair", "on", "a", "matched",
                                 "instance)"]
    assert main(["eval", overlapping, "--gt", gt, "--iou", "0.4", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["unjudged_pairs"], report["duplicate_pairs"]) == (1, 1)


def test_the_per_class_table_says_what_ovmine_eval_prints(world_mined, capsys):
    """`mining.evaluation.per_class` (bench/things.py's table): each cell is the figure `ovmine eval --json
    --region-top1` prints for that run and category, and the group means are the means of the rows above."""
    from mining.cli import main
    from mining.evaluation.per_class import class_figures, class_table
    from mining.evaluation.run import evaluate

    root, gt = world_mined
    output = str(root / "all")
    assert main(["eval", output, "--gt", gt, "--json", "--region-top1"]) == 0
    printed = json.loads(capsys.readouterr().out)
    figures = class_figures(evaluate(output, gt, region_top1=True, progress=False))
    groups = {"things": ["circle", "square"], "stuff": ["grass", "sky"]}
    lines = class_table({"one": figures, "two": figures}, groups).splitlines()

    def row(block: str, label: str) -> list[str]:
        start = next(i for i, line in enumerate(lines) if line.startswith(block))
        cells = next(line for line in lines[start:] if line.strip().startswith(label)).split()[-2:]
        assert cells[0] == cells[1]
        return cells

    def shown(value) -> str:
        return "-" if value is None else f"{value:.1%}"

    for name in ("circle", "square", "grass", "sky"):
        assert row("top1", name)[0] == shown(printed["region_top1"]["per_category"].get(name))
        assert row("precision", name)[0] == shown(printed["per_category"].get(name, {}).get("precision"))
        assert row("recall", name)[0] == shown(printed["per_category"].get(name, {}).get("recall"))
    assert row("recall", "overall")[0] == shown(printed["recall"])
    assert row("top1", "overall")[0] == shown(printed["region_top1"]["top1"])
    stuff = [printed["per_category"][n]["recall"] for n in groups["stuff"] if n in printed["per_category"]
             and printed["per_category"][n]["recall"] is not None]
    assert row("recall", "mean stuff")[0] == shown(sum(stuff) / len(stuff) if stuff else None)
