"""Sections of the HTML report beyond the plots and galleries: nouns (to spot synonyms and junk before
`curate --merge-synonyms/--nouns-deny`), dropped images by reason, the config and stage timings, and the
comparison with another output. Each function returns an HTML fragment; nothing here loads a file or a font.
"""
from __future__ import annotations

import html
from typing import Any

import numpy as np
import yaml

from mining.postrun.compare import cell_text, change_text
from mining.postrun.report_drops import DroppedPicture, DroppedSample, dropped_card
from mining.postrun.report_gallery import SMALL_THUMB, Pictures, Selection, pair_card
from mining.postrun.stats import NOUN_SIMILARITY_EDGES, curated_text, split_timings, throughput_text


def _esc(value: Any) -> str:
    return html.escape(str(value))


def similarity_svg(counts: list[int], lo: int, hi: int, width: int = 180, height: int = 44) -> str:
    """A small histogram of one noun's similarities over bins [lo, hi) of NOUN_SIMILARITY_EDGES, drawn as
    inline SVG so every noun shares one x axis."""
    window = np.asarray(counts[lo:hi], float)
    top = window.max() if window.size and window.max() > 0 else 1.0
    bar = width / max(1, hi - lo)
    rects = "".join(f'<rect x="{i * bar:.1f}" y="{height - 14 - h:.1f}" width="{bar - 1:.1f}" height="{h:.1f}"/>'
                    for i, h in enumerate(window / top * (height - 16)) if h > 0)
    left, right = NOUN_SIMILARITY_EDGES[lo], NOUN_SIMILARITY_EDGES[hi]
    return (f'<svg class=hist width="{width}" height="{height}" role="img" aria-label="similarity histogram">'
            f'{rects}<text x="0" y="{height - 2}">{left:.2f}</text>'
            f'<text x="{width}" y="{height - 2}" text-anchor="end">{right:.2f}</text></svg>')


def nouns_section(stats: dict[str, Any], chosen: Selection, pictures: Pictures) -> str:
    rows = stats["nouns"]
    if not rows:
        return "<p>No pairs.</p>"
    used = np.nonzero(np.sum([r["similarity_counts"] for r in rows], axis=0))[0]
    lo, hi = int(used[0]), int(used[-1]) + 1
    blocks = []
    for i, row in enumerate(rows):
        noun = row["noun"]
        phrases = chosen.phrases.get(noun, {})
        phrase_text = ", ".join(f"{_esc(p)} <small>({n})</small>" for p, n in phrases.most_common(6)) or "-"
        cards = "".join(pair_card(p, pictures, SMALL_THUMB, with_captions=True) for p in chosen.by_noun.get(noun, []))
        blocks.append(
            f'<section class=noun id="noun-{i}" data-noun="{_esc(noun)}">'
            f'<div class=nounhead><h3>{_esc(noun)}</h3>'
            f'<div class=nounfacts>{row["pairs"]} pairs · {100 * row["share"]:.1f}% of pairs · similarity mean '
            f'{row["similarity_mean"]:.3f}, p50 {row["similarity_p50"]:.2f}</div>'
            f'{similarity_svg(row["similarity_counts"], lo, hi)}'
            f'<div class=phrases>phrases: {phrase_text}</div></div>'
            f'<div class="gallery small">{cards}</div></section>')
    more = stats["unique_nouns"] - len(rows)
    tail = f"<p>{more} more nouns not shown (<code>--top</code> shows more).</p>" if more > 0 else ""
    return "".join(blocks) + tail


def _images(n: int) -> str:
    return f"{n} image{'s' if n != 1 else ''}"


def drops_section(drops: dict[str, list[DroppedSample]], pictures: dict[tuple[str, int], DroppedPicture],
                  totals: dict[str, int]) -> str:
    if not drops:
        return "<p>No image was dropped.</p>"
    parts = []
    for reason, samples in drops.items():
        cards = "".join(dropped_card(s, pictures) for s in samples)
        parts.append(f'<section class=dropreason data-reason="{_esc(reason)}"><h3>{_esc(reason)} '
                     f'<small>({_images(totals.get(reason, len(samples)))}; {len(samples)} shown)</small></h3>'
                     f'<div class="gallery small">{cards}</div></section>')
    return "".join(parts)


