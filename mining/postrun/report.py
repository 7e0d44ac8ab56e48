"""A self-contained HTML report of a mining output, for a curator deciding what to keep: the statistics as
plots; an explorer of a per-noun sample of the pairs (filter, sort, page, open an image with all its masks,
mark pairs right or wrong and save an audit file; with ground truth, each pair's verdict and precision per noun);
galleries of pairs (a random sample, and the lowest-similarity pairs, where a person looks for mistakes), each
the image with its mask and its captions; every frequent noun with its similarity distribution, its phrases and
examples (synonyms and junk nouns show here); examples of dropped images by reason, with their entities and
masks; the run's config and stage timings; optionally a comparison with another output (both runs' plots and the
pairs only one has).

Everything (plots, thumbnails, the explorer's data and script) is inlined, so the file can be mailed or opened
from a bucket.
"""
from __future__ import annotations

import base64
import html
import io
from typing import Any

import numpy as np
from matplotlib.figure import Figure   # the object API: no pyplot state, no GUI backend needed

from mining.postrun.compare_pairs import pair_differences
from mining.postrun.explore import ExplorerSample, explorer_data, judge, noun_counts, sample_pairs
from mining.postrun.report_drops import fetch_dropped, select_drops
from mining.postrun.report_explore import STYLE as EXPLORE_STYLE
from mining.postrun.report_explore import explore_section, truth_section
from mining.postrun.report_gallery import THUMB, Pictures, fetch_pictures, pair_card, select_pairs
from mining.postrun.report_sections import (compare_section, differences_section, drops_section, nouns_section,
                                             run_section)
from mining.postrun.stats import load_run, throughput_text
from mining.storage import Location, Where

EXAMPLES_PER_NOUN = 3
DROPS_PER_REASON = 4


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def _hist_plot(title: str, dist: dict[str, Any], xlabel: str, log_x: bool = False) -> str:
    fig = Figure(figsize=(4.2, 2.8))
    ax = fig.subplots()
    edges = np.asarray(dist["edges"])
    if len(edges) > 1:
        ax.stairs(dist["counts"], edges, fill=True, alpha=0.7)
    if log_x:
        ax.set_xscale("log")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("pairs")
    return _png(fig)


def _bar_plot(title: str, labels: list[str], values: list[int], horizontal: bool = False, ylabel: str = "") -> str:
    fig = Figure(figsize=(4.2, max(2.8, 0.22 * len(labels)) if horizontal else 2.8))
    ax = fig.subplots()
    if horizontal:
        ax.barh(labels[::-1], values[::-1])
    else:
        ax.bar(labels, values)
        ax.set_ylabel(ylabel)
    ax.set_title(title)
    return _png(fig)


def _plots(stats: dict[str, Any]) -> list[str]:
    d = stats["distributions"]
    plots = [
        _hist_plot("similarity", d["similarity"], "fused cosine similarity"),
        _hist_plot(f"margin: regret of the assignment ({d['margin'].get('no_rival', 0)} pairs had no rival)",
                   d["margin"], "margin"),
        _hist_plot("mask area", d["mask_area"], "pixels (working frame)", log_x=True),
        _bar_plot("masks per image", list(d["masks_per_image"]["values"]),
                  list(d["masks_per_image"]["values"].values()), ylabel="images"),
        _bar_plot("pairs per image", list(d["pairs_per_image"]["values"]),
                  list(d["pairs_per_image"]["values"].values()), ylabel="images"),
        _bar_plot("nouns by pair count (long tail)", list(stats["long_tail"]), list(stats["long_tail"].values()),
                  ylabel="nouns"),
    ]
    if stats["top_nouns"]:
        plots.append(_bar_plot("top nouns", [n for n, _ in stats["top_nouns"]], [c for _, c in stats["top_nouns"]],
                               horizontal=True))
    if stats["drops"]:
        plots.append(_bar_plot("drops by reason", list(stats["drops"]), list(stats["drops"].values()),
                               horizontal=True))
    return plots


