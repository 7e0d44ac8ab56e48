"""The LLM entity parser: answers are checked against the schema and the caption, a bad answer is a counted
fallback to spaCy, answers are cached, the HTTP backend talks to a loopback OpenAI-compatible server the test
runs (a scripted one: it answers from a word list), and the transformers backend runs a real generate loop on a
tiny random causal LM (whose answers are noise: every caption falls back)."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mining.config import ConfigError, build_config
from mining.entities.llm_parser import LLMEntityParser, ReplyError, reply_entities

THINGS = ("dog", "frisbee", "park", "cat", "sofa")


def scripted_answer(caption: str) -> str:
    """What the scripted server answers: the listed things the caption names; prose, or a made-up thing, on cue."""
    if "garble" in caption:
        return "Sure! The entities are a dog and a park."
    words = caption.lower().replace(".", "").split()
    found = [{"noun": t, "phrase": w, "count": 1, "attributes": []} for w in words for t in THINGS
             if w in (t, t + "s")]
    if "invent" in caption:
        found.append({"noun": "unicorn", "phrase": "unicorn", "count": 1, "attributes": []})
    return "```json\n" + json.dumps({"entities": found}) + "\n```"


@pytest.fixture
def server():
    state = {"requests": 0, "fail": 0, "status": 503, "bodies": []}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            state["requests"] += 1
            state["bodies"].append(body)
            if state["fail"]:
                state["fail"] -= 1
                self.send_response(state["status"])
                if state["status"] == 429:
                    self.send_header("Retry-After", "0")
                self.end_headers()
                return
            caption = body["messages"][-1]["content"]
            reply = {"choices": [{"message": {"role": "assistant", "content": scripted_answer(caption)}}]}
            data = json.dumps(reply).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    state["endpoint"] = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    yield state
    httpd.shutdown()


def llm_config(endpoint: str, **llm):
    return build_config({"entities": {"kind": "llm", "llm": {"backend": "http", "model": "scripted",
                                                             "endpoint": endpoint, "max_retries": 2, **llm}}}).entities


def test_an_answer_is_taken_only_when_it_is_the_schema_and_the_captions_words():
    caption = "Two brown dogs chase a frisbee."
    good = json.dumps({"entities": [{"noun": "dog", "phrase": "brown dogs", "count": 2, "attributes": ["brown"]},
                                    {"noun": "frisbee", "phrase": "a frisbee", "count": 1, "attributes": []}]})
    dog, frisbee = reply_entities(caption, f"Here you go:\n```json\n{good}\n```", 3)
    assert (dog.noun, dog.phrase, dog.count, dog.adjectives) == ("dog", "brown dogs", 2, ["brown"])
    assert dog.caption_index == 3
    assert caption[dog.span[0]:dog.span[1]].lower() == "brown dogs" and frisbee.phrase == "a frisbee"
    for reply, reason in [("no json here", "unparsable"), ('{"nouns": []}', "bad_schema"),
                          ('{"entities": [{"noun": "dog"}]}', "bad_schema"),
                          ('{"entities": [{"noun": "cat", "phrase": "cat"}]}', "not_in_caption"),
                          ('{"entities": [{"noun": "cat", "phrase": "brown dogs"}]}', "not_in_caption")]:
        with pytest.raises(ReplyError) as err:
            reply_entities(caption, reply, 0)
        assert err.value.reason == reason, reply


def test_the_http_backend_parses_counts_fallbacks_and_caches(server, tmp_path):
    captions = [["A dog catches a frisbee in the park.", "A dog in a garble park."],
                ["A cat invents a story on the sofa.", "Cats on a sofa."]]
    parser = LLMEntityParser(llm_config(server["endpoint"]), cache_dir=tmp_path)
    first, second = parser.parse_batch(captions)
    assert [e.noun for e in first] == ["dog", "frisbee", "park"]
    assert next(e for e in first if e.noun == "park").mentions == [0, 1]     # the spaCy fallback merges in
    assert [e.noun for e in second] == ["cat", "story", "sofa"]              # "invents a unicorn": spaCy's instead
    assert parser.fallbacks == {"unparsable": 1, "not_in_caption": 1}
    assert server["requests"] == 4
    again = LLMEntityParser(llm_config(server["endpoint"]), cache_dir=tmp_path)
    assert [[e.noun for e in image] for image in again.parse_batch(captions)] == [["dog", "frisbee", "park"],
                                                                                   ["cat", "story", "sofa"]]
    assert server["requests"] == 4, "every answer came from the cache"


def test_a_failing_server_is_retried_then_the_caption_falls_back(server, tmp_path):
    server["fail"] = 2   # two 503s, then answers: the retries get through
    parser = LLMEntityParser(llm_config(server["endpoint"], batch_size=1), cache_dir=tmp_path)
    assert [e.noun for e in parser.parse_batch([["A dog on a sofa."]])[0]] == ["dog", "sofa"]
    assert server["requests"] == 3 and not parser.fallbacks
    server["fail"] = 10
    none = LLMEntityParser(llm_config(server["endpoint"], batch_size=1, fallback="none", max_retries=1),
                           cache_dir=tmp_path)
    assert none.parse_batch([["A cat near the park."]]) == [[]]
    assert none.fallbacks == {"backend_error": 1}


def test_the_entity_stage_runs_the_llm_parser(server, tmp_path, monkeypatch):
    from mining.entities.spacy_parser import SpacyEntityParser
    from mining.records import Sample
    from mining.stages.entities import EntityStage

    monkeypatch.setattr("mining.regions.clip_loader.CACHE_DIR", tmp_path)
    cfg = build_config({"entities": {"kind": "llm", "llm": {"backend": "http", "model": "scripted",
                                                            "endpoint": server["endpoint"]}}})
    samples = [Sample(shard="s.tar", shard_stem="s", key=k, index=i, members={}) for i, k in enumerate("ab")]
    samples[0].captions, samples[1].captions = ["Two dogs in a park."], ["A cat by a garble box."]
    stage = EntityStage.from_config(cfg)
    stage.run(samples)
    assert [e.noun for e in samples[0].entities] == ["dog", "park"] and samples[0].entities[0].count == 1
    spacy = SpacyEntityParser(cfg.entities).parse(samples[1].captions)   # the unusable answer's fallback
    assert [e.noun for e in samples[1].entities] == [e.noun for e in spacy]
    assert stage.parser.fallbacks == {"unparsable": 1}


def test_the_llm_settings_fail_fast_and_leave_spacy_configs_hash_alone():
    with pytest.raises(ConfigError, match=r"entities.*llm"):
        build_config({"entities": {"kind": "llm"}})
    with pytest.raises(ConfigError, match=r"endpoint"):
        build_config({"entities": {"kind": "llm", "llm": {"backend": "http", "model": "m"}}})
    with pytest.raises(ConfigError, match=r"model"):
        build_config({"entities": {"kind": "llm", "llm": {"backend": "transformers"}}})
    spacy = build_config({})
    llm = build_config({"entities": {"kind": "llm", "llm": {"model": "m"}}})
    other = build_config({"entities": {"kind": "llm", "llm": {"model": "n"}}})
    assert len({spacy.config_hash(), llm.config_hash(), other.config_hash()}) == 3
    # how answers are fetched is not what they are: batch size, retries, cache stay out of the hash
    fetched = build_config({"entities": {"kind": "llm", "llm": {"model": "m", "batch_size": 3, "max_retries": 9,
                                                                "cache": False}}})
    assert fetched.config_hash() == llm.config_hash()


def test_each_backend_takes_only_its_own_settings_and_vllm_needs_a_gpu():
    with pytest.raises(ConfigError, match=r"endpoint: only the http backend"):
        build_config({"entities": {"kind": "llm", "llm": {"model": "m", "endpoint": "http://127.0.0.1:1/v1"}}})
    with pytest.raises(ConfigError, match=r"engine_kwargs: only the vllm backend"):
        build_config({"entities": {"kind": "llm", "llm": {"model": "m", "engine_kwargs": {"max_model_len": 512}}}})
    with pytest.raises(ConfigError, match=r"requests_per_second"):
        build_config({"entities": {"kind": "llm", "llm": {"model": "m", "backend": "http",
                                                          "endpoint": "http://127.0.0.1:1/v1",
                                                          "requests_per_second": 0}}})
    vllm = {"entities": {"kind": "llm", "llm": {"backend": "vllm", "model": "Qwen/Qwen2.5-7B-Instruct",
                                                "engine_kwargs": {"max_model_len": 2048}}}}
    with pytest.raises(ConfigError, match=r"execution.entities.num_gpus"):
        build_config(vllm)
    cfg = build_config(vllm | {"execution": {"entities": {"num_gpus": 1}}})
    assert cfg.entities.llm.engine_kwargs == {"max_model_len": 2048}


def test_the_http_backend_asks_for_the_schema_keeps_the_rate_and_honours_retry_after(server, tmp_path):
    import time

    from mining.entities.llm_parser import ENTITIES_SCHEMA

    parser = LLMEntityParser(llm_config(server["endpoint"], requests_per_second=20, batch_size=4), cache_dir=tmp_path)
    captions = [f"A dog number {i}." for i in range(6)]
    started = time.monotonic()
    parser.parse_batch([captions])
    assert time.monotonic() - started >= 5 / 20   # six starts, 1/20 s apart, however many threads ask
    assert server["bodies"][0]["response_format"]["json_schema"]["schema"] == ENTITIES_SCHEMA
    free = LLMEntityParser(llm_config(server["endpoint"], constrained=False, cache=False), cache_dir=tmp_path)
    server["fail"], server["status"] = 1, 429   # rate-limited once, told to come back at once
    assert [e.noun for e in free.parse_batch([["A cat on a sofa."]])[0]] == ["cat", "sofa"]
    assert "response_format" not in server["bodies"][-1] and not free.fallbacks


def test_the_vllm_backend_says_what_is_missing_or_drives_the_engine(monkeypatch, tmp_path):
    """Without vLLM (as here: it pins another torch) the stage fails with what to install. With it, the adapter
    gives the engine every caption's messages at once and the schema as structured output; the engine is a
    stand-in with vLLM 0.34's call signatures (LLM(model, **engine_kwargs), LLM.chat(messages, params, use_tqdm),
    SamplingParams(structured_outputs=StructuredOutputsParams(json=...)))."""
    import importlib.util
    import sys
    import types

    from mining.entities.llm_parser import ENTITIES_SCHEMA, VllmBackend

    cfg = build_config({"entities": {"kind": "llm", "llm": {"backend": "vllm", "model": "m", "engine_kwargs":
                                                            {"max_model_len": 512}}},
                        "execution": {"entities": {"num_gpus": 1}}}).entities
    if importlib.util.find_spec("vllm") is None:
        monkeypatch.setitem(sys.modules, "vllm", None)   # import fails, as where it is not installed
        with pytest.raises(RuntimeError, match="needs vLLM on the entity workers"):
            VllmBackend(cfg.llm)
    seen = {}

    class Engine:
        def __init__(self, model, **kwargs):
            seen["engine"] = (model, kwargs)

        def chat(self, conversations, params, use_tqdm):
            seen["params"] = params
            return [types.SimpleNamespace(outputs=[types.SimpleNamespace(text=scripted_answer(c[-1]["content"]))])
                    for c in conversations]

    vllm = types.ModuleType("vllm")
    vllm.LLM, vllm.SamplingParams = Engine, lambda **kw: kw
    sampling = types.ModuleType("vllm.sampling_params")
    sampling.StructuredOutputsParams = lambda json: {"json": json}
    monkeypatch.setitem(sys.modules, "vllm", vllm)
    monkeypatch.setitem(sys.modules, "vllm.sampling_params", sampling)
    parser = LLMEntityParser(cfg, cache_dir=tmp_path)
    assert [[e.noun for e in image] for image in parser.parse_batch([["Two dogs."], ["A cat on a sofa."]])] == \
        [["dog"], ["cat", "sofa"]]
    assert seen["engine"] == ("m", {"max_model_len": 512})
    assert seen["params"]["structured_outputs"] == {"json": ENTITIES_SCHEMA} and seen["params"]["temperature"] == 0


def test_the_transformers_backend_generates_with_a_chat_template(tmp_path):
    """A tiny random GPT-2 with a tokenizer trained here: its answers are noise, so every caption is a counted
    fallback, through the real tokenise / generate / decode path."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    text = [scripted_answer("a dog and a cat in the park"), "A dog catches a frisbee.", "system user assistant"]
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel()
    bpe.train_from_iterator(text * 20, trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<eos>"]))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<eos>", unk_token="<unk>")
    tokenizer.chat_template = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                               "{% if add_generation_prompt %}assistant: {% endif %}")
    folder = tmp_path / "lm"
    tokenizer.save_pretrained(folder)
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=512, n_embd=32, n_layer=1,
                               n_head=2)).save_pretrained(folder)
    cfg = build_config({"entities": {"kind": "llm", "llm": {"backend": "transformers", "model": str(folder),
                                                            "max_new_tokens": 16, "batch_size": 2}}}).entities
    parser = LLMEntityParser(cfg, cache_dir=tmp_path)
    images = [["A dog on the sofa.", "A cat."], ["A frisbee in the park."]]
    parsed = parser.parse_batch(images)
    assert sum(parser.fallbacks.values()) == 3 and set(parser.fallbacks) <= {"unparsable", "bad_schema",
                                                                              "not_in_caption"}
    assert [e.noun for e in parsed[0]] == ["dog", "sofa", "cat"]   # spaCy's, since the noise is unusable
    # a model whose context cannot hold the prompt and an answer: not asked (generate would index out of its
    # position table), each caption a backend_error falling back to spaCy
    short = tmp_path / "short"
    tokenizer.save_pretrained(short)
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=32, n_layer=1,
                               n_head=2)).save_pretrained(short)
    cfg.llm.model = str(short)
    cramped = LLMEntityParser(cfg, cache_dir=tmp_path / "other")
    assert [e.noun for e in cramped.parse_batch([["A dog on the sofa."]])[0]] == ["dog", "sofa"]
    assert cramped.fallbacks == {"backend_error": 1}


