"""Entities read by a language model (Uni-OVSeg's LLM parser): each caption goes to the model with one prompt, the
answer must be JSON of the entities schema, and every word it names must be in the caption. An answer that fails
is a counted fallback reason, and the caption goes to the spaCy parser instead (`entities.llm.fallback`), so no
caption is lost to a model's mistake. Answers are kept per (model, prompt, caption) on this machine, so a rerun
or a second mining asks nothing again.

Backends (`entities.llm.backend`), all in the entity stage's workers, so that each keeps the stage's resources,
batching, cache and fallback on both executors: `transformers` (a causal LM with its chat template, batched
greedy generation), `vllm` (vLLM's offline engine on the worker's GPU, decoding constrained to the entities JSON
schema) and `http` (an OpenAI-compatible chat-completions server: vLLM, TGI or a hosted API; requests in flight
up to the batch size, at most `requests_per_second`, retried with backoff on errors and rate limits).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from mining.config import EntitiesConfig, LLMConfig
from mining.entities.merging import merge_entities
from mining.logs import logger
from mining.records import Entity

PROMPT_VERSION = "entities-v1"
SYSTEM_PROMPT = (
    "You list the visual entities of an image caption: the things and stuff a picture could show (objects, "
    "people, animals, materials, ground, sky), not abstract words, actions, or the picture itself. Answer with "
    'JSON only: {"entities": [{"noun": "...", "phrase": "...", "count": 1, "attributes": ["..."]}]}. noun: the '
    "singular head noun with its compound (\"traffic light\"); phrase: the words of the caption that name it, "
    "copied exactly; count: how many the caption says (1 if it does not say); attributes: its colour, size or "
    "material words from the caption.")


# the answer's JSON schema, for decoders that can be held to one (vLLM structured outputs, response_format)
ENTITIES_SCHEMA = {
    "type": "object", "required": ["entities"], "additionalProperties": False,
    "properties": {"entities": {"type": "array", "items": {
        "type": "object", "required": ["noun", "phrase"], "additionalProperties": False,
        "properties": {"noun": {"type": "string"}, "phrase": {"type": "string"},
                       "count": {"type": "integer", "minimum": 1},
                       "attributes": {"type": "array", "items": {"type": "string"}}}}}},
}


class ReplyError(ValueError):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def reply_entities(caption: str, reply: str, caption_index: int) -> list[Entity]:
    """The entities of a model's `reply` for `caption`; raises ReplyError naming why it cannot be used:
    not JSON (`unparsable`), not the schema (`bad_schema`), or a phrase that is not the caption's own words or a
    noun none of whose words the phrase holds (`not_in_caption`: the model made it up)."""
    text = reply.strip()
    fenced = re.search(r"\{.*\}", text, re.S)   # models wrap JSON in prose or ``` fences
    try:
        doc = json.loads(fenced.group(0) if fenced else text)
    except json.JSONDecodeError as err:
        raise ReplyError("unparsable", f"{err.msg} in {text[:80]!r}") from None
    items = doc.get("entities") if isinstance(doc, dict) else None
    if not isinstance(items, list):
        raise ReplyError("bad_schema", "no 'entities' list")
    entities: list[Entity] = []
    lowered = caption.lower()
    for item in items:
        if not (isinstance(item, dict) and isinstance(item.get("noun"), str) and isinstance(item.get("phrase"), str)):
            raise ReplyError("bad_schema", f"an entity without noun and phrase: {item!r}")
        noun, phrase = " ".join(_words(item["noun"])), item["phrase"].strip().lower()
        count, attributes = item.get("count", 1), item.get("attributes", [])
        if not isinstance(count, int) or not isinstance(attributes, list):
            raise ReplyError("bad_schema", f"count or attributes of {noun!r}")
        start = lowered.find(phrase) if phrase else -1
        phrase_words = _words(phrase)
        # the noun is the singular: "dogs" in the phrase holds "dog"
        if start < 0 or not noun or not all(any(w.startswith(n[:-1] or n) for w in phrase_words) for n in noun.split()):
            raise ReplyError("not_in_caption", f"{noun!r} / {phrase!r}")
        adjectives = [a.lower() for a in attributes if isinstance(a, str) and a.lower() in lowered]
        entities.append(Entity(noun=noun, phrase=phrase, span=(start, start + len(phrase)),
                               caption_index=caption_index, count=max(1, min(count, 10)), adjectives=adjectives))
    return entities


class AnswerCache:
    """Answers per (model, prompt version, caption) in one SQLite file: several workers of a node share it."""

    def __init__(self, path: Path, model: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, timeout=60, check_same_thread=False)
        self.db.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, reply TEXT)")
        self.model = model

    def key(self, caption: str) -> str:
        return hashlib.sha256(f"{self.model}\0{PROMPT_VERSION}\0{caption}".encode()).hexdigest()

    def get(self, captions: list[str]) -> dict[str, str]:
        found = {}
        for caption in captions:
            row = self.db.execute("SELECT reply FROM answers WHERE key = ?", (self.key(caption),)).fetchone()
            if row is not None:
                found[caption] = row[0]
        return found

    def put(self, replies: dict[str, str]) -> None:
        with self.db:
            self.db.executemany("INSERT OR REPLACE INTO answers VALUES (?, ?)",
                                [(self.key(c), r) for c, r in replies.items()])


def messages(caption: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": caption}]


class RateLimit:
    """At most `per_second` starts a second across the threads that share it (None: no limit)."""

    def __init__(self, per_second: float | None) -> None:
        self.interval = 1.0 / per_second if per_second else 0.0
        self.next_start = 0.0
        self.lock = threading.Lock()

    def wait(self) -> None:
        if not self.interval:
            return
        with self.lock:
            now = time.monotonic()
            start = max(now, self.next_start)
            self.next_start = start + self.interval
        time.sleep(start - now)


class HttpBackend:
    """An OpenAI-compatible /chat/completions endpoint, greedy, a request per caption."""

    def __init__(self, cfg: LLMConfig) -> None:
        self.cfg = cfg
        self.url = cfg.endpoint.rstrip("/") + "/chat/completions"
        key = os.environ.get(cfg.api_key_env)
        self.headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
        self.rate = RateLimit(cfg.requests_per_second)

    def _ask(self, caption: str) -> str:
        import requests

        body = {"model": self.cfg.model, "messages": messages(caption), "temperature": 0,
                "max_tokens": self.cfg.max_new_tokens}
        if self.cfg.constrained:
            body["response_format"] = {"type": "json_schema",
                                       "json_schema": {"name": "entities", "schema": ENTITIES_SCHEMA}}
        for attempt in range(self.cfg.max_retries + 1):
            self.rate.wait()
            try:
                answer = requests.post(self.url, json=body, headers=self.headers, timeout=self.cfg.timeout_s)
                if answer.status_code == 429 or answer.status_code >= 500:
                    raise requests.HTTPError(f"HTTP {answer.status_code}", response=answer)
                answer.raise_for_status()
                return answer.json()["choices"][0]["message"]["content"]
            except (requests.RequestException, KeyError, ValueError) as err:
                if attempt == self.cfg.max_retries:
                    raise RuntimeError(f"{self.url}: {err}") from None
                time.sleep(_backoff(err, attempt))
        raise AssertionError("unreachable")

    def generate(self, captions: list[str]) -> list[str | Exception]:
        def ask(caption: str) -> str | Exception:
            try:
                return self._ask(caption)
            except RuntimeError as err:
                return err
        with ThreadPoolExecutor(max_workers=self.cfg.batch_size) as pool:
            return list(pool.map(ask, captions))


def _backoff(err: Exception, attempt: int) -> float:
    """Seconds before the next try: the server's Retry-After when it gives one (a rate limit), else doubling."""
    response = getattr(err, "response", None)
    retry_after = response.headers.get("Retry-After") if response is not None else None
    if retry_after and retry_after.replace(".", "", 1).isdigit():
        return min(60.0, float(retry_after))
    return min(8.0, 0.5 * 2 ** attempt)


