"""How far two mining runs over the same input agree: the same pair is the same image and noun with masks at
IoU >= `iou` (reduced precision moves a mask's border by a few pixels, not which object it is)."""
from __future__ import annotations

from collections import defaultdict
from typing import Any

from mining import masks as rle
from mining.sinks.reader import read_pairs
from mining.storage import Where


def _pairs_by_noun(output: Where) -> dict[tuple[str, str, str], list[dict]]:
    table = read_pairs(output).select(["shard", "key", "noun", "height", "width", "rle_counts"]).to_pylist()
    grouped: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
    for row in table:
        grouped[(row["shard"], row["key"], row["noun"])].append(
            {"size": [row["height"], row["width"]], "counts": row["rle_counts"]})
    return grouped


def pair_agreement(reference: Where, other: Where, iou: float = 0.9) -> dict[str, Any]:
    """{reference_pairs, other_pairs, same, agreement}: `same` pairs are matched one to one within an image and
    noun, best overlap first; `agreement` is same / the larger run's pairs (1.0: identical, up to `iou`)."""
    ref, oth = _pairs_by_noun(reference), _pairs_by_noun(other)
    same = 0
    for group, masks in ref.items():
        theirs = oth.get(group, [])
        if not theirs:
            continue
        overlaps = rle.iou(masks, theirs)
        while overlaps.size and overlaps.max() >= iou:
            i, j = divmod(int(overlaps.argmax()), overlaps.shape[1])
            same += 1
            overlaps[i, :] = overlaps[:, j] = -1
    n_ref, n_oth = sum(map(len, ref.values())), sum(map(len, oth.values()))
    larger = max(n_ref, n_oth)
    return {"reference_pairs": n_ref, "other_pairs": n_oth, "same": same,
            "agreement": round(same / larger, 4) if larger else 1.0}