def test_fallbacks_are_counted_in_the_markers_stats_manifest_and_ovmine_stats(server, tmp_path, monkeypatch, tiny_cfg):
    """A mining run with the LLM parser: the captions whose answer was not used are counted per shard (its
    chunks merged), in the stats file, the manifest's totals and `ovmine stats`; the images are not dropped."""
    from conftest import jpeg_bytes, scene, write_tar
    from mining.pipeline import run_mining
    from mining.postrun.stats import compute_stats, format_stats
    from mining.postrun.validate import check_output

    monkeypatch.setattr("mining.regions.clip_loader.CACHE_DIR", tmp_path / "cache")
    captions = [["A dog on a sofa.", "A garble dog."], ["A cat by a garble park.", "A cat."], ["A dog.", "A cat."]]
    members = [(f"{i:04d}.{ext}", data) for i, texts in enumerate(captions)
               for ext, data in (("jpg", jpeg_bytes(scene(i))), ("json", json.dumps({"captions": texts}).encode()))]
    write_tar(tmp_path / "in" / "00000.tar", members)
    cfg = tiny_cfg(entities={"kind": "llm", "llm": {"backend": "http", "model": "scripted",
                                                    "endpoint": server["endpoint"]}},
                   execution={"executor": "local", "chunk_size": 2})
    manifest = run_mining(cfg, [str(tmp_path / "in")], str(tmp_path / "out"))
    assert manifest["shards"][0]["entity_fallbacks"] == {"unparsable": 2}
    assert manifest["totals"]["entity_fallbacks"] == {"unparsable": 2}
    assert "no_entities" not in manifest["totals"]["drops"]   # the fallen-back captions still gave entities
    shard_stats = json.loads((tmp_path / "out" / "stats" / "00000.json").read_text())
    assert shard_stats["entity_fallbacks"] == {"unparsable": 2}
    stats = compute_stats(tmp_path / "out")
    assert stats["entity_fallbacks"] == {"unparsable": 2}
    assert "LLM answers unused    2 captions (unparsable 2, parsed by spaCy instead)" in format_stats(stats)
    from mining.postrun.report import render_report

    assert "<th>LLM answers unused</th><td>2 captions</td>" in render_report(tmp_path / "out", stats)
    assert check_output(str(tmp_path / "out"))["shards"] == 1   # validate finds stats and markers agree
