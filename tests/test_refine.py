"""Caption refinement (captions.refine): a vision-language model adds a caption per image before entities.

The model is a tiny LLaVA built here from configs (a CLIP vision tower, a one-layer Llama, a word-level tokenizer
and a LlavaProcessor with a chat template), loaded back through AutoProcessor / AutoModelForImageTextToText. Random
weights would answer noise, so its language model is steered: no layer writes to the residual stream, each token
embeds as a one-hot vector and the head maps it to the next word of a fixed answer, so that greedy decoding spells
that answer through the real template / generate / decode path, whatever the image."""
from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from mining.config import ConfigError, build_config
from mining.records import ORIGINAL, REFINED, Sample

PROMPT = "Describe every object and surface you can see in this image."
ANSWER = "a kite over the grass"
TEMPLATE = ("{% for m in messages %}{{ m['role'] }} : {% for c in m['content'] %}{% if c['type'] == 'image' %}"
            "<image>{% else %}{{ c['text'] }}{% endif %}{% endfor %}\n{% endfor %}"
            "{% if add_generation_prompt %}assistant :{% endif %}")


def steered_vlm(folder, answer: str) -> str:
    """A tiny LLaVA whose greedy answer to any image is `answer` ('' : it ends at once), saved to `folder`."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaProcessor, PreTrainedTokenizerFast)

    words = sorted(set(PROMPT.replace(".", " .").split() + answer.split() + ["user", "assistant", ":"]))
    vocab = {w: i for i, w in enumerate(["<unk>", "<pad>", "<eos>", "<image>", *words])}
    word_level = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    word_level.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=word_level, unk_token="<unk>", pad_token="<pad>",
                                        eos_token="<eos>", extra_special_tokens={"image_token": "<image>"})
    hidden = 64   # >= the vocabulary: one-hot token embeddings
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                              image_size=32, patch_size=8)
    text = LlamaConfig(vocab_size=len(vocab), hidden_size=hidden, intermediate_size=64, num_hidden_layers=1,
                       num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128,
                       pad_token_id=vocab["<pad>"], eos_token_id=vocab["<eos>"], bos_token_id=None)
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(LlavaConfig(vision_config=vision, text_config=text,
                                                      image_token_id=vocab["<image>"], vision_feature_layer=-1,
                                                      vision_feature_select_strategy="default"))
    language = model.model.language_model
    chain = [":", *answer.split(), "<eos>"]   # the prompt ends "assistant :"
    with torch.no_grad():
        for layer in language.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        language.embed_tokens.weight.copy_(torch.eye(len(vocab), hidden))
        model.lm_head.weight.zero_()
        for current, following in zip(chain, chain[1:]):
            model.lm_head.weight[vocab[following], vocab[current]] = 10.0
    model.save_pretrained(folder)
    images = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    LlavaProcessor(image_processor=images, tokenizer=tokenizer, patch_size=8, vision_feature_select_strategy="default",
                   num_additional_image_tokens=1, chat_template=TEMPLATE).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def vlms(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("vlm")
    return {"steered": steered_vlm(root / "steered", ANSWER), "mute": steered_vlm(root / "mute", "")}


def refine_config(model: str, **execution):
    return build_config({"captions": {"refine": {"model": model, "prompt": PROMPT, "max_new_tokens": 16}},
                         "execution": {"executor": "local",
                                       "refine": {"num_gpus": 0, "batch_size": 2, **execution}}})


def sample(index: int, captions: list[str]) -> Sample:
    from conftest import scene

    return Sample(shard="s.tar", shard_stem="s", key=f"{index:04d}", index=index, captions=list(captions),
                  image=scene(index, 48), frame_size=(48, 48))


def test_the_stage_adds_one_refined_caption_per_live_sample(vlms):
    from mining.records import Drop
    from mining.stages.refine import RefineStage

    samples = [sample(i, [f"Photo {i}."]) for i in range(4)]
    samples[2].drop_with(Drop.DECODE_ERROR)
    stage = RefineStage.from_config(refine_config(vlms["steered"]))
    stage.run(samples)   # three live samples in batches of two
    assert stage.refiner.device.type == "cpu" and stage.refiner.processor.tokenizer.padding_side == "left"
    for i in (0, 1, 3):
        assert samples[i].captions == [f"Photo {i}.", ANSWER]
        assert samples[i].caption_sources == [ORIGINAL, REFINED]
        assert samples[i].timings["refine"] > 0 and samples[i].alive
    assert samples[2].captions == ["Photo 2."] and samples[2].caption_sources == []   # dropped: left alone
    # an empty answer adds nothing: the image keeps its own captions, all original
    mute = [sample(i, ["A photo."]) for i in range(2)]
    RefineStage.from_config(refine_config(vlms["mute"])).run(mute)
    assert [(s.captions, s.caption_sources) for s in mute] == [(["A photo."], [])] * 2


def test_the_flow_has_refine_only_when_captions_refine_is_set(monkeypatch):
    from mining.stages import FLOW, build_stages, stage_names
    from mining.stages.refine import RefineStage

    order = list(FLOW)
    assert order.index("decode") + 1 == order.index("refine") == order.index("entities") - 1
    plain = build_config({"execution": {"executor": "local"}})
    assert stage_names(plain) == [n for n in FLOW if n != "refine"]
    assert stage_names(refine_config("m")) == list(FLOW)

    def refuse(cls, cfg):
        raise AssertionError("the refine stage was built")
    monkeypatch.setattr(RefineStage, "from_config", classmethod(refuse))
    assert [s.name for s in build_stages(plain)] == stage_names(plain)
    monkeypatch.undo()
    with pytest.raises(ValueError, match="captions.refine is not set"):
        RefineStage.from_config(plain)
    built = build_stages(refine_config("m", batch_size=3))
    assert [s.name for s in built] == list(FLOW) and built[1].resources.batch_size == 3   # execution.refine
    assert not built[1]._ready   # from_config loads nothing: setup() runs on the worker


def test_captions_refine_leaves_the_hash_alone_when_unset_and_fails_naming_the_field():
    base = build_config({})
    assert build_config({"captions": {"refine": None}}).config_hash() == base.config_hash()
    assert build_config({"captions": {}}).config_hash() == base.config_hash()
    refined = build_config({"captions": {"refine": {"model": "m"}}})
    assert refined.captions.refine.prompt == PROMPT and refined.captions.refine.keep == "beside"
    other_prompt = build_config({"captions": {"refine": {"model": "m", "prompt": "Name every thing."}}})
    assert len({base.config_hash(), refined.config_hash(), other_prompt.config_hash()}) == 3
    # where and how it runs is execution: not in the hash
    assert build_config({"captions": {"refine": {"model": "m"}},
                         "execution": {"refine": {"batch_size": 9, "num_gpus": 0}}}).config_hash() \
        == refined.config_hash()
    for tree, named in [({"refine": {}}, r"captions\.refine\.model: Field required"),
                        ({"refine": {"model": "m", "max_new_tokens": 4}}, r"captions\.refine\.max_new_tokens"),
                        ({"refine": {"model": "m", "keep": "replace"}}, r"captions\.refine\.keep"),
                        ({"refine": {"model": "m", "prompt": "  "}}, r"captions\.refine: .*prompt"),
                        ({"refine": {"model": "m", "promt": "x"}}, r"did you mean captions\.refine\.prompt\?")]:
        with pytest.raises(ConfigError, match=named):
            build_config({"captions": tree})
    with pytest.raises(ConfigError, match=r"--set captions\.refine\.max_new_tokens=2"):
        build_config({"captions": {"refine": {"model": "m"}}}, ["captions.refine.max_new_tokens=2"])
    with pytest.raises(ConfigError, match=r"execution\.refine\.compile"):
        build_config({}, ["execution.refine.compile=true"])


def _mine(tmp_path, cfg, name: str):
    from mining.pipeline import run_mining
    from mining.sinks.reader import read_shard_documents

    manifest = run_mining(cfg, [str(tmp_path / "in")], str(tmp_path / name))
    records = [doc for doc, _ in read_shard_documents(tmp_path / name / "shards" / "00000.tar")]
    return manifest, records


def _shard_inputs(tmp_path) -> None:
    from conftest import jpeg_bytes, scene, write_tar

    captions = [["A red square."], ["Wow!"], ["A red square on green."]]   # "Wow!" names nothing visual
    members = [(f"{i:04d}.{ext}", data) for i, texts in enumerate(captions)
               for ext, data in (("jpg", jpeg_bytes(scene(i))), ("json", json.dumps({"captions": texts}).encode()))]
    write_tar(tmp_path / "in" / "00000.tar", members)


def _refined_pairs_of(records: list[dict], noun: str | None = None) -> int:
    """Pairs whose entity's caption is a refined one, counted from the records themselves."""
    return sum(record["caption_sources"][record["entities"][pair["entity_index"]]["caption_index"]] == REFINED
               for record in records for pair in record["pairs"] if noun in (None, pair["noun"]))


