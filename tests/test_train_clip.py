"""Model A (mask-adapted CLIP): reader, crops, loss, the written model folder, config errors, CLI, Ray Train."""
from __future__ import annotations

import contextlib
import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mining.config import ConfigError, RegionsConfig
from mining.regions.clip_loader import load_clip
from mining.regions.masked_crop import masked_crops
from mining.sinks.images import load_images
from mining.sinks.reader import iter_records, read_manifest
from mining.storage import Location
from mining.train.clip_trainer import (crop_spec, finish, make_optimizer, make_plan, resumed_stream, run_local,
                                       text_embeddings, train_step)
from mining.train.config import build_train_config, load_train_config
from mining.train.data import (DataCounts, ExampleStream, NoTrainingData, PairFilter, shard_examples,
                               shard_sources)

ROOT = Path(__file__).resolve().parents[1]
TINY = {"model": "ovmine-tiny-vit", "pretrained": None, "model_config_dir": None}
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def mined(tmp_path_factory) -> str:
    """A toy world of 2 shards x 3 images mined with the shipped toy models, no confidence filters."""
    from mining.pipeline import run_mining
    from mining.toyworld.demo import demo_config
    from mining.toyworld.make import make_world

    base = tmp_path_factory.mktemp("train")
    world = make_world(str(base / "world"), 2, 3, 7_100_011, progress=False)
    cfg = demo_config(["execution.executor=local", "match.min_similarity=null", "match.min_margin=null"])
    run_mining(cfg, [world["shards_uri"]], str(base / "mined"))
    return str(base / "mined")


def all_pairs(output: str) -> set[tuple]:
    return {(r.shard, r.key, p.mask_index, p.noun) for r in iter_records(output) for p in r.pairs}


def ids(examples) -> list[tuple]:
    return [(e.stem, e.key, e.mask_index, e.noun) for e in examples]


def rewrite_records(src: str, dst: Path, edit) -> str:
    """A copy of an output whose record JSONs went through `edit(doc) -> doc`."""
    shutil.copytree(src, dst)
    for tar_path in (dst / "shards").glob("*.tar"):
        with tarfile.open(tar_path) as tar:
            members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
        with tarfile.open(tar_path, "w") as tar:
            for info, data in members:
                if info.name.endswith(".json"):
                    data = json.dumps(edit(tar_path.stem, json.loads(data))).encode()
                    info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return str(dst)


def tiny_cfg(**fields):
    return build_train_config({"regions": TINY, "steps": 2, "batch_size": 4, "shuffle_buffer": 8, "lr": 1e-3,
                               "log_every": 1} | fields)


def test_loss_falls_on_a_fixed_batch():
    torch.manual_seed(0)
    clip = load_clip(RegionsConfig(**TINY), CPU)
    from mining.train.clip_trainer import freeze_all_but_image_tower

    freeze_all_but_image_tower(clip.model)
    text = text_embeddings(clip, ["circle", "square", "star", "grass"], CPU, "vild")
    pixels, labels = torch.randn(8, 3, 64, 64), torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    cfg = build_train_config({"steps": 1, "lr": 1e-3, "weight_decay": 0.0})
    opt = make_optimizer(clip.model.visual, cfg)
    text_before = [p.clone() for p in clip.model.transformer.parameters()]
    clip.model.visual.train()
    losses = [train_step(clip.model.visual, [(pixels[:4], labels[:4]), (pixels[4:], labels[4:])], text, 10.0, opt)
              for _ in range(15)]
    assert losses[-1] < 0.5 * losses[0], losses
    assert all(torch.equal(a, b) for a, b in zip(text_before, clip.model.transformer.parameters()))


def test_trainer_crops_are_minings_crops(mined):
    manifest = read_manifest(mined)
    clip = load_clip(RegionsConfig.model_validate(manifest["config"]["regions"]), CPU)
    plan = make_plan(build_train_config({"steps": 1}), [mined])
    assert plan.crop == {"context": manifest["config"]["regions"]["crop_context"][0],
                         "fit": manifest["config"]["regions"]["crop_fit"]}
    spec = crop_spec(plan, clip)
    src = shard_sources([mined])[0]
    examples = list(shard_examples(src, manifest, PairFilter(), spec, DataCounts()))
    assert examples
    records = {r.key: r for r in iter_records(mined)}
    images = load_images(mined, manifest, [(src.stem, e.key) for e in examples])
    mean, std = torch.tensor(clip.mean), torch.tensor(clip.std)
    for e in examples[:5]:
        mask = torch.from_numpy(records[e.key].masks[e.mask_index].decode())[None]
        image = torch.from_numpy(images[(src.stem, e.key)]).permute(2, 0, 1).float() / 255.0
        crop = masked_crops(image, mask, clip.input_size, fill=mean, context=spec.context, fit=spec.fit)[0]
        assert torch.equal(e.pixels, (crop - mean[:, None, None]) / std[:, None, None])


