"""How good is an output that has no ground truth? A curator marks pairs right or wrong in the report's explorer
and saves an audit file; this module turns it into estimated precision per noun, with confidence intervals, and
into a deny-list for `ovmine curate --audit FILE --min-precision P`.

The explorer holds a uniform sample of each noun's pairs in a shuffled order, so marks made in that order are a
random sample of the noun: its precision is estimated by the share marked right, with a Wilson interval (exact
when every pair of the noun is marked). The output's precision over the audited nouns is the estimate weighted by
each noun's pairs (a stratified sample), and the text says how many of the output's pairs those nouns hold.
"""
from __future__ import annotations

import json
import math
from collections import Counter
from typing import Any

import jsonschema
from scipy.stats import binomtest

from mining.schemas import validator
from mining.storage import Location, Where

AUDIT_KIND = "ovmine.audit/1"


def read_audit(uri: Where, flag: str = "--audit") -> dict[str, Any]:
    """The audit file the report saves, checked; every problem is one line naming the flag and the file."""
    try:
        doc = json.loads(Location.of(uri).read())
    except FileNotFoundError:
        raise ValueError(f"{flag} {uri}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{flag} {uri}: not a JSON audit file ({err})") from None
    if not isinstance(doc, dict) or doc.get("kind") != AUDIT_KIND:
        raise ValueError(f"{flag} {uri}: not an audit file saved by an ovmine report (expected kind {AUDIT_KIND!r})")
    error = jsonschema.exceptions.best_match(validator("audit").iter_errors(doc))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "the file"
        raise ValueError(f"{flag} {uri}: {where}: {error.message} (see schemas/audit.v1.schema.json)")
    return doc


def check_output(audit: dict[str, Any], manifest: dict[str, Any], output: Where, uri: Where,
                 flag: str = "--audit") -> None:
    """Marks name pairs of one output: an audit made on another config's output says whose it is."""
    if audit.get("config_hash") != manifest.get("config_hash"):
        raise ValueError(f"{flag} {uri} marks the pairs of {audit.get('output')} (config {audit.get('config_hash')}), "
                         f"not of {output} (config {manifest.get('config_hash')})")


def _interval(right: int, marked: int, population: int, level: float) -> tuple[float, float]:
    if marked >= population:   # every pair of the noun marked: its precision is known
        return right / marked, right / marked
    ci = binomtest(right, marked).proportion_ci(level, method="wilson")
    return float(ci.low), float(ci.high)


def estimate(audit: dict[str, Any], pairs_per_noun: dict[str, int], level: float = 0.95) -> dict[str, Any]:
    """Estimated precision per audited noun (`pairs_per_noun`: the output's pairs of each noun) and over the
    audited nouns. A pair marked twice counts once, with its last mark; marks of nouns the output lacks are
    counted apart, not estimated."""
    last: dict[tuple, str] = {}
    for mark in audit["marks"]:
        last[(mark["shard"], mark["key"], mark["mask"], mark["noun"])] = mark["verdict"]
    tallies: dict[str, Counter[str]] = {}
    foreign = 0
    for (_, _, _, noun), verdict in last.items():
        if noun not in pairs_per_noun:
            foreign += 1
            continue
        tallies.setdefault(noun, Counter())[verdict] += 1
    rows = []
    for noun, t in sorted(tallies.items(), key=lambda kv: (-pairs_per_noun[kv[0]], kv[0])):
        marked = t["right"] + t["wrong"]
        low, high = _interval(t["right"], marked, pairs_per_noun[noun], level)
        rows.append({"noun": noun, "pairs": pairs_per_noun[noun], "marked": marked, "right": t["right"],
                     "precision": round(t["right"] / marked, 4), "interval": [round(low, 4), round(high, 4)]})
    covered = sum(r["pairs"] for r in rows)
    total = sum(pairs_per_noun.values())
    overall = None
    if covered:
        # stratified: each noun's share of the audited pairs times its estimate; the spread from each noun's
        # Agresti-Coull-adjusted variance with the finite-population correction (all marked: no spread)
        weights = [r["pairs"] / covered for r in rows]
        value = sum(w * r["right"] / r["marked"] for w, r in zip(weights, rows))
        variance = sum(w * w * _adjusted(r["right"], r["marked"]) / (r["marked"] + 4) * (1 - r["marked"] / r["pairs"])
                       for w, r in zip(weights, rows))
        z = _z(level)
        spread = z * math.sqrt(variance)
        overall = {"precision": round(value, 4),
                   "interval": [round(max(0.0, value - spread), 4), round(min(1.0, value + spread), 4)],
                   "nouns": len(rows), "pairs": covered, "share_of_pairs": round(covered / total, 4) if total else None}
    return {"level": level, "marks": len(last), "marks_of_other_nouns": foreign, "nouns": rows, "overall": overall,
            "method": "per noun: share marked right, Wilson interval (exact when all its pairs are marked); "
                      "overall: weighted by each audited noun's pairs; assumes each noun's marks are a random "
                      "sample of its pairs (the report's sample order)"}


def _adjusted(right: int, marked: int) -> float:
    p = (right + 2) / (marked + 4)
    return p * (1 - p)


def _z(level: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(0.5 + level / 2))


def deny_list(estimates: dict[str, Any], min_precision: float) -> list[str]:
    """The audited nouns whose estimated precision is below `min_precision`."""
    return sorted(r["noun"] for r in estimates["nouns"] if r["precision"] < min_precision)


def format_audit(estimates: dict[str, Any]) -> str:
    """The terminal table of `ovmine stats RUN --audit FILE`."""
    level = f"{100 * estimates['level']:.0f}%"
    lines = [f"audit: {estimates['marks']} pairs marked"
             + (f" ({estimates['marks_of_other_nouns']} of nouns this output lacks, left out)"
                if estimates["marks_of_other_nouns"] else "")]
    overall = estimates["overall"]
    if overall is None:
        return lines[0] + "\n  no marked pair of this output's nouns"
    low, high = overall["interval"]
    share = overall["share_of_pairs"]
    lines.append(f"  estimated precision {100 * overall['precision']:.1f}% ({level} interval {100 * low:.1f}-"
                 f"{100 * high:.1f}%) over {overall['nouns']} audited nouns holding {overall['pairs']} pairs"
                 + (f" ({100 * share:.1f}% of the output's)" if share is not None else ""))
    lines.append(f"  {'noun':<20}{'pairs':>8}{'marked':>8}{'right':>7}{'precision':>11}  {level} interval")
    for r in estimates["nouns"]:
        low, high = r["interval"]
        lines.append(f"  {r['noun'][:19]:<20}{r['pairs']:>8}{r['marked']:>8}{r['right']:>7}"
                     f"{100 * r['precision']:>10.1f}%  {100 * low:.1f}-{100 * high:.1f}%")
    return "\n".join(lines)