STYLE = f"""
body {{ font-family: system-ui, sans-serif; margin: 24px; color: #222; }} h2 {{ scroll-margin-top: 48px; }}
nav {{ position: sticky; top: 0; background: #fff; padding: 6px 0; border-bottom: 1px solid #ddd; z-index: 2; }}
nav a {{ margin-right: 14px; }} nav label {{ float: right; font-weight: bold; }}
table {{ border-collapse: collapse; margin: 6px 24px 12px 0; }} th, td {{ text-align: left; padding: 2px 12px 2px 0; }}
caption {{ text-align: left; font-weight: bold; padding-bottom: 4px; }}
.cols {{ display: flex; flex-wrap: wrap; align-items: flex-start; }}
.plots {{ display: flex; flex-wrap: wrap; gap: 12px; }} .plot {{ border: 1px solid #ddd; }}
.gallery {{ display: grid; grid-template-columns: repeat(auto-fill, minmax({THUMB}px, 1fr)); gap: 12px; }}
.gallery.small {{ grid-template-columns: repeat(auto-fill, minmax(170px, 1fr)); gap: 8px; }}
figure.card {{ margin: 0; border: 1px solid #ddd; padding: 6px; font-size: 90%; }}
.thumb {{ position: relative; cursor: pointer; }} .thumb img {{ display: block; width: 100%; }}
.thumb img.mask {{ position: absolute; left: 0; top: 0; height: 100%; }}
body.raw .thumb img.mask, .card.raw .thumb img.mask {{ visibility: hidden; }}
ol.captions {{ margin: 4px 0 0 0; padding-left: 18px; color: #333; }} mark {{ background: #ffe45c; }}
.phrase, .detail {{ color: #666; }} .noimg {{ height: 96px; background: #eee; display: grid; place-items: center;
  color: #777; text-align: center; padding: 4px; }}
section.noun {{ border-top: 1px solid #eee; padding: 8px 0; }}
.nounhead {{ display: flex; flex-wrap: wrap; gap: 16px; align-items: center; }}
.nounhead h3 {{ margin: 0; min-width: 120px; }}
svg.hist rect {{ fill: #4c72b0; }} svg.hist text {{ font-size: 10px; fill: #666; }}
.bar {{ display: inline-block; height: 9px; background: #4c72b0; }} .bar.b {{ background: #dd8452; }}
.warning {{ background: #fff3cd; padding: 8px; border: 1px solid #e0c36c; }}
pre#config {{ background: #f6f6f6; padding: 8px; max-height: 420px; overflow: auto; }}
h3.side {{ margin: 10px 0 4px 0; }}
""" + EXPLORE_STYLE

# The mask layer of every card is shown or hidden by one class on <body> (the checkbox) or on a card (a
# click on its picture): a plain switch, no library.
SCRIPT = """
document.getElementById('show-masks').addEventListener('change', function (e) {
  document.body.classList.toggle('raw', !e.target.checked);
});
document.querySelectorAll('.card:not(.xpair) .thumb').forEach(function (t) {
  t.addEventListener('click', function () { t.closest('.card').classList.toggle('raw'); });
});
"""


def _summary_rows(stats: dict[str, Any]) -> list[tuple[str, Any]]:
    rows = [("state", "run in progress or interrupted" if stats["in_progress"] else "finished"),
            ("images in", stats["images_in"]), ("images with pairs", stats["images_with_pairs"]),
            ("pairs", stats["pairs"]), ("pairs per image", f"{stats['pairs_per_image']:.2f}"),
            ("unique nouns", stats["unique_nouns"]), ("dropped", sum(stats["drops"].values())),
            ("images/s", throughput_text(stats)), ("config", stats["config_hash"])]
    if stats["curated_from"]:
        rows.insert(1, ("curated from", stats["curated_from"]["input"]))
    if stats.get("refined_pairs"):   # captions.refine: the pairs only its captions named
        rows.insert(rows.index(("pairs", stats["pairs"])) + 1, ("from refined captions", stats["refined_pairs"]))
    if stats.get("entity_fallbacks"):
        rows.append(("LLM answers unused", f"{sum(stats['entity_fallbacks'].values())} captions"))
    return rows


def _figures(stats: dict[str, Any]) -> str:
    return "".join(f'<img class=plot alt="plot" src="data:image/png;base64,{p}">' for p in _plots(stats))


def _distributions(stats: dict[str, Any], other: dict[str, Any] | None) -> str:
    """The plots; beside another output, both runs' in turn (A first, as the comparison's columns)."""
    if other is None:
        return f"<div class=plots>{_figures(stats)}</div>"
    sides = (("A", stats), ("B", other))
    return "".join(f'<h3 class=side>{side}: {html.escape(str(s["output"]))}</h3>'
                   f'<div class=plots id=plots-{side.lower()}>{_figures(s)}</div>' for side, s in sides)


def _differences(output: Where, other: Where, gallery: int, seed: int) -> str:
    only_a, only_b = pair_differences(output, other, gallery, seed)
    pictures = {side: fetch_pictures(where, load_run(where)[0], {(p.shard, p.key) for p in only.sample})
                for side, where, only in (("a", output, only_a), ("b", other, only_b))}
    return differences_section(only_a, only_b, pictures["a"], pictures["b"])


