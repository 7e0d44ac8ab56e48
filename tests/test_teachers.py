import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from conftest import scene
from mining.config import FelzenszwalbConfig, Mask2FormerConfig, SamConfig
from mining.teachers import postfilter_masks
from mining.masks import column_major, encode as encode_rle, encode_json as rle_json
from mining.teachers.felzenszwalb import FelzenszwalbTeacher


def box_mask(shape, y0, y1, x0, x1):
    m = np.zeros(shape, bool)
    m[y0:y1, x0:x1] = True
    return m


def test_postfilter_area_dedupe_and_cap():
    shape = (20, 20)
    masks = np.stack([box_mask(shape, 0, 10, 0, 10),     # 100 px, score .5
                      box_mask(shape, 0, 10, 0, 9),      # IoU .9 with the first, score .9 -> kept first
                      box_mask(shape, 15, 17, 15, 17),   # 4 px: too small
                      box_mask(shape, 10, 20, 10, 20)])  # 100 px, score .7
    scores = np.array([0.5, 0.9, 0.99, 0.7], np.float32)
    kept, kept_scores, kept_rles = postfilter_masks(masks, scores, min_area=5, dedupe_iou=0.85, max_masks=10)
    assert kept_scores.tolist() == pytest.approx([0.9, 0.7])
    assert (kept[0] == masks[1]).all() and (kept[1] == masks[3]).all()
    assert kept_rles == rle_json(kept), "the kept masks' RLEs, as the record stores them"
    loose, _, _ = postfilter_masks(masks, scores, min_area=5, dedupe_iou=0.95, max_masks=10)
    assert len(loose) == 3
    capped, _, _ = postfilter_masks(masks, scores, min_area=1, dedupe_iou=1.0, max_masks=2)
    assert len(capped) == 2


@pytest.mark.parametrize("seed", range(4))
def test_the_device_postfilter_keeps_what_the_host_postfilter_keeps(seed):
    """The same masks as torch tensors (where a GPU teacher leaves them) and as numpy: the same kept masks,
    scores and RLEs, with tied scores, tiny masks and near-duplicates in the mix."""
    rng = np.random.default_rng(seed)
    base = rng.random((12, 30, 40)) > rng.uniform(0.3, 0.95, (12, 1, 1))
    dupes = base[:4] ^ (rng.random((4, 30, 40)) > 0.98)            # IoU around the dedupe threshold
    tiny = np.zeros((2, 30, 40), bool)
    tiny[:, :2, :2] = True
    masks = np.concatenate([base, dupes, tiny])
    scores = rng.choice([0.3, 0.5, 0.9], len(masks)).astype(np.float32)   # ties: the larger mask first
    host = postfilter_masks(masks, scores, min_area=5, dedupe_iou=0.9, max_masks=10)
    device = postfilter_masks(torch.from_numpy(masks), torch.from_numpy(scores), min_area=5, dedupe_iou=0.9,
                              max_masks=10)
    np.testing.assert_array_equal(device[0], host[0])
    np.testing.assert_array_equal(device[1], host[1])
    assert device[2] == host[2] and 2 <= len(host[0]) <= 10
    empty = postfilter_masks(torch.zeros(0, 30, 40, dtype=torch.bool), torch.zeros(0), 5, 0.9, 10)
    assert empty[0].shape == (0, 30, 40) and empty[2] == []


@pytest.mark.parametrize("width", range(1, 18))
def test_rle_of_packed_transpose_equals_the_plain_fortran_copy(width):
    """Every width mod 8 (the packed transpose pads the last byte of a row), odd heights, random masks."""
    masks = np.random.default_rng(width).random((3, 13, width)) > 0.5
    plain = np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8))
    columns = column_major(masks)
    assert columns.flags.f_contiguous and columns.dtype == np.uint8
    np.testing.assert_array_equal(columns, plain)
    assert encode_rle(masks) == mask_utils.encode(plain)


def test_felzenszwalb_finds_the_square():
    image = scene(size=96)
    # sigma=0: no pre-smoothing, so the uniform square's border is not split off into thin segments
    masks, scores = FelzenszwalbTeacher(FelzenszwalbConfig(scales=[100], sigma=0, input_size=96)).predict([image])[0]
    assert masks.shape[1:] == (96, 96) and (scores == 1).all()
    truth = np.zeros((96, 96), bool)
    truth[24:48, 24:48] = True
    ious = (masks & truth).sum((1, 2)) / (masks | truth).sum((1, 2))
    assert ious.max() == 1.0


def test_felzenszwalb_scales_back_to_the_working_frame():
    image = scene(size=96)
    masks, _ = FelzenszwalbTeacher(FelzenszwalbConfig(scales=[100, 400], input_size=48)).predict([image])[0]
    assert masks.shape[1:] == (96, 96)
    assert masks.sum(0).max() <= 2   # each scale partitions the image once


