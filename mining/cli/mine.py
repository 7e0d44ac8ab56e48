"""`ovmine mine`: the mining run, its progress and its summary.

Progress goes to stderr: one bar on a terminal; elsewhere (CI, Ray job logs, nohup, `2>file`) one line per
committed shard, so a log shows the run moving. `--quiet` silences both and the summary; errors stay (stderr, and
the exit code), and so does `--json`'s summary, which a machine asked for."""
from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, TextIO

from mining.cli.common import (add_command, add_config_args, add_json, add_s3_endpoint, config_overrides, positive_int,
                               report)
from mining.config import load_config


def _ordered(seconds: dict[str, float]) -> list[tuple[str, float]]:
    """Stage figures in the order data flows through the stages (read -> ... -> match), others after."""
    from mining.stages import FLOW

    rank = {name: i for i, name in enumerate(FLOW)}
    return sorted(seconds.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0]))


@dataclass
class Tally:
    """Running totals of a run, from its committed shards: what the bar and the per-shard lines show."""
    shards: int = 0                # planned, committed ones included
    committed_before: int = 0      # already committed in the output: skipped
    images_planned: int | None = None   # what the shards to mine hold, when known (--limit)
    done: int = 0                  # shards committed so far, committed_before included
    failed: int = 0
    images: int = 0
    pairs: int = 0
    dropped: int = 0
    stage_seconds: Counter = field(default_factory=Counter)
    start: float = field(default_factory=time.perf_counter)
    # shards in flight: (images' worth of work done, images it holds), an estimate for the bar only
    flying: dict[str, tuple[float, int]] = field(default_factory=dict)

    def add(self, marker: dict[str, Any]) -> None:
        self.flying.pop(marker["name"], None)   # the marker's exact figures replace the estimate
        self.done += 1
        self.images += marker["images_in"]
        self.pairs += marker["pairs"]
        self.dropped += sum(marker["drops"].values())
        self.stage_seconds.update(marker["timings"])

    def fail(self, failure: dict[str, str]) -> None:
        self.flying.pop(failure["name"], None)
        self.done += 1
        self.failed += 1

    def images_shown(self) -> int:
        """Committed images plus the images' worth of work done on shards in flight, never past the plan."""
        shown = self.images + int(sum(done for done, _ in self.flying.values()))
        return shown if self.images_planned is None else min(shown, max(self.images, self.images_planned))

    def position(self) -> float:
        """Shards done, plus the share of each shard in flight that is done: where the bar stands."""
        return min(self.shards, self.done + sum(done / size for done, size in self.flying.values() if size))

    def rate(self, images: int | None = None) -> str:
        """Images (committed ones, unless given) per second of this run so far, its start-up included (as the
        summary's images/s); two decimals below 1, so that a slow start does not read as zero."""
        elapsed = time.perf_counter() - self.start
        rate = (self.images if images is None else images) / elapsed if elapsed > 0 else 0.0
        return f"{rate:.1f}" if round(rate, 2) >= 1 else f"{rate:.2f}"   # 0.996 is "1.0", not "1.00"

    def plan_line(self, output: str) -> str:
        mining = self.shards - self.committed_before
        if not self.committed_before:
            return f"mining {self.shards} shard(s) into {output}"
        if not mining:
            return f"all {self.shards} shard(s) already committed in {output}; nothing to mine"
        return f"{self.committed_before} of {self.shards} shards already committed in {output}; mining {mining}"

    def shard_line(self, marker: dict[str, Any]) -> str:
        return (f"shard {marker['name']} committed: {marker['images_in']} images, {marker['pairs']} pairs, "
                f"{sum(marker['drops'].values())} dropped ({self.done}/{self.shards} shards, "
                f"{self.rate()} images/s)")

    def failed_line(self, failure: dict[str, str]) -> str:
        return (f"shard {failure['name']} not committed: {failure['error']} ({self.done}/{self.shards} shards; "
                f"a rerun retries it)")

    def bar_text(self) -> str:
        """The bar's running totals (images: with the work in flight), and each stage's share of the summed stage
        work so far."""
        shown = self.images_shown()
        images = f"{shown}/{self.images_planned}" if self.images_planned is not None else f"{shown}"
        text = f"images {images}, pairs {self.pairs}, dropped {self.dropped}, {self.rate(shown)} images/s"
        total = sum(self.stage_seconds.values())
        if total > 0:
            text += " | " + " ".join(f"{name} {100 * s / total:.0f}%" for name, s in _ordered(self.stage_seconds))
        return text


