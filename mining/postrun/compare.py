"""Two outputs side by side (`ovmine stats A --compare B`): before and after curate, or two configs.

Totals, drops by reason and per-noun pair counts; nouns are ranked by their larger count, so a noun that
vanished or appeared shows as readily as one that grew.
"""
from __future__ import annotations

from typing import Any

TOTALS = ("images_in", "images_with_pairs", "pairs", "pairs_per_image", "unique_nouns", "dropped",
          "similarity_mean", "images_per_second")


def _total(stats: dict[str, Any], name: str) -> float | int | None:
    if name == "dropped":
        return sum(stats["drops"].values())
    if name == "similarity_mean":
        return stats["distributions"]["similarity"]["mean"]
    return stats[name]


def compare_stats(a: dict[str, Any], b: dict[str, Any], top_k: int = 20) -> dict[str, Any]:
    """The comparison of two `compute_stats(..., keep_pair_stats=True)` results (JSON-ready)."""
    nouns_a, nouns_b = a["_pair_stats"].nouns, b["_pair_stats"].nouns
    union = sorted(set(nouns_a) | set(nouns_b), key=lambda n: (-max(nouns_a[n], nouns_b[n]), n))
    reasons = sorted(set(a["drops"]) | set(b["drops"]),
                     key=lambda r: (-max(a["drops"].get(r, 0), b["drops"].get(r, 0)), r))
    only_a = sorted(set(nouns_a) - set(nouns_b), key=lambda n: (-nouns_a[n], n))
    only_b = sorted(set(nouns_b) - set(nouns_a), key=lambda n: (-nouns_b[n], n))
    return {
        "a": a["output"], "b": b["output"], "config_hash": [a["config_hash"], b["config_hash"]],
        "totals": {name: [_total(a, name), _total(b, name)] for name in TOTALS},
        "drops": {reason: [a["drops"].get(reason, 0), b["drops"].get(reason, 0)] for reason in reasons},
        "nouns": [{"noun": n, "a": nouns_a[n], "b": nouns_b[n]} for n in union[:top_k]],
        "nouns_only_in_a": {"count": len(only_a), "top": only_a[:10]},
        "nouns_only_in_b": {"count": len(only_b), "top": only_b[:10]},
    }


def cell_text(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def change_text(a: Any, b: Any) -> str:
    if a is None or b is None:
        return ""
    change = b - a
    return f"{change:+.3f}" if isinstance(change, float) else f"{change:+d}"


def format_compare(comparison: dict[str, Any]) -> str:
    """The terminal table: A, B and the change (B - A) per row."""
    lines = [f"A {comparison['a']}  (config {comparison['config_hash'][0]})",
             f"B {comparison['b']}  (config {comparison['config_hash'][1]})",
             f"  {'':<22}{'A':>10}{'B':>10}{'B - A':>10}"]

    def row(name: str, pair: list[Any], indent: int = 2) -> str:
        return (f"{' ' * indent}{name:<{24 - indent}}{cell_text(pair[0]):>10}{cell_text(pair[1]):>10}"
                f"{change_text(*pair):>10}")

    lines += [row(name.replace("_", " "), pair) for name, pair in comparison["totals"].items()]
    if comparison["drops"]:
        lines.append("  dropped by reason")
        lines += [row(reason, pair, 4) for reason, pair in comparison["drops"].items()]
    if comparison["nouns"]:
        lines.append("  pairs per noun")
        lines += [row(n["noun"], [n["a"], n["b"]], 4) for n in comparison["nouns"]]
    for side in ("a", "b"):
        only = comparison[f"nouns_only_in_{side}"]
        if only["count"]:
            lines.append(f"  nouns only in {side.upper()}: {only['count']} ({', '.join(only['top'])}"
                         f"{', ...' if only['count'] > len(only['top']) else ''})")
    return "\n".join(lines)