def test_reader_splits_shards_filters_and_is_deterministic(mined):
    sources = shard_sources([mined])
    assert len(sources) == 2
    w0 = ids(ExampleStream(sources, PairFilter(), _spec(mined), 0, 2, seed=3, shuffle_buffer=4).epoch(0))
    w1 = ids(ExampleStream(sources, PairFilter(), _spec(mined), 1, 2, seed=3, shuffle_buffer=4).epoch(0))
    assert w0 and w1 and not set(w0) & set(w1)
    assert {(k, m, n) for _, k, m, n in w0 + w1} == {(k, m, n) for _, k, m, n in all_pairs(mined)}
    assert len(w0) + len(w1) == len(all_pairs(mined))
    assert {s for s, *_ in w0} == {sources[0].stem} and {s for s, *_ in w1} == {sources[1].stem}
    # deterministic given the seed; another seed (or epoch) shuffles differently
    one = ExampleStream(sources, PairFilter(), _spec(mined), seed=5, shuffle_buffer=4)
    again = ExampleStream(sources, PairFilter(), _spec(mined), seed=5, shuffle_buffer=4)
    assert ids(one.epoch(0)) == ids(again.epoch(0))
    assert sorted(ids(one.epoch(1))) == sorted(ids(again.epoch(0)))
    assert any(ids(ExampleStream(sources, PairFilter(), _spec(mined), seed=s, shuffle_buffer=4).epoch(0))
               != ids(one.epoch(0)) for s in (6, 7, 8))
    # filters: similarity, margin (None passes), allow and deny
    pairs = [p for r in iter_records(mined) for p in r.pairs]
    threshold = float(np.median([p.similarity for p in pairs]))
    kept = ids(ExampleStream(sources, PairFilter(min_similarity=threshold), _spec(mined)).epoch(0))
    assert len(kept) == sum(p.similarity >= threshold for p in pairs)
    margin = ids(ExampleStream(sources, PairFilter(min_margin=0.05), _spec(mined)).epoch(0))
    assert len(margin) == sum(p.margin is None or p.margin >= 0.05 for p in pairs)
    noun = pairs[0].noun
    allow = ids(ExampleStream(sources, PairFilter(allow=frozenset([noun])), _spec(mined)).epoch(0))
    assert allow and {n for *_, n in allow} == {noun}
    deny = ids(ExampleStream(sources, PairFilter(deny=frozenset([noun])), _spec(mined)).epoch(0))
    assert len(deny) == len(pairs) - len(allow) and noun not in {n for *_, n in deny}
    vocabulary = make_plan(build_train_config({"steps": 1, "filters": {"nouns_deny": [noun]}}), [mined]).vocabulary
    assert noun not in vocabulary and vocabulary == sorted({p.noun for p in pairs} - {noun})


def test_held_out_nouns_never_reach_a_training_batch(mined):
    """A noun held out (`filters.nouns_deny`, for unseen-class evaluation) is in no pair, no grounding caption and
    not in the vocabulary, so neither loss ever sees it, as a positive or a negative."""
    from mining.train.grounding import ImageStream

    sources = shard_sources([mined])
    everything = list(ImageStream(sources, PairFilter(), _spec(mined), max_masks=4).epoch(0))
    counts = {}
    for e in everything:
        for n in e.nouns:
            counts[n] = counts.get(n, 0) + 1
    held = max(counts, key=counts.get)   # the commonest caption noun
    filters = PairFilter(deny=frozenset([held]))
    images = list(ImageStream(sources, filters, _spec(mined), max_masks=4).epoch(0))
    assert images and all(held not in e.nouns for e in images)
    assert all(n != held for *_, n in ids(ExampleStream(sources, filters, _spec(mined)).epoch(0)))
    cfg = build_train_config({"steps": 1, "grounding": {"weight": 1.0}, "filters": {"nouns_deny": [held]}})
    assert held not in make_plan(cfg, [mined]).vocabulary


def _spec(mined):
    manifest = read_manifest(mined)
    clip = load_clip(RegionsConfig.model_validate(manifest["config"]["regions"]), CPU)
    return crop_spec(make_plan(build_train_config({"steps": 1}), [mined]), clip)


def test_missing_input_shard_is_skipped_and_counted(mined, tmp_path):
    def point_away(stem, doc):
        if stem == "00000":
            doc["shard"] = str(tmp_path / "gone" / "00000.tar")
        return doc

    broken = rewrite_records(mined, tmp_path / "broken", point_away)
    stream = ExampleStream(shard_sources([broken]), PairFilter(), _spec(mined))
    got = ids(stream.epoch(0))
    lost = sum(len(r.pairs) for r in iter_records(broken) if r.shard.endswith("gone/00000.tar"))
    assert lost > 0
    assert stream.counts.missing_image == lost
    assert len(got) == len(all_pairs(mined)) - lost and {s for s, *_ in got} == {"00001"}