def test_refined_pairs_carry_their_provenance_into_records_pairs_counts_and_stats(vlms, tmp_path, tiny_cfg,
                                                                                 monkeypatch):
    from mining.postrun.curate import CurationFilters, curate
    from mining.postrun.stats import compute_stats, format_stats
    from mining.postrun.validate import check_output
    from mining.sinks.reader import read_pairs

    monkeypatch.setattr("mining.regions.clip_loader.CACHE_DIR", tmp_path / "cache")
    _shard_inputs(tmp_path)
    execution = {"executor": "local", "chunk_size": 2, "refine": {"num_gpus": 0, "batch_size": 2}}
    cfg = tiny_cfg(captions={"refine": {"model": vlms["steered"], "max_new_tokens": 16}}, execution=execution)
    manifest, records = _mine(tmp_path, cfg, "refined")
    assert [r["key"] for r in records] == ["0000", "0001", "0002"]   # "Wow!" has pairs: the refined caption's
    for record in records:
        assert record["captions"][-1] == ANSWER
        assert record["caption_sources"] == [ORIGINAL] * (len(record["captions"]) - 1) + [REFINED]
    refined = _refined_pairs_of(records)
    assert refined > 0 and refined == _refined_pairs_of(records, "kite") + _refined_pairs_of(records, "grass")
    # the pairs table names each pair's caption: with the record's caption_sources, its provenance
    sources = {r["key"]: r["caption_sources"] for r in records}
    rows = read_pairs(str(tmp_path / "refined")).to_pylist()
    assert sum(sources[row["key"]][row["caption_index"]] == REFINED for row in rows) == refined
    # counted per shard (two chunks merged), in its stats file, the manifest and `ovmine stats`
    assert manifest["totals"]["refined_pairs"] == refined == manifest["shards"][0]["refined_pairs"]
    assert json.loads((tmp_path / "refined" / "stats" / "00000.json").read_text())["refined_pairs"] == refined
    assert manifest["models"]["refine"].startswith(f"{vlms['steered']}, prompt {PROMPT!r}")
    assert manifest["timings"]["refine"] > 0
    stats = compute_stats(tmp_path / "refined")
    assert stats["refined_pairs"] == refined
    assert f"  from refined captions {refined} pairs (" in format_stats(stats)
    from mining.postrun.report import render_report

    assert f"<th>from refined captions</th><td>{refined}</td>" in render_report(tmp_path / "refined", stats)
    assert check_output(str(tmp_path / "refined"))["shards"] == 1
    # a curated copy recounts them from its records' provenance
    curated = curate(str(tmp_path / "refined"), str(tmp_path / "curated"), CurationFilters(nouns_deny=["kite"]))
    grass = _refined_pairs_of(records, "grass")
    assert grass > 0 and curated["totals"]["refined_pairs"] == grass
    assert compute_stats(tmp_path / "curated")["refined_pairs"] == grass
    # and drops them on request: what stays is the pairs of the images' own captions, each counted once
    own = curate(str(tmp_path / "refined"), str(tmp_path / "own"), CurationFilters(drop_refined=True, min_noun_count=1))
    assert own["totals"]["pairs"] == len(rows) - refined and "refined_pairs" not in own["totals"]
    status = pq.read_table(tmp_path / "own" / "status" / "00000.parquet").to_pylist()
    wow = next(r["key"] for r in records if r["captions"][0] == "Wow!")   # its pairs all came from the refined caption
    assert [(r["status"], r["detail"].split(" (")[0]) for r in status if r["key"] == wow] == \
        [("curated_out", "pairs filtered by drop_refined")]
    kept = {(row["key"], row["mask_index"]) for row in read_pairs(str(tmp_path / "own")).to_pylist()}
    assert kept == {(row["key"], row["mask_index"]) for row in rows if sources[row["key"]][row["caption_index"]]
                    == ORIGINAL}
    assert CurationFilters().digest() == CurationFilters(drop_refined=False).digest() != own["config_hash"]


