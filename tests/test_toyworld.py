"""The toy world's ground truth agrees with its pictures and captions, and a world is reproducible."""
import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from scipy.ndimage import binary_erosion

from mining.sources.decode import decode_image, extract_captions
from mining.sources.shards import read_shard
from mining.toyworld.make import iter_world, make_world
from mining.toyworld.vocab import COLOURS, ABSENT_NOUNS, BY_NAME


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    make_world(str(out), shards=2, per_shard=12, seed=3, progress=False)
    return out, json.loads((out / "ground_truth.json").read_text())


def _decoded(world_dir):
    samples = {}
    for shard in sorted((world_dir / "shards").glob("*.tar")):
        for s in read_shard(str(shard)):
            samples[s.key] = s
    return samples


def test_shards_are_webdataset_input_with_captions(world):
    out, gt = world
    samples = _decoded(out)
    assert len(samples) == 24 == len(gt["images"])
    for image in gt["images"]:
        s = samples[image["key"]]
        assert set(s.members) == {"jpg", "txt", "json"}
        captions, _ = extract_captions(s.members, ["captions"], 2)
        assert captions == image["captions"] and len(captions) == 2


def test_masks_tile_the_image_and_match_its_pixels(world):
    out, gt = world
    samples = _decoded(out)
    by_image = {}
    for ann in gt["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    checked = 0
    for image in gt["images"]:
        pixels, _ = decode_image(samples[image["key"]].members["jpg"], 10**8, 4096)
        anns = by_image[image["id"]]
        masks = [mask_utils.decode(a["segmentation"]).astype(bool) for a in anns]
        assert all(m.shape == (image["height"], image["width"]) == pixels.shape[:2] for m in masks)
        # visible things and stuff never overlap, and together cover the picture (but for slivers of
        # things hidden below the 16-pixel minimum)
        cover = np.sum(masks, axis=0)
        assert cover.max() == 1 and (cover == 0).mean() < 0.01, image["key"]
        for ann, mask in zip(anns, masks):
            assert ann["area"] == mask.sum() >= 16
            colour = ann["attributes"]["colour"]
            inner = binary_erosion(mask, iterations=2)
            if colour is None or inner.sum() < 30:
                continue
            # the picture inside a thing's mask is that thing's colour, not another one's
            mean = pixels[inner].reshape(-1, 3).mean(0)
            nearest = min(COLOURS, key=lambda c: np.abs(np.array(COLOURS[c]) - mean).sum())
            assert nearest == colour, (image["key"], ann["id"], mean)
            checked += 1
    assert checked > 30


def test_captions_name_present_things_or_known_noise(world):
    _, gt = world
    cats = {c["id"]: c for c in gt["categories"]}
    words = {w for c in gt["categories"] for w in [c["name"], *c["synonyms"]]}
    for image in gt["images"]:
        present = {cats[a["category_id"]]["name"] for a in gt["annotations"] if a["image_id"] == image["id"]}
        tokens = {t.strip(".,:").lower() for t in image["captions"][0].split()}
        named = {w for w in words if w in tokens or w + "s" in tokens or w + "es" in tokens}
        for word in named:
            category = next(c for c in gt["categories"] if word in [c["name"], *c["synonyms"]])
            # a named thing that is absent is the deliberate "absent noun" noise: always singular "a/an X"
            if category["name"] not in present:
                assert f"a {word}" in image["captions"][0] or f"an {word}" in image["captions"][0]


def test_world_is_reproducible_and_seeds_differ(world, tmp_path):
    out, _ = world
    make_world(str(tmp_path), shards=2, per_shard=12, seed=3, progress=False)
    for name in ("shards/00000.tar", "shards/00001.tar", "ground_truth.json"):
        assert (tmp_path / name).read_bytes() == (out / name).read_bytes()
    first = next(iter_world(3, 1, 1))[2].image
    other = next(iter_world(4, 1, 1))[2].image
    assert not np.array_equal(first, other)


def test_world_has_the_promised_variety():
    scenes = [(s, caps) for _, _, s, caps in iter_world(11, 2, 100)]
    text = " ".join(c for _, caps in scenes for c in caps).lower()
    assert sum(len(s.things) >= 3 for s, _ in scenes) > 40
    assert any(i.visible_fraction < 0.9 for s, _ in scenes for i in s.things), "occlusion"
    assert {i.category.name for s, _ in scenes for i in s.stuff} == {"grass", "water", "sand", "snow", "sky"}
    assert any(n in text for n in ("two ", "three ")), "counted plurals"
    assert any(syn in text for c in BY_NAME.values() for syn in c.synonyms), "synonyms"
    assert any(n in text for n in ABSENT_NOUNS), "absent nouns"
    assert any(p in text for p in ("a picture of", "a photo of", "on top of")), "filler"
    assert any(w in text for w in ("small ", "large ")), "size adjectives"


def test_the_oracle_pairs_every_true_mask_with_its_name(world, tmp_path, capsys):
    """`ovmine toyworld oracle`: a mining output whose pairs are the ground truth, so a model trained on it is
    the upper bound. `ovmine eval` of it finds every pair right and every instance recalled; `validate` and the
    trainer's reader take it like any mined run; and it is refused inside the world it reads."""
    from mining.cli import main
    from mining.evaluation.run import evaluate
    from mining.sinks.reader import iter_records

    out, gt = world
    oracle = tmp_path / "oracle"
    assert main(["toyworld", "oracle", str(out), str(oracle), "--json"]) == 0
    counts = json.loads(capsys.readouterr().out)["counts"]
    assert counts["pairs"] == len(gt["annotations"]) and counts["images_in"] == len(gt["images"])
    report = evaluate(str(oracle), str(out / "ground_truth.json"), progress=False)
    assert report["precision"] == 1.0 and report["recall"] == 1.0 and report["pairs"] == len(gt["annotations"])
    names = {c["id"]: c["name"] for c in gt["categories"]}
    ids = {image["key"]: image["id"] for image in gt["images"]}
    for record in iter_records(str(oracle)):
        truth = sorted(names[a["category_id"]] for a in gt["annotations"] if a["image_id"] == ids[record.key])
        assert sorted(p.noun for p in record.pairs) == truth
    assert main(["validate", str(oracle)]) == 0
    assert main(["toyworld", "oracle", str(out), str(out / "shards" / "oracle")]) == 1
    assert "inside the toy world" in capsys.readouterr().err