def test_no_pairs_is_a_clear_error_naming_the_path(mined, tmp_path):
    empty = rewrite_records(mined, tmp_path / "empty", lambda stem, doc: doc | {"pairs": []})
    with pytest.raises(NoTrainingData, match=str(tmp_path / "empty")):
        make_plan(build_train_config({"steps": 1}), [empty])
    with pytest.raises(NoTrainingData, match=mined):
        make_plan(build_train_config({"steps": 1, "filters": {"nouns_allow": ["zebra"]}}), [mined])
    with pytest.raises(NoTrainingData, match=str(tmp_path / "nothing")):
        make_plan(build_train_config({"steps": 1}), [str(tmp_path / "nothing")])
    with pytest.raises(NoTrainingData, match="workers"):
        make_plan(build_train_config({"steps": 1}), [mined], workers=3)


def test_bad_config_names_the_field():
    with pytest.raises(ConfigError, match="lr"):
        build_train_config({"steps": 1, "lr": -1})
    with pytest.raises(ConfigError, match="lrate"):
        build_train_config({"steps": 1, "lrate": 0.1})
    with pytest.raises(ConfigError, match="filters.min_margin"):
        build_train_config({"steps": 1, "filters": {"min_margin": "high"}})
    with pytest.raises(ConfigError, match="modle"):
        build_train_config({"steps": 1, "regions": {"modle": "ViT-B-16"}})
    with pytest.raises(ConfigError, match="steps or epochs"):
        build_train_config({})
    with pytest.raises(ConfigError, match="method"):
        build_train_config({"steps": 1, "method": "lora"})
    with pytest.raises(ConfigError, match="mpt.depth"):
        build_train_config({"steps": 1, "mpt": {"depth": 0}})
    with pytest.raises(ConfigError, match="nothing to learn"):
        build_train_config({"steps": 1, "pair_weight": 0})
    with pytest.raises(ConfigError, match="batch_size"):
        load_train_config(ROOT / "configs" / "train_clip_toyworld.yaml", ["batch_size=0"])
    assert load_train_config(ROOT / "configs" / "train_clip_toyworld.yaml").steps > 0


def test_written_folder_reloads_with_the_trained_embeddings(mined, tmp_path):
    plan = make_plan(tiny_cfg(steps=3), [mined])
    final = run_local(plan)
    out = tmp_path / "model"
    record = finish(plan, final, out, [mined], "local", 1.0, 1)
    trained = load_clip(RegionsConfig(**TINY), CPU)
    start = {k: v.clone() for k, v in trained.model.state_dict().items()}
    trained.model.visual.load_state_dict(final["visual"])
    reloaded = load_clip(RegionsConfig(model=f"local-dir:{out}", pretrained=None), CPU)
    assert (reloaded.input_size, reloaded.mean, reloaded.std) == (trained.input_size, trained.mean, trained.std)
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(reloaded.model.encode_image(x), trained.model.encode_image(x))
    state = reloaded.model.state_dict()
    assert any(not torch.equal(state[k], v) for k, v in start.items() if k.startswith("visual."))
    assert all(torch.equal(state[k], v) for k, v in start.items() if not k.startswith("visual."))
    doc = json.loads((out / "training.json").read_text())
    assert doc["steps"] == 3 and doc["final_loss"] == record["final_loss"] is not None
    assert doc["counts"]["scan"]["pairs"] == len(all_pairs(mined))
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [1, 2, 3]
    assert set(lines[0]) == {"step", "loss", "lr", "phase", "samples_per_s"} and lines[0]["phase"] == "ft"


def test_ft_then_mpt_writes_a_plain_clip_and_its_prompts(mined, tmp_path):
    from mining.regions.mask_prompts import MaskPromptedViT, PROMPTS_FILE, apply_mask_prompts

    plan = make_plan(tiny_cfg(steps=2, method="ft+mpt", mpt={"depth": 2, "steps": 2}), [mined])
    assert plan.total_steps == 4
    final = run_local(plan)
    out = tmp_path / "model"
    record = finish(plan, final, out, [mined], "local", 1.0, 1)
    assert record["method"] == "ft+mpt" and record["mask_prompts"] and (out / PROMPTS_FILE).is_file()
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [(m["step"], m["phase"]) for m in lines] == [(1, "ft"), (2, "ft"), (3, "mpt"), (4, "mpt")]
    # the folder is a plain CLIP (the FT tower) that open_clip loads by itself ...
    import open_clip

    plain, _, _ = open_clip.create_model_and_transforms(f"local-dir:{out}")
    tower = load_clip(RegionsConfig(**TINY), CPU).model.visual
    tower.load_state_dict(final["visual"])
    x = torch.randn(2, 3, 64, 64)
    x[:, :, :, :32] = 0          # blank patches, which the prompts replace
    # ... and mining's loader (regions.model) puts the prompts back on it
    mined = load_clip(RegionsConfig(model=f"local-dir:{out}", pretrained=None), CPU)
    assert isinstance(mined.model.visual, MaskPromptedViT)
    with torch.no_grad():
        assert torch.equal(plain.eval().encode_image(x), tower(x))
        expected = MaskPromptedViT(tower, prompts=final["prompts"])(x)
        assert torch.allclose(mined.model.encode_image(x), expected, atol=1e-6)
        assert not torch.allclose(expected, tower(x), atol=1e-4)
        assert apply_mask_prompts(plain, out)   # the same, by hand, for a model loaded elsewhere
        assert torch.allclose(plain.encode_image(x), expected, atol=1e-6)