def _shard_bar(**kwargs: Any):
    """A tqdm bar over shards whose position also moves with the work in flight (a fraction of a shard), while
    the count it shows stays the shards done."""
    from tqdm import tqdm

    class ShardBar(tqdm):
        done = 0

        @property
        def format_dict(self) -> dict[str, Any]:
            return super().format_dict | {"n_fmt": str(self.done)}

    return ShardBar(bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]",
                    **kwargs)


class ConsoleProgress:
    """Tells the user how the run goes (a `mining.pipeline.MiningProgress`; not a subclass, so that the CLI
    does not import the pipeline before it runs): `mode` is "bar" (a terminal), "lines" (a log) or "quiet"."""

    def __init__(self, output: str, mode: str, stream: TextIO = sys.stderr) -> None:
        self.output, self.mode, self.stream = output, mode, stream
        self.tally = Tally()
        self.bar = None
        self.shows_in_flight = mode == "bar"   # the lines are per committed shard: work in flight is not theirs

    def _say(self, line: str) -> None:
        if self.mode == "quiet":
            return
        if self.bar is not None:
            self.bar.write(line, file=self.stream)
        else:
            print(line, file=self.stream, flush=True)

    def planned(self, shards: int, committed: int, images: int | None) -> None:
        self.tally = Tally(shards=shards, committed_before=committed, images_planned=images, done=committed)
        self._say(self.tally.plan_line(self.output))
        if self.mode == "bar" and shards > committed:
            self.bar = _shard_bar(total=shards, initial=committed, unit="shard", desc="starting", file=self.stream,
                                  dynamic_ncols=True)
            self.bar.done = committed

    def phase(self, name: str) -> None:
        if self.bar is not None:
            self.bar.set_description_str(name)
        elif self.mode == "lines" and name != "mining":
            self._say(f"{name} ...")

    def _draw(self, refresh: bool) -> None:
        """Move the bar to the tally; `refresh` draws it now, else when tqdm's interval allows."""
        self.bar.done = self.tally.done
        self.bar.set_postfix_str(self.tally.bar_text(), refresh=False)
        self.bar.update(self.tally.position() - self.bar.n)   # a negative step too: the estimate's weights moved
        if refresh:
            self.bar.refresh()

    def in_flight(self, shards: dict[str, tuple[float, int]]) -> None:
        self.tally.flying = dict(shards)
        if self.bar is not None:
            self._draw(refresh=False)

    def committed(self, marker: dict[str, Any]) -> None:
        self.tally.add(marker)
        if self.bar is not None:
            self.bar.set_description_str("mining", refresh=False)
            self._draw(refresh=True)
        elif self.mode == "lines":
            self._say(self.tally.shard_line(marker))

    def failed(self, failure: dict[str, str]) -> None:
        self.tally.fail(failure)
        if self.bar is not None:
            self._draw(refresh=True)
        self._say(self.tally.failed_line(failure))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def progress_mode(args: argparse.Namespace, stream: TextIO = sys.stderr) -> str:
    if getattr(args, "quiet", False):
        return "quiet"
    return "bar" if stream.isatty() and not args.json else "lines"


def wall_breakdown(manifest: dict[str, Any]) -> str:
    """'80.1 s = ray start-up 9.2 + model loading 31.0 + mining 39.9', or the bare wall time when the run
    recorded no breakdown (a rerun that mined nothing)."""
    t, wall = manifest["timings"], manifest["wall_seconds"]
    if "wall_mining" not in t:
        return f"{wall:.1f} s"
    parts = []
    if manifest["config"]["execution"]["executor"] == "ray":
        parts.append(f"ray start-up {t['wall_ray_startup']:.1f}")
    parts += [f"model loading {t['wall_model_loading']:.1f}", f"mining {t['wall_mining']:.1f}"]
    return f"{wall:.1f} s = " + " + ".join(parts)


