"""Shared fixtures: tiny shards built in tmp_path, tiny random-initialised models saved to disk and loaded
back through the real loading code, and a config that runs in seconds. Nothing here downloads."""
from __future__ import annotations

import io
import os
import socket
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mining.config import build_config

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

TINY = {
    "source": {"captions_per_image": 2, "working_size": 96},
    "teacher": {"kind": "felzenszwalb", "min_area": 16, "max_masks": 12,
                "felzenszwalb": {"input_size": 96, "scales": [100, 400]}},
    # one scale, so that tests may switch regions.mode alone (crop_context/scales belong to one mode each)
    "regions": {"mode": "masked_crop", "model": "ovmine-tiny-vit", "pretrained": None},
    "match": {"min_similarity": None, "min_margin": None, "min_probability": None},
    "execution": {"executor": "local"},
}


def tiny_config(**sections):
    tree = {k: dict(v) for k, v in TINY.items()}
    for name, values in sections.items():
        tree.setdefault(name, {}).update(values)
    return build_config(tree)


@pytest.fixture
def tiny_cfg():
    return tiny_config


def jpeg_bytes(image: np.ndarray | Image.Image, **save_kwargs) -> bytes:
    im = Image.fromarray(image) if isinstance(image, np.ndarray) else image
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=95, **save_kwargs)
    return buf.getvalue()


def scene(seed: int = 0, size: int = 96) -> np.ndarray:
    """A green ground with a red square: two obvious regions."""
    rng = np.random.default_rng(seed)
    img = np.zeros((size, size, 3), np.uint8)
    img[:] = (50, 150, 60)
    img += rng.integers(0, 8, img.shape, dtype=np.uint8)
    img[size // 4: size // 2, size // 4: size // 2] = (220, 30, 30)
    return img


def write_tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    """A tar with exactly these members, in this order (webdataset's writer would refuse some bad ones)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture(scope="session")
def tiny_mask2former(tmp_path_factory) -> str:
    from transformers import (Mask2FormerConfig, Mask2FormerForUniversalSegmentation, Mask2FormerImageProcessor,
                              SwinConfig)
    import torch

    torch.manual_seed(0)
    backbone = SwinConfig(image_size=64, patch_size=4, embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2],
                          window_size=4, out_features=["stage1", "stage2", "stage3", "stage4"])
    cfg = Mask2FormerConfig(backbone_config=backbone, hidden_dim=32, mask_feature_size=32, feature_size=32,
                            num_queries=10, encoder_layers=1, decoder_layers=2, num_attention_heads=2,
                            dim_feedforward=64, encoder_feedforward_dim=64, num_labels=3,
                            use_timm_backbone=False, use_pretrained_backbone=False)
    out = tmp_path_factory.mktemp("m2f")
    Mask2FormerForUniversalSegmentation(cfg).save_pretrained(out)
    Mask2FormerImageProcessor(size={"shortest_edge": 64, "longest_edge": 96}, num_labels=3).save_pretrained(out)
    return str(out)


@pytest.fixture(scope="session")
def tiny_sam(tmp_path_factory) -> str:
    from transformers import (SamConfig, SamImageProcessor, SamMaskDecoderConfig, SamModel, SamProcessor,
                              SamPromptEncoderConfig, SamVisionConfig)
    import torch

    torch.manual_seed(0)
    vision = SamVisionConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=64,
                             patch_size=16, output_channels=32, mlp_dim=64, global_attn_indexes=[1],
                             window_size=2, num_pos_feats=16)
    prompt = SamPromptEncoderConfig(hidden_size=32, image_size=64, patch_size=16, mask_input_channels=4,
                                    image_embedding_size=4)
    decoder = SamMaskDecoderConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, mlp_dim=64,
                                   iou_head_hidden_dim=32)
    out = tmp_path_factory.mktemp("sam")
    SamModel(SamConfig(vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder)).save_pretrained(out)
    image_processor = SamImageProcessor(size={"longest_edge": 64}, pad_size={"height": 64, "width": 64},
                                        mask_size={"longest_edge": 16}, mask_pad_size={"height": 16, "width": 16})
    SamProcessor(image_processor=image_processor).save_pretrained(out)
    return str(out)


@pytest.fixture(scope="session")
def ray_cluster():
    """One Ray head on loopback for the whole session (2 CPUs, no GPU), started when a test first asks for it.
    Tests join it with `cluster.driver_env` (RAY_ADDRESS) or `execution.ray_address`; one that loses a node adds
    its own worker nodes and removes them again, so the next test finds the head as it was."""
    from ray_cluster import LocalCluster

    cluster = LocalCluster()
    try:
        cluster.start_head(num_cpus=2)
        yield cluster
    finally:
        cluster.stop()


# What the fault tests mine (interrupted, with a node lost): enough shards that a run can be cut between
# commits, few images per shard so that each costs seconds
FAULT_SHARDS, FAULT_PER_SHARD = 8, 4


@pytest.fixture(scope="session")
def fault_reference(tmp_path_factory) -> Path:
    """`in/`: FAULT_SHARDS shards; `reference/`: their output mined in-process with configs/tiny.yaml, which a Ray
    run of the same config must reproduce however it was interrupted."""
    from mining.config import load_config
    from mining.pipeline import run_mining
    from mining.toyworld.make import make_shards

    root = tmp_path_factory.mktemp("fault")
    make_shards(root / "in", shards=FAULT_SHARDS, per_shard=FAULT_PER_SHARD, size=96)
    run_mining(load_config("configs/tiny.yaml", ["execution.executor=local"]), [str(root / "in")],
               str(root / "reference"))
    return root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint():
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
    yield endpoint
    server.stop()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def world_mined(tmp_path_factory):
    """A small toy world mined with the shipped CLIP and the Felzenszwalb teacher (local executor: no Ray),
    with a similarity floor that leaves about half the images without pairs, so the mined output's shards
    lack them. The floor is learnt from a first run without filters (filters act after the assignment, so
    the second run's pairs are the first's above the floor), which keeps the test independent of the models'
    exact similarities."""
    from mining.pipeline import run_mining
    from mining.sinks.reader import iter_records
    from mining.toyworld.demo import demo_config
    from mining.toyworld.make import make_world

    root = tmp_path_factory.mktemp("world_eval")
    world = make_world(str(root / "world"), shards=2, per_shard=5, seed=5, progress=False)
    overrides = ["execution.executor=local", "teacher.kind=felzenszwalb", "match.min_margin=null",
                 "match.min_probability=null"]
    run_mining(demo_config([*overrides, "match.min_similarity=null"]), [world["shards_uri"]], str(root / "all"),
               progress=False)
    best = sorted(max(p.similarity for p in r.pairs) for r in iter_records(str(root / "all")))
    floor = (best[len(best) // 2 - 1] + best[len(best) // 2]) / 2
    run_mining(demo_config([*overrides, f"match.min_similarity={floor}"]), [world["shards_uri"]],
               str(root / "mined"), progress=False)
    return root, world["ground_truth"]