class TransformersBackend:
    """A causal LM with its tokenizer's chat template, batched greedy generation (left-padded)."""

    def __init__(self, cfg: LLMConfig, device: str = "auto") -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from mining.devices import resolve_device

        self.cfg = cfg
        self.device = resolve_device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(cfg.model, padding_side="left")
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        # on a GPU the checkpoint's own dtype (bf16 for today's instruct models); on the CPU fp32, which it runs fastest
        dtype = "auto" if self.device.type == "cuda" else torch.float32
        self.model = AutoModelForCausalLM.from_pretrained(cfg.model, dtype=dtype).to(self.device).eval()

    def generate(self, captions: list[str]) -> list[str | Exception]:
        import torch

        context = getattr(self.model.config, "max_position_embeddings", None)
        out: list[str | Exception] = []
        for start in range(0, len(captions), self.cfg.batch_size):
            batch = captions[start:start + self.cfg.batch_size]
            prompts = [self.tokenizer.apply_chat_template(messages(c), tokenize=False, add_generation_prompt=True)
                       for c in batch]
            inputs = self.tokenizer(prompts, return_tensors="pt", padding=True).to(self.device)
            width = inputs["input_ids"].shape[1]
            room = self.cfg.max_new_tokens if context is None else min(self.cfg.max_new_tokens, context - width)
            if room < 16:   # a batch with a prompt too long for the model's context: none of it is asked
                too_long = RuntimeError(f"a prompt of {width} tokens leaves no room in the model's {context}")
                out += [too_long] * len(batch)
                continue
            with torch.inference_mode():
                tokens = self.model.generate(**inputs, max_new_tokens=room, do_sample=False,
                                             pad_token_id=self.tokenizer.pad_token_id)
            out += self.tokenizer.batch_decode(tokens[:, width:], skip_special_tokens=True)
        return out