def test_mpt_only_keeps_every_clip_weight(mined, tmp_path):
    plan = make_plan(tiny_cfg(steps=2, method="mpt", mpt={"depth": 2}), [mined])
    final = run_local(plan)
    start = load_clip(RegionsConfig(**TINY), CPU).model.visual.state_dict()
    assert all(torch.equal(final["visual"][k], v) for k, v in start.items())
    assert final["prompts"].shape == (2, 16, 32)


def test_grounding_learns_from_an_output_without_pairs(mined, tmp_path):
    empty = rewrite_records(mined, tmp_path / "empty", lambda stem, doc: doc | {"pairs": []})
    cfg = tiny_cfg(steps=2, pair_weight=0, grounding={"weight": 1.0, "images": 2, "max_masks": 3})
    plan = make_plan(cfg, [empty])
    nouns = {e.noun for r in iter_records(mined) for e in r.entities}
    assert set(plan.vocabulary) == nouns
    final = run_local(plan)
    assert final["step"] == 2 and np.isfinite(final["final_loss"])
    assert final["counts"]["examples"] >= 2


def test_the_grounding_temperature_is_learned(mined, tmp_path):
    """OpenSeg's learnable temperature: it starts at the model's logit scale, moves with training, is logged, and
    stays put with learn_scale off."""
    grounding = {"weight": 1.0, "images": 2, "max_masks": 3}
    plan = make_plan(tiny_cfg(steps=3, log_every=1, grounding=grounding | {"learn_scale": True, "scale_lr": 0.1}),
                     [mined])
    final = run_local(plan)
    start = float(load_clip(RegionsConfig(**TINY), CPU).model.logit_scale.detach())
    assert abs(final["grounding_log_scale"] - start) > 0.05
    logged = [m["grounding_scale"] for m in final["metrics"]]
    assert len(set(logged)) == len(logged) == 3
    fixed = run_local(make_plan(tiny_cfg(steps=3, grounding=grounding), [mined]))   # off by default
    assert fixed["grounding_log_scale"] is None and "grounding_scale" not in fixed["metrics"][-1]


def test_word_dropping_keeps_a_noun_per_caption():
    """OpenSeg's word keep-probability: each noun of a caption survives with probability `keep`, never all
    dropped; keep = 1 drops nothing."""
    from mining.train.grounding import ImageExample, noun_rows

    index = {n: i for i, n in enumerate("abcdef")}
    pixels = torch.zeros(1, 3, 4, 4)
    batch = [ImageExample(pixels, list("abcdef"), "s", "k"), ImageExample(pixels, ["c"], "s", "j")]
    torch.manual_seed(0)
    kept = [int((noun_rows([e.nouns for e in batch], index, CPU, keep=0.5)[0] > 0).sum()) for _ in range(200)]
    assert min(kept) >= 1 and kept.count(6) < 20 and 2.5 < sum(kept) / len(kept) < 3.6
    rows = noun_rows([e.nouns for e in batch], index, CPU, keep=0.5)
    assert torch.allclose(rows.sum(1), torch.ones(2)) and rows[1, 2] == 1.0
    assert torch.equal(noun_rows([e.nouns for e in batch], index, CPU),
                       torch.tensor([[1 / 6] * 6, [0, 0, 1.0, 0, 0, 0]]))


def test_grounding_loss_known_answers():
    from mining.train.grounding import alignment_scores, grounding_loss

    text = torch.eye(3)                                   # three words, orthogonal
    regions = [torch.eye(3)[[0, 1]], torch.eye(3)[[2]]]   # image 0 shows words 0 and 1, image 1 word 2
    a = alignment_scores(regions, text, scale=10.0)
    s = torch.softmax(torch.tensor([10.0, 0.0]), 0)[0]    # a word aligned to one of two masks
    assert torch.allclose(a, torch.tensor([[s, s, 0.0], [0.0, 0.0, 1.0]]))
    right = torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    assert grounding_loss(regions, right, text, 10.0) < grounding_loss(regions, right.flip(0), text, 10.0)
    # two captions with the same nouns are both right: the loss does not ask to tell them apart
    same = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    twins = [torch.eye(3)[[2]], torch.eye(3)[[2]]]
    assert torch.isclose(grounding_loss(twins, same, text, 10.0), torch.log(torch.tensor(2.0)), atol=1e-5)


def test_cli_trains_with_the_shipped_config(mined, tmp_path, capsys):
    from mining.cli import main

    out = tmp_path / "clip"
    rc = main(["train", "clip", "--config", str(ROOT / "configs" / "train_clip_toyworld.yaml"), "--data", mined,
               "--output", str(out), "--set", "steps=2", "--set", "batch_size=4", "--json"])
    assert rc == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["steps"] == 2 and doc["model"] == f"local-dir:{out.resolve()}"
    assert (out / "open_clip_model.safetensors").is_file() and (out / "open_clip_config.json").is_file()
    rc = main(["train", "clip", "--config", str(ROOT / "configs" / "train_clip_toyworld.yaml"), "--data", mined,
               "--output", str(out), "--set", "lrr=1"])
    assert rc == 2 and "lrr" in capsys.readouterr().err


