"""Model B (the open-vocabulary segmenter): loss, the saved folder, `ovmine segment`, checkpoints and resume,
the ensemble formula, bad input."""
from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mining.config import PLACEHOLDERS, ConfigError, RegionsConfig
from mining.regions.clip_loader import load_clip
from mining.segmentation.ensemble import geometric_ensemble
from mining.train.clip_trainer import text_embeddings
from mining.train.data import NoTrainingData
from mining.train.segmenter import (build_segmenter, freeze_unused_parameters, load_segmenter, make_criterion,
                                    save_segmenter)
from mining.train.segmenter_config import build_segmenter_config, load_segmenter_config
from mining.train.segmenter_data import ImageTargets
from mining.train.segmenter_trainer import make_optimizer, make_plan, prepare_batch, train_loop, train_step

ROOT = Path(__file__).resolve().parents[1]
TEACHER = str(PLACEHOLDERS["TOYWORLD_WEIGHTS"] / "mask2former")
SHIPPED_CLIP = {"model": f"local-dir:{PLACEHOLDERS['TOYWORLD_WEIGHTS'] / 'clip'}", "pretrained": None}
CPU = torch.device("cpu")


def sky_over_grass(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A 128x128 toy-world picture, sky above grass, and its two masks (sky, grass)."""
    from mining.toyworld.scene import texture

    rng = np.random.default_rng(seed)
    image = np.empty((128, 128, 3), np.float32)
    image[:64] = texture("sky", rng, 64, 128)
    image[64:] = texture("grass", rng, 64, 128)
    masks = np.zeros((2, 128, 128), bool)
    masks[0, :64] = True
    masks[1, 64:] = True
    return np.clip(image, 0, 255).astype(np.uint8), masks


@pytest.fixture(scope="module")
def trained_folder(tmp_path_factory) -> Path:
    """A segmenter trained briefly on ground-truth masks of sky-over-grass pictures, saved as `save_segmenter`
    writes it (what `ovmine train segmenter` writes)."""
    torch.manual_seed(0)
    vocabulary = ["grass", "sky", "water"]
    clip = load_clip(RegionsConfig(**SHIPPED_CLIP), CPU)
    text = text_embeddings(clip, vocabulary, CPU, "vild")
    model, processor = build_segmenter(TEACHER, text.shape[1], 50.0)
    cfg = build_segmenter_config({"steps": 1, "lr": 1e-3, "backbone_lr_mult": 0.0})
    criterion = make_criterion(model.mask2former, len(vocabulary), 0.1, 2.0, 5.0, 5.0, 256)
    opt = make_optimizer(model, cfg)
    items = [ImageTargets(*sky_over_grass(s), ["sky", "grass"], "s", str(s)) for s in range(2)]
    batch = prepare_batch(processor, items, {n: i for i, n in enumerate(vocabulary)}, CPU)
    model.train()
    for _ in range(12):
        train_step(model, criterion, [batch], text, opt)
    out = tmp_path_factory.mktemp("seg") / "model"
    save_segmenter(model.eval(), processor, out, RegionsConfig(**SHIPPED_CLIP).model_dump(mode="json"), vocabulary)
    return out


def test_loss_falls_on_a_fixed_batch():
    torch.manual_seed(0)
    model, processor = build_segmenter(TEACHER, 16, 20.0)
    text = torch.nn.functional.normalize(torch.randn(4, 16), dim=-1)
    cfg = build_segmenter_config({"steps": 1, "lr": 1e-3, "weight_decay": 0.0})
    criterion = make_criterion(model.mask2former, 4, 0.1, 2.0, 5.0, 5.0, 256)
    opt = make_optimizer(model, cfg)
    image, masks = sky_over_grass()
    batch = prepare_batch(processor, [ImageTargets(image, masks, ["b", "d"], "s", "k")], {n: i for i, n in
                                                                                           enumerate("abcd")}, CPU)
    teacher_head = model.mask2former.class_predictor.weight.clone()
    # Swin's last layer norm feeds no output: frozen, or DDP's fast path would fail on its missing gradient
    assert freeze_unused_parameters(model) == ["mask2former.model.pixel_level_module.encoder.swin.layernorm.weight",
                                               "mask2former.model.pixel_level_module.encoder.swin.layernorm.bias"]
    model.train()
    losses = [train_step(model, criterion, [batch], text, opt) for _ in range(8)]
    assert losses[-1] < 0.6 * losses[0], losses
    assert torch.equal(teacher_head, model.mask2former.class_predictor.weight)   # unused, never trained


def test_saved_folder_reloads_and_segment_names_the_right_classes(trained_folder, tmp_path, capsys):
    from mining.cli import main
    from mining.segmentation.run import read_label_png

    loaded = load_segmenter(trained_folder)
    assert loaded.meta["vocabulary"] == ["grass", "sky", "water"] and loaded.meta["clip"]["model"].startswith("local-dir:")
    image, masks = sky_over_grass(seed=5)          # a picture the segmenter did not train on
    Image.fromarray(image).save(tmp_path / "scene.png")
    out = tmp_path / "labels"
    # names in another order than training's, and one more: only the text embeddings change
    assert main(["segment", "--model", str(trained_folder), "--classes", "water,sky,grass", str(tmp_path / "scene.png"),
                 "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["images"] == 1
    doc = json.loads((out / "scene.json").read_text())
    labels = read_label_png((out / doc["label_map"]).read_bytes())
    assert labels.shape == (128, 128)
    sky, grass = 1, 2   # indices in --classes
    assert (labels[masks[0]] == sky).mean() > 0.9 and (labels[masks[1]] == grass).mean() > 0.9
    assert {s["class"] for s in doc["segments"] if s["area"] > 500} == {"sky", "grass"}
    assert all(0 < s["score"] <= 1 for s in doc["segments"])
    assert sum(s["area"] for s in doc["segments"]) == 128 * 128


def test_ensemble_formula_on_a_hand_example():
    p = torch.tensor([[0.6, 0.2], [0.1, 0.3]])       # segmenter (rows sum to 1 - p(no object))
    p_hat = torch.tensor([[0.5, 0.5], [0.9, 0.1]])   # CLIP
    # λ = 0.5: sqrt(p * p̂) -> [[sqrt(.30), sqrt(.10)], [sqrt(.09), sqrt(.03)]]
    got = geometric_ensemble(p, p_hat, 0.5)
    assert torch.allclose(got, torch.tensor([[0.30 ** 0.5, 0.10 ** 0.5], [0.3, 0.03 ** 0.5]]))
    # λ = 0 is the segmenter, λ = 1 is CLIP; a query without a crop keeps p
    assert torch.allclose(geometric_ensemble(p, p_hat, 0.0), p)
    assert torch.allclose(geometric_ensemble(p, p_hat, 1.0), p_hat)
    # λ = 0.75 on the second row: 0.1^0.25 * 0.9^0.75 = 0.4387.., 0.3^0.25 * 0.1^0.75 = 0.1316..
    mixed = geometric_ensemble(p, p_hat, 0.75, has_crop=torch.tensor([False, True]))
    assert torch.allclose(mixed[0], p[0])
    assert mixed[1].tolist() == pytest.approx([0.1 ** 0.25 * 0.9 ** 0.75, 0.3 ** 0.25 * 0.1 ** 0.75])
    assert mixed[1, 0] > mixed[1, 1]   # CLIP's confidence overturns the segmenter's choice
    with pytest.raises(ValueError, match="λ"):
        geometric_ensemble(p, p_hat, 1.5)


def test_corrupt_model_folder_names_the_path(trained_folder, tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        load_segmenter(tmp_path)
    broken = tmp_path / "broken"
    shutil.copytree(trained_folder, broken)
    (broken / "head.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match=str(broken / "head.safetensors")):
        load_segmenter(broken)
    shutil.copy(trained_folder / "head.safetensors", broken / "head.safetensors")
    (broken / "mask2former" / "model.safetensors").write_bytes(b"\0" * 64)
    with pytest.raises(ValueError, match=str(broken / "mask2former")):
        load_segmenter(broken)
    (broken / "segmenter.json").write_text("{not json")
    with pytest.raises(ValueError, match=str(broken / "segmenter.json")):
        load_segmenter(broken)


def test_bad_config_names_the_field():
    with pytest.raises(ConfigError, match="logit_scale"):
        build_segmenter_config({"steps": 1, "logit_scale": -1})
    with pytest.raises(ConfigError, match="backbone_lr"):
        build_segmenter_config({"steps": 1, "backbone_lr": 0.1})
    with pytest.raises(ConfigError, match="modle"):
        build_segmenter_config({"steps": 1, "clip": {"modle": "ViT-L-14"}})
    with pytest.raises(ConfigError, match="steps or epochs"):
        build_segmenter_config({})
    with pytest.raises(ConfigError, match="batch_size"):
        load_segmenter_config(ROOT / "configs" / "train_segmenter_toyworld.yaml", ["batch_size=0"])
    for name in ("train_segmenter_toyworld.yaml", "train_segmenter_swinl.yaml"):
        cfg = load_segmenter_config(ROOT / "configs" / name)
        assert cfg.steps or cfg.epochs


# --- on a mined toy world -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mined(tmp_path_factory) -> str:
    """A toy world of 2 shards x 3 images mined with the shipped toy models, no confidence filters."""
    from mining.pipeline import run_mining
    from mining.toyworld.demo import demo_config
    from mining.toyworld.make import make_world

    base = tmp_path_factory.mktemp("segtrain")
    world = make_world(str(base / "world"), 2, 3, 7_100_011, progress=False)
    cfg = demo_config(["execution.executor=local", "match.min_similarity=null", "match.min_margin=null"])
    run_mining(cfg, [world["shards_uri"]], str(base / "mined"))
    return str(base / "mined")


def tiny_cfg(**fields):
    return build_segmenter_config({"steps": 2, "batch_size": 2, "shuffle_buffer": 4, "log_every": 1,
                                   "train_num_points": 256} | fields)


def test_checkpoint_round_trips_and_a_resumed_run_continues(mined, tmp_path):
    from mining.train.ray_train import STATE_FILE, load_state
    from mining.train.segmenter_trainer import finish

    plan = make_plan(tiny_cfg(steps=2), [mined])
    assert plan.teacher == TEACHER                                 # the run's own teacher
    saved = []
    first = train_loop(plan, 0, 1, CPU, report=lambda metrics, state: saved.append(state))
    assert [s["step"] for s in saved] == [2] and first["step"] == 2
    torch.save(saved[-1], tmp_path / STATE_FILE)                   # as the Ray executor writes a checkpoint
    state = load_state(tmp_path)                                   # weights_only load
    assert state["model"].keys() == first["model"].keys()
    assert all(torch.equal(state["model"][k], v) for k, v in first["model"].items())
    longer = make_plan(tiny_cfg(steps=3), [mined])
    resumed = train_loop(longer, 0, 1, CPU, resume=state)
    assert resumed["resumed_from"] == 2 and resumed["step"] == 3
    assert [m["step"] for m in resumed["metrics"]] == [1, 2, 3]
    record = finish(longer, resumed, tmp_path / "model", [mined], "local", 1.0, 1)
    assert record["resumed_from_step"] == 2
    reloaded = load_segmenter(tmp_path / "model")
    assert all(torch.equal(reloaded.model.state_dict()[k], v) for k, v in resumed["model"].items())


def without_pairs(src: str, dst: Path) -> str:
    """A copy of an output whose records keep their masks but lose every pair."""
    shutil.copytree(src, dst)
    for tar_path in (dst / "shards").glob("*.tar"):
        with tarfile.open(tar_path) as tar:
            members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
        with tarfile.open(tar_path, "w") as tar:
            for info, data in members:
                if info.name.endswith(".json"):
                    data = json.dumps(json.loads(data) | {"pairs": []}).encode()
                    info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return str(dst)


def test_no_pairs_is_a_clear_error_naming_the_path(mined, tmp_path):
    empty = without_pairs(mined, tmp_path / "empty")
    with pytest.raises(NoTrainingData, match=str(tmp_path / "empty")):
        make_plan(tiny_cfg(), [empty])
    with pytest.raises(NoTrainingData, match=str(tmp_path / "nothing")):
        make_plan(tiny_cfg(), [str(tmp_path / "nothing")])


@pytest.mark.slow
def test_ray_train_checkpoints_and_resumes(mined, tmp_path):
    import ray

    from mining.train.ray_train import init_local_ray
    from mining.train.segmenter_trainer import train_segmenter

    started = init_local_ray()
    try:
        out = tmp_path / "ray"
        cfg = tiny_cfg(steps=2, workers=2, checkpoint_every=1)
        first = train_segmenter(cfg, [mined], out, executor="ray")
        assert first["steps"] == 2 and first["resumed_from_step"] == 0
        assert sorted(p.name for p in (out / "_checkpoints").glob("*.pt")) == ["step-00000001.pt", "step-00000002.pt"]
        second = train_segmenter(cfg, [mined], out, executor="ray")   # the same command: resumed at its end
        assert second["resumed_from_step"] == 2 and second["steps"] == 2
        third = train_segmenter(tiny_cfg(steps=3, workers=2, checkpoint_every=1), [mined], out, executor="ray",
                                overwrite=True)   # another length: only by starting over
        assert third["resumed_from_step"] == 0 and third["steps"] == 3
        assert load_segmenter(out).meta["vocabulary"] == third["vocabulary"]
    finally:
        if started:
            ray.shutdown()


def _masks_seen_by(rank: int, world: int, port: int, counts: list[int], out) -> None:
    import torch.distributed as dist

    from mining.train.segmenter import masks_per_worker

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    labels = [torch.zeros(counts[rank], dtype=torch.long)]
    out[rank] = float(masks_per_worker(labels, torch.device("cpu")))
    dist.destroy_process_group()


def test_the_mask_loss_is_normalised_by_the_global_batchs_masks():
    """3 masks on one worker, 1 on the other: both normalise by the mean, 2 (each its own count before)."""
    import torch.multiprocessing as mp

    from conftest import free_port
    from mining.train.segmenter import masks_per_worker

    assert float(masks_per_worker([torch.zeros(3), torch.zeros(0)], torch.device("cpu"))) == 3.0   # one worker
    out = mp.Manager().dict()
    mp.start_processes(_masks_seen_by, args=(2, free_port(), [3, 1], out), nprocs=2, join=True,
                       start_method="fork")   # no CUDA here: forking spares each worker the imports
    assert dict(out) == {0: 2.0, 1: 2.0}


def test_train_to_s3_then_segment_and_mine_load_from_the_bucket(mined, s3_endpoint, tmp_path, capsys, monkeypatch):
    """`--output s3://...` lands in the bucket (not in a local `s3:` folder), published descriptor last, and
    `segment --model s3://...` and `regions.model=local-dir:s3://...` load the models from there."""
    import boto3
    from PIL import Image

    from mining.cli import main
    from mining.regions.clip_loader import CACHE_DIR
    from mining.storage import Location, S3Options

    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(Bucket="models")
    s3 = S3Options(endpoint_url=s3_endpoint)
    published = []
    real_publish = Location.publish

    def recording(self, local_file):
        published.append(self.name)
        return real_publish(self, local_file)
    monkeypatch.setattr(Location, "publish", recording)
    from mining.train.segmenter_trainer import train_segmenter

    record = train_segmenter(tiny_cfg(steps=1, storage={"endpoint_url": s3_endpoint}), [mined], "s3://models/seg")
    monkeypatch.setattr(Location, "publish", real_publish)
    assert record["model"] == "s3://models/seg" and not (tmp_path / "s3:").exists()
    assert published[-1] == "segmenter.json" and "training.json" in published
    assert Location("s3://models/seg/segmenter.json", s3).exists()
    Image.fromarray(sky_over_grass(seed=3)[0]).save(tmp_path / "scene.png")
    assert main(["segment", "--model", "s3://models/seg", "--classes", "sky,grass", str(tmp_path / "scene.png"),
                 "--output", "s3://models/labels", "--s3-endpoint", s3_endpoint, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == 1
    assert Location("s3://models/labels/scene.png", s3).exists()
    assert (CACHE_DIR / "folders").is_dir()

    (tmp_path / "clip.yaml").write_text("steps: 1\nbatch_size: 2\nshuffle_buffer: 4\n")
    assert main(["train", "clip", "--config", str(tmp_path / "clip.yaml"), "--data", mined, "--output",
                 "s3://models/clip", "--s3-endpoint", s3_endpoint, "--json"]) == 0   # the flag is storage.endpoint_url
    assert json.loads(capsys.readouterr().out)["model"] == "local-dir:s3://models/clip"
    loaded = load_clip(RegionsConfig(model="local-dir:s3://models/clip", pretrained=None), CPU, s3)
    with torch.no_grad():
        assert torch.isfinite(loaded.model.encode_image(torch.randn(1, 3, loaded.input_size, loaded.input_size))).all()


def test_an_interrupted_segmenter_run_resumes_exactly(mined, tmp_path, monkeypatch):
    """Model B's resume puts back its stream position, its flips and the loss's point sampling (torch's random
    state): killed after step 1 of 2 and rerun, it ends with the weights of an uninterrupted run."""
    from mining.storage import Location
    from mining.train.checkpoints import CheckpointStore
    from mining.train.segmenter_trainer import train_segmenter

    cfg = tiny_cfg(steps=2, checkpoint_every=1)
    train_segmenter(cfg, [mined], tmp_path / "whole")
    real_save = CheckpointStore.save

    def killed_after_step_1(self, state):
        real_save(self, state)
        if state["step"] == 1:
            raise KeyboardInterrupt("killed")
    monkeypatch.setattr(CheckpointStore, "save", killed_after_step_1)
    with pytest.raises(KeyboardInterrupt):
        train_segmenter(cfg, [mined], tmp_path / "parts")
    monkeypatch.setattr(CheckpointStore, "save", real_save)
    assert train_segmenter(cfg, [mined], tmp_path / "parts")["resumed_from_step"] == 1
    a = CheckpointStore.of_output(Location(str(tmp_path / "whole"))).latest()
    b = CheckpointStore.of_output(Location(str(tmp_path / "parts"))).latest()
    assert a["workers"][0]["targets"] == b["workers"][0]["targets"]
    for k, v in a["model"].items():
        torch.testing.assert_close(b["model"][k], v, rtol=1e-4, atol=1e-5)


def test_grounding_trains_the_segmenter_on_an_image_without_targets_and_never_calls_it_background():
    """With grounding, an image that keeps no pair still teaches: the Mask2Former loss sees only the images
    with targets (the unpaired one is not pushed to "no object"), and the grounding loss aligns every image's
    queries with its caption nouns, so the query head gets a gradient from the unpaired image alone."""
    from mining.train.segmenter_trainer import batch_loss

    torch.manual_seed(0)
    model, processor = build_segmenter(TEACHER, 16, 20.0)
    freeze_unused_parameters(model)
    text = torch.nn.functional.normalize(torch.randn(4, 16), dim=-1)
    criterion = make_criterion(model.mask2former, 4, 0.1, 2.0, 5.0, 5.0, 256)
    vocabulary = {n: i for i, n in enumerate("abcd")}
    image, masks = sky_over_grass()
    paired = ImageTargets(image, masks, ["b", "d"], "s", "k1", ["b", "d"])
    unpaired = ImageTargets(sky_over_grass(seed=1)[0], np.zeros((0, 128, 128), bool), [], "s", "k2", ["a", "c"])
    model.eval()   # no dropout: the same input gives the same loss

    def loss(items, weight):
        torch.manual_seed(1)   # the loss samples points
        return batch_loss(model, criterion, prepare_batch(processor, items, vocabulary, CPU, grounding=weight > 0),
                          text, weight, 20.0)

    alone, together = loss([paired], 0.0), loss([paired, unpaired], 0.0)
    assert torch.allclose(alone, together, rtol=1e-4), (alone, together)   # the unpaired image adds no target
    words = prepare_batch(processor, [paired, unpaired], vocabulary, CPU, grounding=True)[4]
    assert torch.equal(words, torch.tensor([[0, 0.5, 0, 0.5], [0.5, 0, 0.5, 0]]))
    model.zero_grad()
    (loss([paired, unpaired], 1.0) - loss([paired, unpaired], 0.0)).backward()   # the grounding term alone
    assert model.head.proj.weight.grad.abs().sum() > 0
    with pytest.raises(ConfigError, match="grounding_weight"):
        build_segmenter_config({"steps": 1, "grounding_weight": -1})


def test_grounding_takes_every_caption_noun_and_every_image_that_names_one(tmp_path):
    """Mined with no confidence filter and read with one, the images whose pairs the filter drops still reach
    the segmenter with their caption nouns, and the vocabulary holds every caption noun."""
    from mining.pipeline import run_mining
    from mining.toyworld.demo import demo_config
    from mining.toyworld.make import make_world
    from mining.storage import Location
    from mining.train.data import PairFilter, shard_sources
    from mining.train.segmenter_data import TargetStream

    world = make_world(str(tmp_path / "world"), 1, 6, 7_100_013, progress=False)
    cfg = demo_config(["execution.executor=local", "match.min_similarity=null", "match.min_margin=null"])
    run_mining(cfg, [world["shards_uri"]], str(tmp_path / "mined"))
    strict = {"filters": {"min_similarity": 0.2, "min_margin": 0.25}}
    plain = make_plan(tiny_cfg(**strict), [str(tmp_path / "mined")])
    grounded = make_plan(tiny_cfg(**strict, grounding_weight=1.0), [str(tmp_path / "mined")])
    assert set(plain.vocabulary) < set(grounded.vocabulary)
    sources, filters = shard_sources([Location(str(tmp_path / "mined"))]), PairFilter.from_config(plain.train.filters)

    def images(grounding):
        stream = TargetStream(sources, filters, shuffle_buffer=1, grounding=grounding)
        return {it.key: it for it in stream.epoch(0)}
    without, with_nouns = images(False), images(True)
    assert set(without) < set(with_nouns)
    assert any(len(it.masks) == 0 and it.caption_nouns for it in with_nouns.values())
    assert all(set(it.nouns) <= set(it.caption_nouns) for it in with_nouns.values())
    assert all(not it.caption_nouns for it in without.values())