def _summary(manifest: dict[str, Any], output: str, tally: Tally | None = None, verbose: bool = False) -> str:
    t = manifest["totals"]
    lines = [f"mined {output}"]
    mined = None
    if tally is not None and tally.shards:
        mined = tally.done - tally.committed_before - tally.failed
        lines.append(f"  shards             {tally.shards} ({tally.committed_before} already committed, "
                     f"{mined} mined now" + (f", {tally.failed} failed" if tally.failed else "") + ")")
    lines += [
        f"  images in          {t['images_in']}",
        f"  images with pairs  {t['images_with_pairs']}",
        f"  pairs              {t['pairs']}",
        f"  unique nouns       {t['unique_nouns']}",
    ]
    idle = mined == 0 and not tally.failed   # the timings on record are then an earlier run's, not this one's
    if idle:
        lines.append(f"  timings            none: nothing was mined now (the runs that mined it: ovmine stats "
                     f"{output})")
    else:
        lines += [f"  wall time          {wall_breakdown(manifest)}",
                  f"  images/s           {manifest['images_per_second']:.2f}"]
    drops = t["drops"]
    lines.append(f"  dropped            {sum(drops.values())}" + ("" if drops else " (none)"))
    lines += [f"    {reason:<22}{n}" for reason, n in sorted(drops.items(), key=lambda kv: -kv[1])]
    errors = [e for s in manifest["shards"] for e in s["errors"]]
    if errors:
        lines.append(f"  shard errors       {len(errors)} (first: {errors[0]})")
    if idle:
        return "\n".join(lines)
    work = {k: v for k, v in manifest["timings"].items() if not k.startswith(("wall_", "setup_"))}
    if work:
        lines.append("  stage work (s)     " + ", ".join(f"{k} {v:.2f}" for k, v in _ordered(work))
                     + "  (summed worker seconds)")
    loading = {k[len("setup_"):]: v for k, v in manifest["timings"].items() if k.startswith("setup_")}
    if loading:
        lines.append("  model loading (s)  " + ", ".join(f"{k} {v:.1f}" for k, v in _ordered(loading))
                     + "  (summed worker seconds)")
    on_ray = manifest["config"]["execution"]["executor"] == "ray"
    if "driver" in manifest and (on_ray or verbose):   # on Ray the workers write; what reached the driver
        d = manifest["driver"]
        lines.append(f"  driver             received {d['bytes_per_image']:.0f} bytes per image, "
                     f"{d['cpu_seconds_per_1000_images']:.2f} CPU s per 1,000 images")
    return "\n".join(lines)


def cmd_mine(args: argparse.Namespace) -> int:
    from mining.pipeline import run_mining

    overrides = config_overrides(args)
    if args.executor:
        overrides.append(f"execution.executor={args.executor}")
    cfg = load_config(args.config, overrides)
    progress = ConsoleProgress(args.output, progress_mode(args))
    try:
        manifest = run_mining(cfg, args.input, args.output, limit=args.limit, progress=progress,
                              overwrite=args.overwrite)
    finally:
        progress.close()
    failed = manifest.get("failed_shards", [])
    tally = progress.tally
    report(args, {k: manifest[k] for k in ("totals", "timings", "wall_seconds", "images_per_second", "config_hash")}
           | {"output": args.output, "failed_shards": failed,
              "shards": {"planned": tally.shards, "already_committed": tally.committed_before,
                         "mined": tally.done - tally.committed_before - tally.failed}},
           _summary(manifest, args.output, tally, verbose=args.verbose > 0))
    if failed:
        print(f"ovmine: {len(failed)} shard(s) could not be read and were not committed: "
              + ", ".join(f"{f['input']} ({f['error']})" for f in failed[:5])
              + ("" if len(failed) <= 5 else f" and {len(failed) - 5} more")
              + "; rerun the same command to retry them", file=sys.stderr)
        return 1
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "mine", "mine mask–noun pairs from image–caption shards",
                    "ovmine mine --config configs/tiny.yaml --input data/ --output mined/",
                    "ovmine mine --config configs/coco.yaml --input 's3://bucket/cc3m/{00000..00331}.tar' "
                    "--output s3://bucket/mined/cc3m")
    add_config_args(p, required=True)
    p.add_argument("--input", nargs="+", required=True,
                   help="shards: paths, directories, brace patterns (data/{00000..00009}.tar), s3:// URIs")
    p.add_argument("--output", required=True, help="output directory or s3:// prefix")
    p.add_argument("--limit", type=positive_int, help="mine only the first N images (in input order)")
    p.add_argument("--executor", choices=["ray", "local"], help="shortcut for --set execution.executor=...")
    add_s3_endpoint(p)
    p.add_argument("--overwrite", action="store_true",
                   help="mine every shard again, even those already committed in OUTPUT")
    add_json(p)
    p.set_defaults(func=cmd_mine)