@pytest.mark.slow
def test_ray_train_checkpoints_and_resumes(mined, tmp_path):
    import ray

    from mining.train.checkpoints import CheckpointStore, TrainingConflict
    from mining.train.clip_trainer import train_clip
    from mining.train.ray_train import init_local_ray

    started = init_local_ray()
    try:
        out = tmp_path / "ray"
        cfg = tiny_cfg(steps=2, workers=2, checkpoint_every=1)
        first = train_clip(cfg, [mined], out, executor="ray")
        assert first["steps"] == 2 and first["resumed_from_step"] == 0
        assert sorted(p.name for p in (out / "_checkpoints").glob("*.pt")) == ["step-00000001.pt", "step-00000002.pt"]
        assert len(CheckpointStore.of_output(Location(str(out))).latest()["workers"]) == 2   # every worker's place
        # the same command again resumes at the saved (last) step; another length is another training
        second = train_clip(cfg, [mined], out, executor="ray")
        assert second["resumed_from_step"] == 2 and second["steps"] == 2
        longer = tiny_cfg(steps=4, workers=2, checkpoint_every=1)
        with pytest.raises(TrainingConflict):
            train_clip(longer, [mined], out, executor="ray")
        third = train_clip(longer, [mined], out, executor="ray", overwrite=True)
        assert third["resumed_from_step"] == 0 and third["steps"] == 4
        lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        assert [m["step"] for m in lines] == [1, 2, 3, 4]
        assert load_clip(RegionsConfig(model=f"local-dir:{out}", pretrained=None), CPU).input_size == 64
    finally:
        if started:
            ray.shutdown()


@pytest.mark.slow
def test_a_ray_run_whose_worker_or_driver_is_killed_ends_as_an_uninterrupted_one(mined, tmp_path):
    """A worker SIGKILLed mid-run (Ray restarts the group from ovmine's latest checkpoint), then the driver
    SIGKILLed and the command run again: the weights are an uninterrupted run's."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import psutil

    from mining.train.checkpoints import CheckpointStore

    def command(out, *extra):
        return [sys.executable, "-m", "mining.cli", "train", "clip", "--config", "configs/train_clip_toyworld.yaml",
                "--data", mined, "--output", str(out), "--executor", "ray", "--set", "steps=16",
                "--set", "workers=2", "--set", "checkpoint_every=2", "--set", "batch_size=4",
                "--set", "shuffle_buffer=8", "--set", "max_failures=2", "--set", "filters.min_similarity=null",
                "--set", "filters.min_margin=null", "--set", "warmup_steps=0", *extra]

    def wait_for(path, proc):
        while not path.exists():
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.1)

    assert subprocess.run(command(tmp_path / "whole"), cwd=ROOT, capture_output=True).returncode == 0
    out = tmp_path / "killed"
    proc = subprocess.Popen(command(out), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(out / "_checkpoints" / "step-00000004.pt", proc)
        workers = [p for p in psutil.Process(proc.pid).children(recursive=True) if "RayTrainWorker" in p.name()
                   or any("RayTrainWorker" in part for part in p.cmdline())]
        assert workers, "no Ray Train worker found"
        workers[-1].kill()
        wait_for(out / "_checkpoints" / "step-00000010.pt", proc)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        proc.kill()
    rerun = subprocess.run(command(out), cwd=ROOT, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    record = json.loads((out / "training.json").read_text())
    assert record["resumed_from_step"] >= 10 and record["steps"] == 16
    a = CheckpointStore.of_output(Location(str(tmp_path / "whole"))).latest()
    b = CheckpointStore.of_output(Location(str(out))).latest()
    for k, v in a["visual"].items():
        torch.testing.assert_close(b["visual"][k], v, rtol=1e-4, atol=1e-5)


def test_a_run_resumed_at_its_last_step_finishes_its_folder(mined, tmp_path):
    """A driver killed after the last checkpoint but before the folder was written: the rerun writes it."""
    from mining.train.clip_trainer import train_loop

    plan = make_plan(tiny_cfg(steps=2), [mined])
    final = run_local(plan)
    again = train_loop(plan, 0, 1, CPU, resume=final)
    assert again["step"] == 2 and again["metrics"] == final["metrics"]
    assert all(torch.equal(again["visual"][k], v) for k, v in final["visual"].items())
    finish(plan, again, tmp_path / "model", [mined], "local", 1.0, 1)
    assert [p.name for p in tmp_path.iterdir()] == ["model"], "published whole: no staging folder is left"
    assert load_clip(RegionsConfig(model=f"local-dir:{tmp_path / 'model'}", pretrained=None), CPU).input_size == 64


def test_ft_mpt_and_ft_mpt_chained_from_each_others_folders_reload(mined, tmp_path):
    """A second self-training round starts from the first round's folder, prompted or not; each folder reloads
    through regions.model with the tower's own preprocessing, its prompts applied."""
    from mining.regions.mask_prompts import MaskPromptedViT, PROMPTS_FILE, load_mask_prompts

    tiny = load_clip(RegionsConfig(**TINY), CPU)
    start = TINY
    folders = {}
    for method in ("ft", "mpt", "ft+mpt", "ft"):
        plan = make_plan(tiny_cfg(steps=1, method=method, regions=start, mpt={"depth": 2, "steps": 1}), [mined])
        out = tmp_path / f"{len(folders)}-{method}"
        finish(plan, run_local(plan), out, [mined], "local", 1.0, 1)
        folders[out.name] = out
        reloaded = load_clip(RegionsConfig(model=f"local-dir:{out}", pretrained=None), CPU)
        assert (reloaded.input_size, reloaded.mean, reloaded.std) == (tiny.input_size, tiny.mean, tiny.std), method
        keys = json.loads((out / "open_clip_config.json").read_text())["model_cfg"]
        assert keys and not any(k.startswith("visual.visual") for k in reloaded.model.state_dict()
                                if not isinstance(reloaded.model.visual, MaskPromptedViT))
        assert isinstance(reloaded.model.visual, MaskPromptedViT) == (method != "ft" or len(folders) > 1), method
        with torch.no_grad():
            assert torch.isfinite(reloaded.model.encode_image(torch.randn(2, 3, 64, 64))).all()
        start = {"model": f"local-dir:{out}", "pretrained": None, "model_config_dir": None}
    last_mpt, final_ft = folders["2-ft+mpt"], folders["3-ft"]
    assert (final_ft / PROMPTS_FILE).is_file()   # FT from a prompted folder keeps its prompts, unchanged
    assert torch.equal(load_mask_prompts(final_ft), load_mask_prompts(last_mpt))
    import open_clip
    plain, _, _ = open_clip.create_model_and_transforms(f"local-dir:{final_ft}")   # a plain CLIP, as ever
    assert not any(k.startswith("visual.visual") or k == "visual.prompts" for k in plain.state_dict())