def _explore(output: Where, stats: dict[str, Any], sample: ExplorerSample, pictures: Pictures, budget: int,
             seed: int, gt: Where | None, synonyms: Where | None) -> tuple[str, str | None]:
    """(the explorer section, the ground-truth section or None)."""
    truth = judge(output, gt, synonyms, {(p.shard, p.key) for p in sample.pairs}) if gt is not None else None
    data = explorer_data(sample, pictures, truth.verdicts if truth else None)
    name = Location.of(output).uri.rstrip("/").rsplit("/", 1)[-1] or "output"
    meta = {"output": str(output), "config_hash": stats["config_hash"], "seed": seed,
            "audit_file": f"{name}-audit.json"}
    return explore_section(data, meta, budget), truth_section(truth, str(gt)) if truth else None


def render_report(output: Where, stats: dict[str, Any], gallery: int = 24, seed: int = 0,
                  comparison: dict[str, Any] | None = None, other: Where | None = None,
                  other_stats: dict[str, Any] | None = None, explore: int = 1000, explore_shards: int | None = 16,
                  gt: Where | None = None, synonyms: Where | None = None) -> str:
    """The page for `output`, whose `stats` come from compute_stats (with keep_pair_stats, the explorer reuses its
    noun counts instead of reading them again); `comparison` from
    compare_stats with `other` (B) and its `other_stats`; `explore`: the explorer's budget of pairs, drawn from at
    most `explore_shards` shards (None: all); `gt`
    (COCO instances, optional `synonyms`): each explored pair judged, and precision per noun."""
    manifest, _ = load_run(output)
    chosen = select_pairs(output, gallery, seed, [row["noun"] for row in stats["nouns"]], EXAMPLES_PER_NOUN)
    counts = stats["_pair_stats"].nouns if "_pair_stats" in stats else noun_counts(output)
    sample = sample_pairs(output, counts, explore, seed, explore_shards)
    # the galleries' and the explorer's pictures in one fetch: each input shard they come from is read once
    pictures = fetch_pictures(output, manifest, {(p.shard, p.key) for p in chosen.pairs() + sample.pairs})
    drops = select_drops(output, manifest, DROPS_PER_REASON)
    dropped = fetch_dropped(output, manifest, drops)
    explorer, truth = _explore(output, stats, sample, pictures, explore, seed, gt, synonyms)
    table = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
                    for k, v in _summary_rows(stats))
    sections = [
        ("distributions", "Distributions", _distributions(stats, other_stats)),
        ("explore", "Pairs: filter, sort, audit", explorer),
        ("nouns", f"Nouns ({len(stats['nouns'])} most frequent of {stats['unique_nouns']})",
         nouns_section(stats, chosen, pictures)),
        ("random-pairs", "Random pairs",
         f'<div class=gallery id=random>{"".join(pair_card(p, pictures) for p in chosen.random)}</div>'),
        ("lowest-pairs", "Lowest-similarity pairs",
         f'<div class=gallery id=lowest>{"".join(pair_card(p, pictures) for p in chosen.lowest)}</div>'),
        ("dropped", "Dropped images, by reason", drops_section(drops, dropped, stats["drops"])),
        ("run", "Run: config and stage timings", run_section(stats)),
    ]
    if truth is not None:
        sections.insert(2, ("truth", "Ground truth: precision per noun", truth))
    if comparison is not None:
        sections.insert(0, ("compare", "Compared with another output",
                            compare_section(comparison) + _differences(output, other, gallery, seed)))
    nav = "".join(f'<a href="#{key}">{html.escape(title.split(" (")[0])}</a>' for key, title, _ in sections)
    body = "".join(f'<h2 id="{key}">{html.escape(title)}</h2><div id="{key}-body">{content}</div>'
                   for key, title, content in sections)
    warning = f"<p class=warning>{html.escape(stats['in_progress'])}</p>" if stats["in_progress"] else ""
    return f"""<!doctype html>
<html lang=en><head><meta charset=utf-8><title>ovmine report: {html.escape(str(output))}</title>
<style>{STYLE}</style></head><body>
<h1>ovmine report</h1><p>{html.escape(str(output))}</p>{warning}
<nav>{nav}<label><input type=checkbox id=show-masks checked> show masks</label></nav>
<table id=summary>{table}</table>
{body}
<script>{SCRIPT}</script>
</body></html>
"""
