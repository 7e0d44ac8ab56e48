"""Mask–entity matching: cost fusion over scales, Hungarian assignment, confidence filters. numpy/scipy only.

Uni-OVSeg (Eq. 6–7): C = 1 − cos(region, entity) at each image scale, averaged over scales, then a bipartite
matching on the rectangular masks × entities matrix. OVSeg's per-entity argmax is kept for comparison.
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.special import softmax

from mining.config import MatchConfig
from mining.records import Pair


def similarity_per_scale(regions: list[np.ndarray], entities: np.ndarray) -> np.ndarray:
    """float[S, N, E] cosine similarities of L2-normalised float[N, D] regions (one per scale) and float[E, D]
    entities."""
    return np.stack([r @ entities.T for r in regions])


def fused_cost(similarities: np.ndarray) -> np.ndarray:
    """float[N, E] cost: 1 − cosine, averaged over the scale axis of float[S, N, E]."""
    return (1.0 - similarities).mean(0)


def hungarian(cost: np.ndarray, counts: list[int] | None = None) -> list[tuple[int, int]]:
    """Minimum-cost (mask, entity) assignment of a rectangular cost, each mask used once. An entity with a
    count ("two circles") takes up to that many masks: its column is repeated `count` times."""
    columns = [e for e, n in enumerate(counts or [1] * cost.shape[1]) for _ in range(n)]
    rows, cols = linear_sum_assignment(cost[:, columns])
    return sorted((int(r), columns[c]) for r, c in zip(rows, cols))


def per_entity_argmax(cost: np.ndarray) -> list[tuple[int, int]]:
    """OVSeg: each entity takes its best mask; a mask may serve several entities."""
    return [(int(np.argmin(cost[:, e])), e) for e in range(cost.shape[1])]


def score_pairs(similarities: np.ndarray, assignment: list[tuple[int, int]], temperature: float) -> list[Pair]:
    """The evidence behind each assigned pair.

    margin: fused similarity minus the entity's next-best mask not assigned to it (how unambiguous the mask
    is for the noun);
    probability: softmax of the mask's similarities over the image's entities (how unambiguous the noun is
    for the mask).
    """
    fused = similarities.mean(0)                       # [N, E]
    probs = softmax(fused / temperature, axis=1)
    taken: dict[int, list[int]] = {}
    for m, e in assignment:
        taken.setdefault(e, []).append(m)
    pairs = []
    for m, e in assignment:
        others = np.delete(fused[:, e], taken[e])      # the entity's own other instances are no rivals
        margin = float(fused[m, e] - others.max()) if len(others) else float(fused[m, e] + 1.0)
        pairs.append(Pair(m, e, float(fused[m, e]), margin, float(probs[m, e]),
                                [float(s) for s in similarities[:, m, e]]))
    return pairs


def match(regions: list[np.ndarray], entities: np.ndarray, cfg: MatchConfig,
          counts: list[int] | None = None) -> list[Pair]:
    """Confident pairs of one image, best first. `counts`: instances each entity's caption counts, used by
    Hungarian matching when `cfg.use_counts`."""
    if len(entities) == 0 or len(regions[0]) == 0:
        return []
    sims = similarity_per_scale(regions, entities)
    cost = fused_cost(sims)
    if cfg.method == "hungarian":
        assignment = hungarian(cost, counts if cfg.use_counts else None)
    else:
        assignment = per_entity_argmax(cost)
    kept = [p for p in score_pairs(sims, assignment, cfg.temperature)
            if p.similarity >= cfg.min_similarity and p.margin >= cfg.min_margin
            and p.probability >= cfg.min_probability]
    return sorted(kept, key=lambda p: -p.similarity)