def test_a_vits_positional_and_class_embeddings_do_not_decay():
    clip = load_clip(RegionsConfig(**TINY), CPU)
    visual = clip.model.visual
    opt = make_optimizer(visual, build_train_config({"steps": 1, "weight_decay": 0.2}))
    by_id = {id(p): n for n, p in visual.named_parameters()}
    decayed = {by_id[id(p)] for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    kept = {by_id[id(p)] for g in opt.param_groups if g["weight_decay"] == 0 for p in g["params"]}
    assert {"positional_embedding", "class_embedding"} <= kept and "conv1.weight" in decayed
    assert not decayed & kept and decayed | kept == set(by_id.values())


class _Recorder(torch.nn.Module):
    """A DDP stand-in: counts the micro-batches run under `no_sync` (no all-reduce)."""
    def __init__(self, inner):
        super().__init__()
        self.module, self.unsynced, self._inside = inner, 0, False

    def forward(self, x):
        self.unsynced += self._inside
        return self.module(x)

    @contextlib.contextmanager
    def no_sync(self):
        self._inside = True
        try:
            yield
        finally:
            self._inside = False


def test_gradient_accumulation_syncs_once_per_step_and_clips():
    torch.manual_seed(0)
    net = _Recorder(torch.nn.Linear(6, 4))
    opt = torch.optim.SGD(net.parameters(), lr=0.0)   # lr 0: the gradients stay as the step left them
    text = F.normalize(torch.randn(3, 4), dim=-1)
    batches = [(torch.randn(5, 6) * 100, torch.randint(0, 3, (5,))) for _ in range(3)]
    train_step(net, batches, text, 10.0, opt, grad_clip=1e-3)
    assert net.unsynced == 2   # three micro-batches, the last one synchronised
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in net.parameters()]))
    assert norm <= 1e-3 * (1 + 1e-5)


def test_pair_and_grounding_crops_from_two_devices_meet_on_the_texts(monkeypatch):
    """The pairs' crops arrive on the training device, the images' crops as their stream made them: the
    mixed loss moves both to the text embeddings' device (a CUDA run concatenated across devices before)."""
    from mining.train.clip_trainer import mixed_loss
    from mining.train.grounding import ImageExample, noun_rows

    seen = []

    class Tower(torch.nn.Module):
        def forward(self, x):
            seen.append(x.device)
            return x.flatten(1)[:, :4]

    text = F.normalize(torch.randn(3, 4), dim=-1)
    moved = []
    real_to = torch.Tensor.to

    def tracking_to(self, *args, **kwargs):   # where each part is sent
        moved.append(args[0] if args else kwargs.get("device"))
        return real_to(self, *args, **kwargs)
    monkeypatch.setattr(torch.Tensor, "to", tracking_to)
    images = [ImageExample(torch.randn(2, 1, 2, 2), ["a", "b"], "s", "k"),
              ImageExample(torch.randn(3, 1, 2, 2), ["c"], "s", "j")]
    loss = mixed_loss(Tower(), torch.randn(4, 1, 2, 2), torch.tensor([0, 1, 2, 0]), images,
                      noun_rows([e.nouns for e in images], {"a": 0, "b": 1, "c": 2}, CPU), text, 10.0, 1.0, 1.0)
    assert torch.isfinite(loss) and moved.count(text.device) >= 3   # each of the three parts, before the cat


