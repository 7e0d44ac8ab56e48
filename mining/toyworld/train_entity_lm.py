"""Train the toy world's entity model: a small causal LM (GPT-2 architecture) that answers a caption with the
JSON of its entities, the answer `entities.kind: llm` asks any model for. The toy caption generator knows what
each caption names (`caption_scene_entities`), so the model learns from the truth, on captions of training
seeds no evaluation uses, and is scored on an evaluation seed's captions (`bench/entities.py`).

It is a real transformers model folder (config, safetensors, a byte-level BPE tokenizer with a chat template),
loaded by the same `from_pretrained` code as any Hugging Face model. Its chat template renders the user's turn
only: the model was trained without a system prompt, which a 1M-parameter model could not read anyway.

Reproduce the shipped weights (about 15 minutes on 2 CPU cores):
    .venv/bin/python -m mining.toyworld.train_entity_lm --out mining/toyworld/weights/entity_lm
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import torch

from mining.logs import logger
from mining.toyworld.captions import caption_scene_entities
from mining.toyworld.fitting import Fitting
from mining.toyworld.make import scene_rng
from mining.toyworld.scene import render_scene

TRAIN_SEED = 7_200_000   # apart from the toy CLIP's (7_000_003), the trainer benches' (7_100_000) and every eval seed
USER, ASSISTANT, END, PAD = "<|user|>", "<|assistant|>", "<|end|>", "<|pad|>"
CHAT_TEMPLATE = ("{% for m in messages %}{% if m['role'] == 'user' %}" + USER + "{{ m['content'] }}" + ASSISTANT
                 + "{% elif m['role'] == 'assistant' %}{{ m['content'] }}" + END + "{% endif %}{% endfor %}")
MODEL_CFG = {"n_embd": 128, "n_layer": 4, "n_head": 4, "n_positions": 512}


def answer_json(entities: list[dict[str, object]]) -> str:
    return json.dumps({"entities": entities}, separators=(",", ":"))


def toy_captions(seed: int, images: int, size: int = 128) -> list[tuple[str, str]]:
    """(caption, answer) of every caption of `images` toy scenes of world `seed` (the demo world's mix)."""
    pairs = []
    for index in range(images):
        rng = scene_rng(seed, 0, index)
        scene = render_scene(rng, size, 0.2, 0.1)
        for caption, entities in zip(*caption_scene_entities(rng, scene)):
            pairs.append((caption, answer_json(entities)))
    return pairs


def train_tokenizer(texts: list[str], vocab_size: int):
    """A byte-level BPE (any caption encodes, whatever its words) with the chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[PAD, USER, ASSISTANT, END],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, pad_token=PAD, eos_token=END,
                                        additional_special_tokens=[USER, ASSISTANT])
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def encode(tokenizer, pairs: list[tuple[str, str]], max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids of each prompt + answer + end, and labels that score the answer and its end only."""
    ids, labels = [], []
    for caption, answer in pairs:
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": caption}], tokenize=False)
        p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        a = tokenizer(answer + END, add_special_tokens=False)["input_ids"]
        seq = (p + a)[:max_len]
        ids.append(seq + [tokenizer.pad_token_id] * (max_len - len(seq)))
        labels.append(([-100] * len(p) + a)[:max_len] + [-100] * (max_len - len(seq)))
    return torch.tensor(ids), torch.tensor(labels)


def train(out: Path, images: int, steps: int, batch: int, lr: float, vocab_size: int, seed: int) -> dict:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    started = time.time()
    pairs = toy_captions(TRAIN_SEED, images)
    tokenizer = train_tokenizer([c for c, _ in pairs] + [a for _, a in pairs], vocab_size)
    longest = max(len(tokenizer(tokenizer.apply_chat_template([{"role": "user", "content": c}], tokenize=False)
                                + a + END)["input_ids"]) for c, a in pairs)
    max_len = min(MODEL_CFG["n_positions"], longest)
    ids, labels = encode(tokenizer, pairs, max_len)
    logger.info("%d captions of %d images, %d tokens at most, vocabulary %d (%.0f s)", len(pairs), images, max_len,
                len(tokenizer), time.time() - started)
    config = GPT2Config(vocab_size=len(tokenizer), bos_token_id=tokenizer.eos_token_id,
                        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **MODEL_CFG)
    model = GPT2LMHeadModel(config)
    fitting = Fitting(model.parameters(), lr, steps, started)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for step in range(steps):
        pick = torch.randint(0, len(ids), (batch,), generator=gen)
        x, y = ids[pick], labels[pick]
        width = int((x != tokenizer.pad_token_id).sum(1).max())   # no step pays for the longest sequence
        loss = model(input_ids=x[:, :width], attention_mask=(x[:, :width] != tokenizer.pad_token_id).long(),
                     labels=y[:, :width]).loss
        fitting.step(step, loss, model.parameters())
    out.mkdir(parents=True, exist_ok=True)
    model.eval()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    record = {"script": "python -m mining.toyworld.train_entity_lm", "train_seed": TRAIN_SEED, "images": images,
              "captions": len(pairs), "steps": steps, "batch": batch, "lr": lr, "vocab_size": len(tokenizer),
              "max_len": max_len, "model": MODEL_CFG, "parameters": sum(p.numel() for p in model.parameters()),
              "final_loss": round(fitting.recent_loss(), 5), "seconds": round(time.time() - started, 1),
              "torch": torch.__version__, "seed": seed}
    (out / "training.json").write_text(json.dumps(record, indent=1) + "\n")
    return record


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="the model folder to write")
    ap.add_argument("--images", type=int, default=4000, help="toy scenes whose two captions are the training set")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--vocab-size", type=int, default=800)
    ap.add_argument("--seed", type=int, default=0, help="initialisation and batch order")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    print(json.dumps(train(args.out, args.images, args.steps, args.batch, args.lr, args.vocab_size, args.seed),
                     indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
