"""Embedding an OVSeg-size vocabulary: seconds and peak memory of the text embeddings of N nouns x 14 ViLD
templates with a real-size text tower (open_clip ViT-L-14, random weights: they time and weigh the same as
trained ones), encoded as ovmine does (`batched`: at most 1,024 sequences a pass, each cut after the batch's
longest prompt), against all sequences in one forward pass (`one-pass`) and against batches run over the full
77-token context (`full-context`). Each variant runs in a process of its own, so that its peak RSS is its own.

    .venv/bin/python bench/text_vocab.py --nouns 12000 --modes batched   # one-pass would need ~100 GB here
    .venv/bin/python bench/text_vocab.py --nouns 150                     # the three variants side by side
    .venv/bin/python bench/text_vocab.py --nouns 12000 --device cuda     # on a GPU machine
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def run_one(model: str, nouns: int, mode: str, device: str) -> dict:
    import open_clip
    import torch

    import mining.regions.text as text
    from mining.regions.text import SEQUENCES_PER_BATCH, VILD_TEMPLATES, TextEmbedder

    if mode == "full-context":   # this process only: what encoding cost before the padding was cut off
        text.encode_text_trimmed = lambda model, tokens: model.encode_text(tokens)
    torch.set_grad_enabled(False)
    clip = open_clip.create_model(model, pretrained=None, device=device).eval()
    tokenizer = open_clip.get_tokenizer(model)
    words = [f"noun{i}" for i in range(nouns)]
    per_batch = nouns * len(VILD_TEMPLATES) if mode == "one-pass" else SEQUENCES_PER_BATCH
    embedder = TextEmbedder(clip, tokenizer, torch.device(device), VILD_TEMPLATES, sequences_per_batch=per_batch)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    emb = embedder(words)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    gpu = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None
    return {"mode": mode, "nouns": nouns, "sequences": nouns * len(VILD_TEMPLATES), "dim": int(emb.shape[1]),
            "seconds": round(seconds, 2), "ms_per_noun": round(1000 * seconds / nouns, 2),
            "peak_rss_mib": round(peak), "rss_before_mib": round(base),
            "peak_gpu_mib": None if gpu is None else round(gpu)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nouns", type=int, default=12000)
    ap.add_argument("--model", default="ViT-L-14")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--modes", default="batched,one-pass,full-context")
    ap.add_argument("--one", help=argparse.SUPPRESS)   # a variant's own process
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(args.model, args.nouns, args.one, args.device)))
        return
    rows = []
    for mode in args.modes.split(","):
        out = subprocess.run([sys.executable, __file__, "--one", mode, "--nouns", str(args.nouns), "--model",
                              args.model, "--device", args.device], capture_output=True, text=True)
        if out.returncode != 0:   # the one-pass variant may not fit at all: that is the finding
            rows.append({"mode": mode, "nouns": args.nouns, "failed": out.stderr.strip().splitlines()[-1:]})
            continue
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    if args.json:
        print(json.dumps({"model": args.model, "device": args.device, "rows": rows}))
        return
    print(f"{args.model} text tower, {args.nouns} nouns x 14 templates on {args.device}")
    for r in rows:
        if "failed" in r:
            print(f"  {r['mode']:<12} failed: {r['failed']}")
        else:
            print(f"  {r['mode']:<12} {r['seconds']:>8.1f} s ({r['ms_per_noun']} ms per noun)  peak RSS "
                  f"{r['peak_rss_mib']} MiB (model loaded: {r['rss_before_mib']} MiB)"
                  + (f", peak GPU {r['peak_gpu_mib']} MiB" if r["peak_gpu_mib"] is not None else ""))


if __name__ == "__main__":
    main()