def test_pictures_are_streamed_in_record_order_as_load_images_finds_them(mined, tmp_path):
    """One decoded picture at a time (memory flat in the shard's size), the same pixels as the report's reader,
    whatever order the keys are asked in, and None for a key the shard does not have."""
    from mining.sinks.images import stream_images

    manifest = read_manifest(mined)
    stem = shard_sources([Location(mined)])[0].stem
    keys = [r.key for r in iter_records(mined) if r.shard.endswith(f"{stem}.tar")]
    wanted = list(reversed(keys)) + ["no-such-key"]
    streamed = stream_images(mined, manifest, stem, wanted)
    assert not isinstance(streamed, (list, dict))   # a generator: nothing decoded before it is asked for
    got = list(streamed)
    expected = load_images(mined, manifest, [(stem, k) for k in keys])
    assert [k for k, _ in got] == wanted and got[-1][1] is None
    for key, image in got[:-1]:
        assert np.array_equal(image, expected[(stem, key)])


def test_a_cluster_run_with_checkpoints_on_a_local_disk_is_refused(monkeypatch):
    import ray

    from mining.train.ray_train import refuse_local_storage_on_a_cluster

    monkeypatch.setattr(ray, "nodes", lambda: [{"Alive": True}, {"Alive": True}, {"Alive": False}])
    with pytest.raises(ValueError, match=r"storage_path /tmp/x/_ray is on this machine's disk, but the cluster has 2 "
                                         r"nodes: set storage_path to s3://"):
        refuse_local_storage_on_a_cluster("/tmp/x/_ray", workers=2)
    refuse_local_storage_on_a_cluster("s3://b/x/_ray", workers=2)     # reachable from every node
    refuse_local_storage_on_a_cluster("/tmp/x/_ray", workers=1)       # one worker: one disk


def _recording(monkeypatch, module, seen):
    """Record what each training stream hands the loop (its item ids, in order)."""
    real = resumed_stream   # imported before any test patched the module: not an earlier recorder

    def recorded(stream, saved):
        name = type(stream).__name__
        for item in real(stream, saved):
            seen.setdefault(name, []).append((item.stem, item.key, getattr(item, "mask_index", None)))
            yield item
    monkeypatch.setattr(module, "resumed_stream", recorded)


def test_an_interrupted_local_run_resumes_exactly(mined, tmp_path, monkeypatch):
    """Killed right after its step-2 checkpoint, the same command resumes there: together the two runs see the
    samples an uninterrupted run sees, in order, and end with its weights."""
    import mining.train.clip_trainer as trainer
    from mining.train.checkpoints import CheckpointStore
    from mining.train.clip_trainer import train_clip

    cfg = tiny_cfg(steps=5, checkpoint_every=2, shuffle_buffer=5,
                   grounding={"weight": 1.0, "images": 2, "shuffle_buffer": 3, "learn_scale": True, "word_keep": 0.5})
    whole: dict = {}
    _recording(monkeypatch, trainer, whole)
    train_clip(cfg, [mined], tmp_path / "whole")
    parts: dict = {}
    _recording(monkeypatch, trainer, parts)
    real_save = CheckpointStore.save

    def killed_after_step_2(self, state):
        real_save(self, state)
        if state["step"] == 2:
            raise KeyboardInterrupt("killed")
    monkeypatch.setattr(CheckpointStore, "save", killed_after_step_2)
    with pytest.raises(KeyboardInterrupt):
        train_clip(cfg, [mined], tmp_path / "parts")
    monkeypatch.setattr(CheckpointStore, "save", real_save)
    record = train_clip(cfg, [mined], tmp_path / "parts")
    assert record["resumed_from_step"] == 2 and record["steps"] == 5
    for name in whole:
        first = next((i for i, (x, y) in enumerate(zip(parts[name], whole[name])) if x != y), None)
        assert (first, len(parts[name])) == (None, len(whole[name])), (name, first)
    assert set(whole) == {"ExampleStream", "ImageStream"}
    a = CheckpointStore.of_output(Location(str(tmp_path / "whole"))).latest()
    b = CheckpointStore.of_output(Location(str(tmp_path / "parts"))).latest()
    assert a["step"] == b["step"] == 5 and a["counts"] == b["counts"]
    for k, v in a["visual"].items():
        torch.testing.assert_close(b["visual"][k], v, rtol=1e-5, atol=1e-6)
    assert a["grounding_log_scale"] == pytest.approx(b["grounding_log_scale"], abs=1e-6)