def test_without_captions_refine_nothing_runs_and_nothing_of_it_is_written(tmp_path, tiny_cfg, monkeypatch):
    from mining.postrun.stats import compute_stats, format_stats
    from mining.stages.refine import RefineStage

    monkeypatch.setattr("mining.regions.clip_loader.CACHE_DIR", tmp_path / "cache")
    monkeypatch.setattr(RefineStage, "from_config", classmethod(lambda cls, cfg: pytest.fail("refine was built")))
    _shard_inputs(tmp_path)
    manifest, records = _mine(tmp_path, tiny_cfg(execution={"executor": "local", "chunk_size": 2}), "plain")
    assert [r["key"] for r in records] == ["0000", "0002"] and manifest["totals"]["drops"] == {"no_entities": 1}
    assert not any("caption_sources" in r for r in records)
    assert "refined_pairs" not in manifest["totals"] and "refined_pairs" not in manifest["shards"][0]
    assert "refine" not in manifest["models"] and "refine" not in manifest["timings"]
    assert "refined_pairs" not in json.loads((tmp_path / "plain" / "stats" / "00000.json").read_text())
    stats = compute_stats(tmp_path / "plain")
    assert stats["refined_pairs"] == 0 and "refined captions" not in format_stats(stats)


def test_the_refiner_pads_batches_left_and_skips_a_prompt_with_no_room(vlms):
    """Rows of unequal prompts: padded on the left, each answer continues from its own prompt's last token (padded
    on the right, the shorter row would continue from a pad and answer nothing)."""
    from mining.captions.refiner import CaptionRefiner

    refiner = CaptionRefiner(refine_config(vlms["steered"]).captions.refine, "cpu")
    short, full = refiner.conversation(np.zeros((20, 30, 3), np.uint8)), refiner.conversation(scene_image())
    short[0]["content"][1]["text"] = "Describe ."
    turns = iter([short, full])
    refiner.conversation = lambda image: next(turns)
    assert refiner.refine([None, None]) == [ANSWER, ANSWER]
    del refiner.conversation
    refiner.context = 30   # the prompt (16 image tokens and the words) leaves fewer than 8 new tokens
    assert refiner.refine([np.zeros((20, 30, 3), np.uint8)]) == [""]


def scene_image() -> np.ndarray:
    from conftest import scene

    return scene(1, 40)
