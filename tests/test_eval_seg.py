"""`ovmine eval-seg`'s scoring: the confusion matrix, ground-truth label maps, and mIoU on hand-built label maps
whose answer is worked out by hand below."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from mining.evaluation.semantic import IGNORE, NONE, ConfusionMatrix, evaluate_semantic
from mining.masks import encode_json as rle_json

A, B, C = 0, 1, 2


def hand_world(tmp_path: Path) -> str:
    """Two 4x4 images as files. Image 'a': top half class a, bottom half class b. Image 'b': left half class c,
    right half unannotated (ignored)."""
    top = np.zeros((4, 4), bool)
    top[:2] = True
    left = np.zeros((4, 4), bool)
    left[:, :2] = True
    anns = [(1, 1, top), (1, 2, ~top), (2, 3, left)]
    gt = {"images": [{"id": 1, "file_name": "a.png", "width": 4, "height": 4},
                     {"id": 2, "file_name": "b.png", "width": 4, "height": 4}],
          "annotations": [{"id": i, "image_id": im, "category_id": cat, "segmentation": rle_json(m[None])[0],
                           "area": int(m.sum()), "iscrowd": 0} for i, (im, cat, m) in enumerate(anns, 1)],
          "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}, {"id": 3, "name": "c_thing"}]}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.full((4, 4, 3), 255, np.uint8)).save(tmp_path / "b.png")
    return str(tmp_path / "gt.json")


def hand_predictions() -> dict[int, np.ndarray]:
    """Image 'a' (black): rows 0-2 predicted a, row 3 b. Image 'b' (white): column 0 c, column 1 no class,
    columns 2-3 b (where the ground truth is unannotated: not counted)."""
    a = np.full((4, 4), A, np.int32)
    a[3] = B
    b = np.full((4, 4), B, np.int32)
    b[:, 0] = C
    b[:, 1] = NONE
    return {0: a, 255: b}


# Worked by hand from the two images above (24 labelled pixels):
#   class a: TP 8, ground truth 8, predicted 8 + 4 (row 2 of image a)  -> IoU 8 / (8 + 12 - 8) = 2/3
#   class b: TP 4 (row 3), ground truth 8, predicted 4                  -> IoU 4 / (8 + 4 - 4)  = 1/2
#   class c: TP 4 (column 0), ground truth 8 (4 unclaimed), predicted 4 -> IoU 4 / (8 + 4 - 4)  = 1/2
#   mIoU = (2/3 + 1/2 + 1/2) / 3 = 5/9; pixel accuracy = (8 + 4 + 4) / 24 = 2/3
EXPECTED_MIOU = (2 / 3 + 1 / 2 + 1 / 2) / 3


def test_confusion_matrix_worked_example():
    m = ConfusionMatrix(3)
    preds = hand_predictions()
    gt_a = np.full((4, 4), A, np.int32)
    gt_a[2:] = B
    gt_b = np.full((4, 4), IGNORE, np.int32)
    gt_b[:, :2] = C
    m.update(gt_a, preds[0])
    m.update(gt_b, preds[255])
    assert m.ious() == pytest.approx([2 / 3, 1 / 2, 1 / 2])
    got = m.metrics(["a", "b", "c"])
    assert got["miou"] == round(EXPECTED_MIOU, 4)
    assert got["pixel_accuracy"] == round(2 / 3, 4)
    assert got["labelled_pixels"] == 24 and got["unclaimed_pixels"] == 4
    # a class neither in the ground truth nor predicted has no IoU and stays out of the mean
    m4 = ConfusionMatrix(4)
    m4.update(gt_a, preds[0])
    assert m4.ious()[3] is None and m4.metrics(list("abcd"))["miou"] == round((2 / 3 + 1 / 2) / 2, 4)
    # a class predicted where the ground truth has none scores 0
    m3 = ConfusionMatrix(3)
    m3.update(np.array([[A, A]]), np.array([[A, C]]))
    assert m3.ious() == [0.5, None, 0.0]
    with pytest.raises(ValueError, match="shape"):
        m.update(gt_a, preds[0][:2])


def test_evaluate_semantic_on_hand_built_label_maps(tmp_path):
    gt = hand_world(tmp_path)
    preds = hand_predictions()
    seen_names = []

    def predictor(pixels, names):
        seen_names.append(names)
        return SimpleNamespace(labels=preds[int(pixels[0, 0, 0])])

    report = evaluate_semantic(gt, {"hand": predictor}, images=[str(tmp_path / "a.png"), str(tmp_path / "b.png")])
    assert report["images"] == 2 and report["classes"] == ["a", "b", "c thing"]
    assert seen_names[0] == ["a", "b", "c thing"]   # the ground truth's category names are the vocabulary
    hand = report["variants"]["hand"]
    assert hand["miou"] == round(EXPECTED_MIOU, 4) and hand["pixel_accuracy"] == round(2 / 3, 4)
    assert hand["per_class_iou"] == {"a": round(2 / 3, 4), "b": 0.5, "c thing": 0.5}
    from mining.cli.segment import format_eval_seg

    table = format_eval_seg(report | {"ground_truth": gt, "images_in_ground_truth": 2, "images_not_in_ground_truth": 0})
    assert "mIoU %" in table and "pixel acc %" in table   # the unit is said once, in the header
    assert table.splitlines()[2].split() == ["hand", f"{100 * EXPECTED_MIOU:.1f}", "66.7"]
    # a prediction in another frame is resized (nearest) to the ground truth's
    big = {k: np.kron(v, np.ones((2, 2), np.int32)) for k, v in preds.items()}
    report = evaluate_semantic(gt, {"big": lambda px, names: SimpleNamespace(labels=big[int(px[0, 0, 0])])},
                               images=[str(tmp_path / "a.png"), str(tmp_path / "b.png")])
    assert report["variants"]["big"]["miou"] == round(EXPECTED_MIOU, 4)


def test_eval_seg_errors_name_the_thing(tmp_path, capsys):
    from mining.cli import main

    gt = hand_world(tmp_path)
    with pytest.raises(ValueError, match="nothing to evaluate"):
        evaluate_semantic(gt, {})
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "shards")):
        evaluate_semantic(gt, {"x": lambda px, names: None})   # default: shards/ beside the ground truth
    (tmp_path / "other").mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "other" / "zzz.png")
    with pytest.raises(ValueError, match="no image of"):
        evaluate_semantic(gt, {"x": lambda px, names: None}, images=[str(tmp_path / "other" / "zzz.png")])
    assert main(["eval-seg", "--gt", gt, "--images", str(tmp_path / "a.png")]) == 1
    assert "nothing to evaluate" in capsys.readouterr().err
    assert main(["eval-seg", "--gt", str(tmp_path / "missing.json"), "--model", str(tmp_path)]) == 1
    assert "not an ovmine segmenter folder" in capsys.readouterr().err