def run_section(stats: dict[str, Any]) -> str:
    """Where the numbers come from: lineage, throughput, stage seconds, the resolved config and models."""
    parts = []
    if stats["in_progress"]:
        parts.append(f"<p class=warning>{_esc(stats['in_progress'])}</p>")
    if stats["curated_from"]:
        parts.append(f"<p id=lineage>{_esc(curated_text(stats))}</p>")
    parts.append(f"<p>images/s: {_esc(throughput_text(stats))}</p>")
    whose = " of the mining run" if stats["curated_from"] else ""
    groups = split_timings(stats["timings"])
    captions = {"stage seconds": "stage work, seconds summed over samples (worker time, not wall time)",
                "run wall seconds": "wall seconds of the run that measured the throughput",
                "model loading s": "model loading, seconds per stage (summed over workers)"}
    tables = []
    for label, group in groups.items():
        if not group:
            continue
        total = sum(group.values()) or 1.0
        per_image = label == "stage seconds" and stats["images_in"]
        rows = "".join(
            f"<tr><th>{_esc(name)}</th><td>{seconds:.2f}</td><td>{100 * seconds / total:.1f}%</td>"
            + (f"<td>{1000 * seconds / stats['images_in']:.1f}</td>" if per_image else "")
            + f"<td><span class=bar style=\"width:{120 * seconds / total:.0f}px\"></span></td></tr>"
            for name, seconds in group.items())
        head = "<tr><th></th><th>seconds</th><th>share</th>" + ("<th>ms per image</th>" if per_image else "") \
            + "<th></th></tr>"
        tables.append(f"<table class=timings><caption>{_esc(captions[label] + whose)}</caption>{head}{rows}</table>")
    parts.append(f"<div class=cols id=timings>{''.join(tables)}</div>" if tables
                 else "<p id=timings>No stage timings recorded.</p>")
    if stats["config"]:
        models = "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in (stats["models"] or {}).items())
        parts.append(f"<table id=models><caption>models</caption>{models}</table>"
                     f"<h3>Resolved config <small>({_esc(stats['config_hash'])})</small></h3>"
                     f"<pre id=config>{_esc(yaml.safe_dump(stats['config'], sort_keys=False))}</pre>")
    else:
        parts.append("<p id=config>The resolved config is written with the manifest, when the run finishes.</p>")
    return "".join(parts)


def compare_section(comparison: dict[str, Any]) -> str:
    def row(name: str, pair: list[Any]) -> str:
        return (f"<tr><th>{_esc(name)}</th><td>{cell_text(pair[0])}</td><td>{cell_text(pair[1])}</td>"
                f"<td>{change_text(*pair)}</td></tr>")

    head = "<tr><th></th><th>A</th><th>B</th><th>B − A</th></tr>"
    totals = "".join(row(name.replace("_", " "), pair) for name, pair in comparison["totals"].items())
    drops = "".join(row(reason, pair) for reason, pair in comparison["drops"].items())
    top = max([max(n["a"], n["b"]) for n in comparison["nouns"]] or [1])
    nouns = "".join(
        f"<tr><th>{_esc(n['noun'])}</th><td>{n['a']}</td><td>{n['b']}</td><td>{change_text(n['a'], n['b'])}</td>"
        f"<td><span class=\"bar a\" style=\"width:{100 * n['a'] / top:.0f}px\"></span><br>"
        f"<span class=\"bar b\" style=\"width:{100 * n['b'] / top:.0f}px\"></span></td></tr>"
        for n in comparison["nouns"])
    only = "".join(
        f"<p>nouns only in {side.upper()}: {comparison[f'nouns_only_in_{side}']['count']} "
        f"({_esc(', '.join(comparison[f'nouns_only_in_{side}']['top']))})</p>"
        for side in ("a", "b") if comparison[f"nouns_only_in_{side}"]["count"])
    return (f"<p>A: {_esc(comparison['a'])} (config {_esc(comparison['config_hash'][0])})<br>"
            f"B: {_esc(comparison['b'])} (config {_esc(comparison['config_hash'][1])})</p>"
            f"<div class=cols><table id=compare-totals><caption>totals</caption>{head}{totals}</table>"
            f"<table id=compare-drops><caption>dropped by reason</caption>{head}{drops}</table></div>"
            f"<table id=compare-nouns><caption>pairs per noun (A above, B below)</caption>{head}{nouns}</table>"
            f"{only}")


def differences_section(only_a, only_b, pictures_a: Pictures, pictures_b: Pictures) -> str:
    """Galleries of the pairs one output has and the other lacks (the same mask of the same image with the same
    noun counts as one pair in both)."""
    parts = []
    for side, only, pictures in (("a", only_a, pictures_a), ("b", only_b, pictures_b)):
        cards = "".join(pair_card(p, pictures, SMALL_THUMB) for p in only.sample)
        shown = f"; {len(only.sample)} shown" if only.count > len(only.sample) else ""
        parts.append(f'<h3 class=side>pairs only in {side.upper()} <small>({only.count}{shown})</small></h3>'
                     f'<div class="gallery small" id=only-in-{side}>{cards or "<p>none</p>"}</div>')
    return "".join(parts)
