"""Vocabulary embeddings: encoded in bounded batches (the same vectors as all at once), and kept on disk per text
tower and template set, so a second run encodes nothing; a damaged cache file is encoded again, never trusted."""
import numpy as np
import pytest
import torch

from mining.config import RegionsConfig
from mining.regions.clip_loader import load_clip
from mining.regions.text import VILD_TEMPLATES, TextEmbedder, embedder_for, encode_text_trimmed
from mining.regions.text_cache import TextCache, text_tower_identity

CPU = torch.device("cpu")
NOUNS = [f"thing{i}" for i in range(23)] + ["circle", "sky"]


@pytest.fixture(scope="module")
def clip():
    return load_clip(RegionsConfig(model="ovmine-tiny-vit", pretrained=None), CPU)


def test_batches_are_bounded_and_give_the_vectors_of_one_pass(clip):
    sizes = []
    small = TextEmbedder(clip.model, clip.tokenizer, CPU, VILD_TEMPLATES, sequences_per_batch=5 * len(VILD_TEMPLATES))
    encode = small._encode
    small._encode = lambda nouns: sizes.append(len(nouns)) or encode(nouns)
    batched = small(NOUNS)
    whole = TextEmbedder(clip.model, clip.tokenizer, CPU, VILD_TEMPLATES, sequences_per_batch=10**6)(NOUNS)
    assert max(sizes) == 5 and sum(sizes) == len(NOUNS)
    np.testing.assert_allclose(batched, whole, atol=1e-6)


def test_the_padding_after_the_longest_prompt_is_not_computed_and_changes_nothing(clip):
    seen = []
    hook = clip.model.transformer.register_forward_pre_hook(lambda _m, args, kw=None: seen.append(args[0].shape[1]))
    tokens = clip.tokenizer(["a photo of a dog.", "There is a large traffic light in the scene."])
    try:
        trimmed = encode_text_trimmed(clip.model, tokens)
        full = clip.model.encode_text(tokens)
    finally:
        hook.remove()
    last_word = int((tokens[1] != 0).nonzero().max()) + 1
    assert seen == [last_word, tokens.shape[1]] and last_word < 20
    torch.testing.assert_close(trimmed, full, atol=1e-5, rtol=1e-5)


def test_a_tower_without_a_causal_mask_runs_whole(clip):
    import copy

    bidirectional = copy.deepcopy(clip.model)
    bidirectional.attn_mask = None   # every position sees the padding: trimming would change the result
    tokens = clip.tokenizer(["a photo of a dog."])
    torch.testing.assert_close(encode_text_trimmed(bidirectional, tokens), bidirectional.encode_text(tokens))


def test_a_second_embedder_reads_the_cache_and_encodes_nothing(clip, tmp_path, monkeypatch):
    monkeypatch.setattr("mining.regions.clip_loader.CACHE_DIR", tmp_path)
    first = embedder_for(clip, CPU, "vild")(NOUNS)
    again = embedder_for(clip, CPU, "vild")
    again._encode = lambda nouns: pytest.fail(f"encoded {nouns} again")
    np.testing.assert_array_equal(again(NOUNS), first)
    # another template set is another cache; a damaged part is encoded again
    assert embedder_for(clip, CPU, "single").cache == {}
    part = next((tmp_path / "text").rglob("*.safetensors"))
    part.write_bytes(b"torn")
    fresh = embedder_for(clip, CPU, "vild")
    assert len(fresh.cache) < len(NOUNS)
    np.testing.assert_allclose(fresh(NOUNS), first, atol=1e-6)


def test_the_identity_follows_the_weights(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "open_clip_model.safetensors").write_bytes(b"a")
    (folder / "open_clip_config.json").write_text("{}")
    before = text_tower_identity(f"local-dir:{folder}", None, None)
    (folder / "open_clip_model.safetensors").write_bytes(b"bb")   # retrained in place
    assert text_tower_identity(f"local-dir:{folder}", None, None) != before
    assert text_tower_identity("ViT-B-16", "openai", {"a": 1}) != text_tower_identity("ViT-B-16", "laion", {"a": 1})
    assert text_tower_identity("ViT-B-16", None, {"a": 1}) != text_tower_identity("ViT-B-16", None, {"a": 2})
    assert TextCache(tmp_path, "x", ("a {}",)).folder != TextCache(tmp_path, "x", ("b {}",)).folder


def test_mining_reads_the_cache_a_training_wrote_and_adds_nothing(clip, tmp_path, monkeypatch):
    monkeypatch.setattr("mining.regions.clip_loader.CACHE_DIR", tmp_path)
    embedder_for(clip, CPU, "vild")(NOUNS[:5])                       # a training's vocabulary
    parts = sorted((tmp_path / "text").rglob("*"))
    mining = embedder_for(clip, CPU, "vild", persist=False)
    assert set(NOUNS[:5]) <= set(mining.cache)
    mining(NOUNS)                                                     # nouns met while mining
    assert sorted((tmp_path / "text").rglob("*")) == parts