class VllmBackend:
    """vLLM's offline engine on the worker's GPU: the model's chat template, greedy, and (`constrained`) decoding
    held to the entities JSON schema, so that the answer always parses."""

    def __init__(self, cfg: LLMConfig) -> None:
        try:
            from vllm import LLM, SamplingParams
            from vllm.sampling_params import StructuredOutputsParams
        except ImportError as err:
            raise RuntimeError(f"entities.llm.backend=vllm needs vLLM on the entity workers ({err}); install it "
                               "where the GPUs are (pip install vllm, with the torch it pins), or use the "
                               "transformers backend") from None
        self.cfg = cfg
        self.engine = LLM(model=cfg.model, **cfg.engine_kwargs)
        structured = StructuredOutputsParams(json=ENTITIES_SCHEMA) if cfg.constrained else None
        self.params = SamplingParams(temperature=0.0, max_tokens=cfg.max_new_tokens, structured_outputs=structured)

    def generate(self, captions: list[str]) -> list[str | Exception]:
        # one call: vLLM schedules the batch itself (continuous batching up to its max_num_seqs)
        answers = self.engine.chat([messages(c) for c in captions], self.params, use_tqdm=False)
        return [a.outputs[0].text for a in answers]


def build_backend(cfg: LLMConfig, device: str = "auto"):
    """`device`: where a transformers model runs ('auto', 'cpu', 'cuda'), as `execution.entities.num_gpus` gives."""
    if cfg.backend == "http":
        return HttpBackend(cfg)
    return VllmBackend(cfg) if cfg.backend == "vllm" else TransformersBackend(cfg, device)


class LLMEntityParser:
    """`parse_batch` as `SpacyEntityParser`'s; `fallbacks` counts, per reason, the captions the model's answer
    could not serve (over the parser's life; `parse_counted` gives them per image)."""

    def __init__(self, cfg: EntitiesConfig, backend=None, cache_dir: Path | None = None, device: str = "auto") -> None:
        from mining.entities.spacy_parser import SpacyEntityParser
        from mining.regions.clip_loader import CACHE_DIR

        assert cfg.llm is not None
        self.cfg, self.llm = cfg, cfg.llm
        self.backend = backend if backend is not None else build_backend(cfg.llm, device)
        self.spacy = SpacyEntityParser(cfg) if cfg.llm.fallback == "spacy" else None
        self.cache = AnswerCache((cache_dir or CACHE_DIR) / "llm" / "answers.sqlite", cfg.llm.model) \
            if cfg.llm.cache else None
        self.fallbacks: Counter[str] = Counter()

    def _replies(self, captions: list[str]) -> dict[str, str | Exception]:
        unique = list(dict.fromkeys(captions))
        known: dict[str, str | Exception] = dict(self.cache.get(unique)) if self.cache else {}
        asked = [c for c in unique if c not in known]
        if asked:
            answers = dict(zip(asked, self.backend.generate(asked)))
            known.update(answers)
            if self.cache:   # a failed request is asked again next time
                self.cache.put({c: r for c, r in answers.items() if isinstance(r, str)})
        return known

    def _caption_entities(self, caption: str, reply: str | Exception, index: int,
                          fallbacks: Counter[str]) -> list[Entity]:
        try:
            if isinstance(reply, Exception):
                raise ReplyError("backend_error", str(reply))
            return reply_entities(caption, reply, index)
        except ReplyError as err:
            fallbacks[err.reason] += 1
            logger.debug("LLM answer not used for %r (%s)", caption, err)
            return [] if self.spacy is None else self.spacy.caption_entities(caption, index)

    def parse_counted(self, images: list[list[str]]) -> tuple[list[list[Entity]], list[Counter[str]]]:
        """Each image's entities, and per image the captions whose answer was not used, by reason (the
        shard's stats and the manifest count them)."""
        replies = self._replies([c for captions in images for c in captions])
        parsed, counted = [], []
        for captions in images:
            fallbacks: Counter[str] = Counter()
            parsed.append(merge_entities([self._caption_entities(caption, replies[caption], index, fallbacks)
                                          for index, caption in enumerate(captions)], self.cfg.max_entities))
            counted.append(fallbacks)
            self.fallbacks.update(fallbacks)
        return parsed, counted

    def parse_batch(self, images: list[list[str]]) -> list[list[Entity]]:
        return self.parse_counted(images)[0]
