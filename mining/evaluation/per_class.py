"""Per-class figures of several models side by side: region top-1 on the ground-truth masks and the precision
and recall of the pairs each model mined, taken from `ovmine eval --region-top1`'s report (so the table says
exactly what that command prints), with means over the things and over the stuff."""
from __future__ import annotations

from typing import Any

FIGURES = ("top1", "precision", "recall")


def class_figures(report: dict[str, Any]) -> dict[str, Any]:
    """The overall and per-category figures of one `evaluate(..., region_top1=True)` report."""
    per = report["per_category"]
    top1 = report["region_top1"]["per_category"]
    return {"precision": report["precision"], "recall": report["recall"], "top1": report["region_top1"]["top1"],
            "per_category": {c: {"top1": top1.get(c), "precision": per.get(c, {}).get("precision"),
                                 "recall": per.get(c, {}).get("recall")}
                             for c in dict.fromkeys([*top1, *per])}}


def mean(values: list[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def _cell(value: float | None) -> str:
    return f"{'-' if value is None else f'{value:.1%}':>11}"


def class_table(models: dict[str, dict[str, Any]], groups: dict[str, list[str]]) -> str:
    """A block per figure: a row per category of each group (e.g. things, stuff), the group's mean, and the
    overall figure; a column per model (`class_figures` of each)."""
    lines = []
    width = max(10, *(len("mean " + group) for group in groups))
    for figure in FIGURES:
        lines.append(f"{figure:<{width + 2}}" + "".join(f"{m:>11}" for m in models))
        for group, names in groups.items():
            for name in names:
                lines.append(f"  {name:<{width}}" + "".join(_cell(f["per_category"].get(name, {}).get(figure))
                                                            for f in models.values()))
            lines.append(f"  {'mean ' + group:<{width}}" + "".join(
                _cell(mean([f["per_category"].get(n, {}).get(figure) for n in names])) for f in models.values()))
        lines.append(f"  {'overall':<{width}}" + "".join(_cell(f[figure]) for f in models.values()))
        lines.append("")
    return "\n".join(lines)