def test_mask2former_class_agnostic(tiny_mask2former):
    from mining.teachers.mask2former import Mask2FormerTeacher

    teacher = Mask2FormerTeacher(Mask2FormerConfig(model=tiny_mask2former, top_n=5), device="cpu")
    images = [scene(0, 80), scene(1, 60)[:, :50]]
    results = teacher.predict(images)
    for image, (masks, scores) in zip(images, results):
        assert masks.shape == (5,) + image.shape[:2] and masks.dtype == bool
        assert ((scores >= 0) & (scores <= 1)).all()
        assert (np.diff(scores) <= 1e-6).all(), "best queries first"
    none = Mask2FormerTeacher(Mask2FormerConfig(model=tiny_mask2former, min_score=1.0), device="cpu")
    assert none.predict([scene()])[0][0].shape == (0, 96, 96)


def test_sam_automatic_generation(tiny_sam):
    from mining.teachers.sam import SamTeacher

    teacher = SamTeacher(SamConfig(model=tiny_sam, points_per_side=4, pred_iou_thresh=0.0,
                                   stability_score_thresh=0.0), device="cpu")
    masks, scores = teacher.predict([scene(size=64)])[0]
    assert masks.ndim == 3 and masks.shape[1:] == (64, 64) and len(masks) == len(scores) > 0
    strict = SamTeacher(SamConfig(model=tiny_sam, points_per_side=4, pred_iou_thresh=1.0), device="cpu")
    assert len(strict.predict([scene(size=64)])[0][0]) == 0


def test_model_loading_errors_name_the_field(tmp_path):
    from mining.teachers.mask2former import Mask2FormerTeacher

    with pytest.raises(OSError):
        Mask2FormerTeacher(Mask2FormerConfig(model=str(tmp_path / "nope")), device="cpu")


def test_instance_scores_are_class_score_times_mean_mask_probability():
    from mining.teachers.mask2former import instance_scores

    class_scores = torch.tensor([0.8, 0.5, 0.9])
    probs = torch.zeros(3, 2, 2)
    probs[0] = torch.tensor([[0.9, 0.7], [0.1, 0.2]])    # binarised at .4: the top row, mean .8
    probs[1] = torch.tensor([[0.5, 0.5], [0.5, 1.0]])    # all four pixels, mean .625
    probs[2] = 0.3                                       # empty after binarising: score 0
    scores = instance_scores(class_scores, probs, threshold=0.4)
    torch.testing.assert_close(scores, torch.tensor([0.8 * 0.8, 0.5 * 0.625, 0.0]))


def test_mask2former_instance_score(tiny_mask2former):
    from mining.teachers.mask2former import Mask2FormerTeacher

    images = [scene(0, 80)]
    plain = Mask2FormerTeacher(Mask2FormerConfig(model=tiny_mask2former, top_n=5), device="cpu")
    inst = Mask2FormerTeacher(Mask2FormerConfig(model=tiny_mask2former, top_n=5, score="instance"), device="cpu")
    seen = []
    mask_probs = inst._mask_probs
    inst._mask_probs = lambda *args: seen.append(mask_probs(*args)) or seen[-1]
    (pm, ps), (im, iscore) = plain.predict(images)[0], inst.predict(images)[0]
    # the same five queries (top-N on the class score, in that order), rescored and re-ranked
    probs = seen[0].numpy()
    assert probs.shape == (5, 80, 80)
    np.testing.assert_array_equal(pm, probs > 0.4)
    inside = probs > 0.4
    expected = ps * (probs * inside).sum((1, 2)) / np.maximum(inside.sum((1, 2)), 1)
    order = np.argsort(-expected, kind="stable")
    np.testing.assert_allclose(iscore, expected[order], rtol=1e-5)
    np.testing.assert_array_equal(im, pm[order])
    assert (np.diff(iscore) <= 1e-6).all(), "best instance score first"
    cut = float(np.median(iscore))
    kept = Mask2FormerTeacher(Mask2FormerConfig(model=tiny_mask2former, top_n=5, score="instance", min_score=cut),
                              device="cpu").predict(images)[0][1]
    np.testing.assert_allclose(kept, iscore[iscore >= cut], rtol=1e-6)


def test_mask_helpers_agree_with_pycocotools_in_either_rle_form():
    from mining import masks

    rng = np.random.default_rng(3)
    frames = rng.random((4, 9, 14)) > 0.6
    frames[3] = False   # an empty mask
    native = mask_utils.encode(np.asfortranarray(frames.transpose(1, 2, 0).astype(np.uint8)))
    as_text = masks.encode_json(frames)
    assert [r["counts"] for r in as_text] == [r["counts"].decode() for r in native]
    for form in (native, as_text):
        assert masks.areas(form).tolist() == [int(f.sum()) for f in frames]
        assert masks.boxes(form) == [[float(v) for v in b] for b in mask_utils.toBbox(native)]
        assert all((masks.decode(r) == f).all() for r, f in zip(form, frames))
    np.testing.assert_allclose(masks.iou(as_text, native[:2]),
                               np.asarray(mask_utils.iou(native, native[:2], [0, 0])))
    assert masks.encode(frames[:0]) == [] and masks.iou([], native).shape == (0, 4)
    # a nearest-neighbour resize keeps labels exact
    big = masks.resize(frames[0], 18, 28)
    assert big.dtype == bool and (big[::2, ::2] == frames[0]).all()
