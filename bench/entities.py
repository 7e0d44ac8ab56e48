"""Entity parsers side by side: spaCy (the default) and the LLM parser (`entities.kind: llm`), on held-out toy
captions, whose truth the caption generator knows, and on the project's labelled real captions
(tests/data/captions_labelled.jsonl); captions per second of each backend on this machine.

Parsers (columns):
  spacy          the spaCy parser (en_core_web_sm)
  llm            the LLM's answers alone (fallback: none): a caption whose answer is unusable gives nothing
  llm+spacy      as shipped (fallback: spacy): an unusable answer's caption goes to spaCy
  http           the same model behind a loopback OpenAI-compatible server this bench starts (fallback: spacy):
                 the HTTP path's captions/s; its answers must equal llm+spacy's
Figures: noun precision and recall (whole nouns, `mining.entities.evaluate.score_nouns`), the share of found
nouns whose count and colour are the truth's (toy captions only), fallbacks (captions whose answer was unusable),
captions per second (one process; the model's first call excluded).

    .venv/bin/python bench/entities.py                      # 300 eval images (600 captions), the toy entity LM
    .venv/bin/python bench/entities.py --model PATH --parsers spacy,llm --json
"""
from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from mining.config import build_config
from mining.entities.evaluate import score_nouns
from mining.entities.llm_parser import LLMEntityParser, TransformersBackend
from mining.entities.spacy_parser import SpacyEntityParser
from mining.toyworld.train_entity_lm import toy_captions

ROOT = Path(__file__).resolve().parents[1]
EVAL_SEED = 2_026_120   # used by no training, test or tuning
SHIPPED_MODEL = ROOT / "mining" / "toyworld" / "weights" / "entity_lm"


def labelled_real() -> list[tuple[str, list[dict]]]:
    lines = (ROOT / "tests" / "data" / "captions_labelled.jsonl").read_text().splitlines()
    return [(d["caption"], [{"noun": n} for n in d["nouns"]]) for d in map(json.loads, filter(None, lines))]


def toy_set(images: int) -> list[tuple[str, list[dict]]]:
    return [(caption, json.loads(answer)["entities"]) for caption, answer in toy_captions(EVAL_SEED, images)]


def serve(backend: TransformersBackend) -> tuple[ThreadingHTTPServer, str]:
    """A loopback chat-completions server answering with `backend`'s model, one generate at a time."""
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with lock:
                answer = backend.generate([body["messages"][-1]["content"]])[0]
            data = json.dumps({"choices": [{"message": {"role": "assistant", "content": answer}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}/v1"


def parsers(names: list[str], model: str, batch: int, cache_dir: Path):
    """Each named parser, built; the http one's server is stopped by the caller (returned last)."""
    def llm(**extra):
        entities = build_config({"entities": {"kind": "llm", "llm": {"model": model, "cache": False,
                                                                     "batch_size": batch, **extra}}}).entities
        return LLMEntityParser(entities, cache_dir=cache_dir, device="cpu")
    built, httpd = {}, None
    for name in names:
        if name == "spacy":
            built[name] = SpacyEntityParser(build_config({}).entities)
        elif name == "llm":
            built[name] = llm(fallback="none")
        elif name == "llm+spacy":
            built[name] = llm()
        elif name == "http":
            model_cfg = build_config({"entities": {"kind": "llm", "llm": {"model": model}}}).entities.llm
            httpd, endpoint = serve(TransformersBackend(model_cfg, "cpu"))
            built[name] = llm(backend="http", endpoint=endpoint)
        else:
            raise SystemExit(f"--parsers: no parser {name!r} (spacy, llm, llm+spacy, http)")
    return built, httpd


def score(parser, captions: list[tuple[str, list[dict]]], batch: int) -> dict:
    parser.parse_batch([[captions[0][0]]])   # the first call pays for loading and warming; not timed
    if hasattr(parser, "fallbacks"):
        parser.fallbacks.clear()
    started = time.perf_counter()
    found = []
    for start in range(0, len(captions), batch):
        found += parser.parse_batch([[c] for c, _ in captions[start:start + batch]])
    seconds = time.perf_counter() - started
    nouns = score_nouns([[e.noun for e in image] for image in found], [[t["noun"] for t in truth]
                                                                       for _, truth in captions])
    agree = total = 0   # of found nouns the truth has: same count and colour (toy truth says them)
    for image, (_, truth) in zip(found, captions):
        by_noun = {t["noun"]: t for t in truth if "count" in t}
        for entity in image:
            if entity.noun in by_noun:
                want = by_noun[entity.noun]
                total += 1
                agree += entity.count == want["count"] and sorted(entity.adjectives) == sorted(want["attributes"])
    return {"captions": len(captions), "noun_precision": round(nouns.precision, 4),
            "noun_recall": round(nouns.recall, 4), "count_and_colour": round(agree / total, 4) if total else None,
            "fallbacks": sum(getattr(parser, "fallbacks", {}).values()),
            "captions_per_second": round(len(captions) / seconds, 1),
            "nouns": [[e.noun for e in image] for image in found]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=300, help="evaluation-world images (two captions each)")
    ap.add_argument("--model", default=str(SHIPPED_MODEL), help="the LLM parser's model (a transformers folder)")
    ap.add_argument("--parsers", default="spacy,llm,llm+spacy,http")
    ap.add_argument("--batch", type=int, default=32, help="captions per parse call (and the LLM's batch)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    sets = {"toy": toy_set(args.images), "real": labelled_real()}
    with tempfile.TemporaryDirectory() as cache:
        built, httpd = parsers(args.parsers.split(","), args.model, args.batch, Path(cache))
        try:
            results = {name: {which: score(parser, captions, args.batch) for which, captions in sets.items()}
                       for name, parser in built.items()}
        finally:
            if httpd is not None:
                httpd.shutdown()
    if "http" in results and "llm+spacy" in results:
        results["http"]["toy"]["same_as_llm+spacy"] = results["http"]["toy"]["nouns"] == \
            results["llm+spacy"]["toy"]["nouns"]
    for per_set in results.values():
        for figures in per_set.values():
            figures.pop("nouns")
    header = {"seed": EVAL_SEED, "images": args.images, "model": args.model, "batch": args.batch}
    if args.json:
        print(json.dumps({**header, "results": results}, indent=1))
        return 0
    print(f"evaluation world seed {EVAL_SEED}, {args.images} images; LLM {args.model}; batch {args.batch}")
    for which in sets:
        print(f"\n{which} captions ({len(sets[which])})")
        print(f"  {'parser':<11}{'precision':>10}{'recall':>8}{'count+colour':>14}{'fallbacks':>11}{'captions/s':>12}")
        for name, per_set in results.items():
            f = per_set[which]
            cc = "-" if f["count_and_colour"] is None or which == "real" else f"{f['count_and_colour']:.3f}"
            print(f"  {name:<11}{f['noun_precision']:>10.3f}{f['noun_recall']:>8.3f}{cc:>14}{f['fallbacks']:>11}"
                  f"{f['captions_per_second']:>12.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