def test_a_rerun_with_another_config_is_refused_and_overwrite_starts_over(mined, tmp_path, capsys):
    from mining.train.checkpoints import TrainingConflict
    from mining.train.clip_trainer import train_clip

    out = tmp_path / "model"
    train_clip(tiny_cfg(steps=2), [mined], out)
    again = train_clip(tiny_cfg(steps=2, log_every=2), [mined], out)   # how it is watched is not its config
    assert again["resumed_from_step"] == 2
    for changed in ({"steps": 3}, {"lr": 2e-3}, {"seed": 1}):
        with pytest.raises(TrainingConflict, match="holds a clip training with another config"):
            train_clip(tiny_cfg(**changed), [mined], out)
    fresh = train_clip(tiny_cfg(steps=3), [mined], out, overwrite=True)
    assert fresh["resumed_from_step"] == 0 and fresh["steps"] == 3


def test_a_damaged_latest_checkpoint_is_named_and_the_one_before_used(mined, tmp_path, caplog):
    from mining.train.checkpoints import CheckpointStore
    from mining.train.clip_trainer import train_clip

    out = tmp_path / "model"
    train_clip(tiny_cfg(steps=3, checkpoint_every=1), [mined], out)
    store = CheckpointStore.of_output(Location(str(out)))
    latest = out / "_checkpoints" / "step-00000003.pt"
    assert sorted(p.name for p in (out / "_checkpoints").glob("*.pt")) == ["step-00000002.pt", latest.name]
    latest.write_bytes(latest.read_bytes()[:100])   # torn
    with caplog.at_level("WARNING", logger="ovmine"):
        state = store.latest()
    assert state["step"] == 2 and f"checkpoint {latest} is damaged" in caplog.text
    record = train_clip(tiny_cfg(steps=3, checkpoint_every=1), [mined], out)
    assert record["resumed_from_step"] == 2 and record["steps"] == 3


def _scaled_tower_step(rank, world, port, out):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from mining.train.clip_trainer import mixed_loss
    from mining.train.grounding import ImageExample, ScaledTower

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    torch.manual_seed(0)
    tower = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
    wrapped = DistributedDataParallel(ScaledTower(tower, torch.nn.Parameter(torch.tensor(2.0))))
    opt = torch.optim.SGD(wrapped.parameters(), lr=0.5)
    torch.manual_seed(1 + rank)   # each worker its own images
    images = [ImageExample(torch.randn(2, 3, 2, 2), ["a"], "s", str(i)) for i in range(2)]
    words = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    mixed_loss(wrapped, None, None, images, words, torch.eye(3), 100.0, 0.0, 1.0).backward()
    opt.step()
    out[rank] = float(wrapped.module.log_scale)
    dist.destroy_process_group()


def test_the_learned_temperature_is_one_value_across_workers():
    """The temperature is used in the loss, outside the tower's forward, yet DDP all-reduces its gradient like the
    tower's: after a step on different images the workers hold the same moved value."""
    import torch.multiprocessing as mp

    from conftest import free_port

    out = mp.Manager().dict()
    # spawn, not fork: a child forked after this process's intra-op threads ran can deadlock in its first torch op
    mp.start_processes(_scaled_tower_step, args=(2, free_port(), out), nprocs=2, join=True, start_method="spawn")
    assert out[0] == pytest.approx(out[1], abs=1e-7) and abs(out[0] - 2.0) > 1e-4


def test_wise_ft_mixes_the_trained_tower_with_its_start_and_a_rerun_remixes_without_training(mined, tmp_path):
    """wise_ft=alpha saves alpha x trained + (1 - alpha) x starting weights; the value decides only the folder,
    so a rerun with another one takes the last checkpoint and rewrites the folder, training nothing."""
    from safetensors.torch import load_file

    from mining.train.clip_trainer import train_clip

    out = tmp_path / "model"
    first = train_clip(tiny_cfg(steps=2), [mined], out)
    trained = load_file(str(out / "open_clip_model.safetensors"))
    start = load_clip(RegionsConfig(**TINY), CPU).model.state_dict()
    mixed = train_clip(tiny_cfg(steps=2, wise_ft=0.25), [mined], out)
    assert (first["wise_ft"], mixed["wise_ft"]) == (1.0, 0.25)
    assert mixed["resumed_from_step"] == 2 and mixed["steps"] == 2   # nothing trained again
    saved = load_file(str(out / "open_clip_model.safetensors"))
    moved = [k for k, v in trained.items() if k.startswith("visual.") and v.is_floating_point()
             and not torch.equal(v, start[k])]
    assert moved
    for k in moved:
        assert torch.allclose(saved[k], 0.25 * trained[k] + 0.75 * start[k], atol=1e-6), k
    assert all(torch.equal(saved[k], v) for k, v in trained.items() if not k.startswith("visual."))
    assert json.loads((out / "open_clip_config.json").read_text())["training"]["wise_ft"] == 0.25
    with pytest.raises(ConfigError, match="wise_ft"):
        tiny_cfg(wise_ft=0)
