"""Mask–entity matching: cost fusion over scales, Hungarian assignment, confidence filters. numpy/scipy only.

Uni-OVSeg (Eq. 6–7): C = 1 − cos(region, entity) at each image scale, averaged over scales, then a bipartite
matching on the rectangular masks × entities matrix. OVSeg's per-entity argmax is kept for comparison.

The confidence of an assigned pair must judge the pair the way it was chosen. A margin over "the entity's
next-best mask" ignores that Hungarian may have given that mask to another entity that needs it more, so it
would veto exactly the conflicts Hungarian resolves. Hence the margin here is the assignment's **regret**:
how much the total cost of the best assignment rises when this one pair is forbidden. For per-entity argmax
(independent problems, one per entity) that is the old margin: best mask minus the entity's next-best.
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


def entity_columns(n_entities: int, counts: list[int] | None = None) -> list[int]:
    """The entity of each column of the expanded cost: an entity with a count ("two circles") gets that many
    columns, so Hungarian can give it that many masks."""
    return [e for e, n in enumerate(counts or [1] * n_entities) for _ in range(n)]


def hungarian(cost: np.ndarray, counts: list[int] | None = None) -> list[tuple[int, int]]:
    """Minimum-cost (mask, entity) assignment of a rectangular cost, each mask used once. An entity with a
    count ("two circles") takes up to that many masks: its column is repeated `count` times."""
    columns = entity_columns(cost.shape[1], counts)
    rows, cols = linear_sum_assignment(cost[:, columns])
    return sorted((int(r), columns[c]) for r, c in zip(rows, cols))


def per_entity_argmax(cost: np.ndarray) -> list[tuple[int, int]]:
    """OVSeg: each entity takes its best mask; a mask may serve several entities."""
    return [(int(np.argmin(cost[:, e])), e) for e in range(cost.shape[1])]


def hungarian_regret(cost: np.ndarray, assignment: list[tuple[int, int]],
                     counts: list[int] | None = None) -> list[float | None]:
    """Per assigned (mask, entity) pair: the rise in total cost of the best assignment that may not pair that
    mask with that entity (≥ 0, in cosine units). None when no such assignment exists (the entity holds every
    mask: there is no rival to compare with).

    Worked case: sims A–e1 0.9, B–e1 0.5, A–e2 0.8, B–e2 0.3. Hungarian gives A to e2 and B to e1 (1.3 > 1.2);
    forbidding either pair forces the other assignment, so both pairs have regret 0.1, where the entity-wise
    margin would call B–e1 −0.4 and drop it."""
    columns = np.asarray(entity_columns(cost.shape[1], counts))
    expanded = cost[:, columns]
    best = sum(cost[m, e] for m, e in assignment)
    forbidden_cost = float(np.abs(expanded).sum() + 1.0)    # dearer than any assignment that avoids it
    regrets: list[float | None] = []
    for m, e in assignment:
        trial = expanded.copy()
        trial[m, columns == e] = forbidden_cost
        rows, cols = linear_sum_assignment(trial)
        if any(r == m and columns[c] == e for r, c in zip(rows, cols)):
            regrets.append(None)   # every alternative needs the forbidden pair
        else:
            regrets.append(max(0.0, float(trial[rows, cols].sum() - best)))
    return regrets


def argmax_regret(cost: np.ndarray, assignment: list[tuple[int, int]]) -> list[float | None]:
    """Per-entity argmax solves one problem per entity: the regret of its pair is its next-best mask's cost
    minus its best (None when it has one mask)."""
    regrets: list[float | None] = []
    for m, e in assignment:
        others = np.delete(cost[:, e], m)
        regrets.append(float(others.min() - cost[m, e]) if len(others) else None)
    return regrets


def mask_probability(fused: np.ndarray, assignment: list[tuple[int, int]], logit_scale: float) -> list[float | None]:
    """Per pair, softmax over the entity's candidate masks of logit_scale × similarity (CLIP's own
    classification rule, turned around: which mask is this noun?). The entity's other assigned instances are
    not candidates; None when the mask is the only candidate. Unlike a softmax over the image's entities, it
    has the same meaning whatever the number of entities."""
    taken: dict[int, list[int]] = {}
    for m, e in assignment:
        taken.setdefault(e, []).append(m)
    probs: list[float | None] = []
    for m, e in assignment:
        candidates = [i for i in range(fused.shape[0]) if i == m or i not in taken[e]]
        if len(candidates) == 1:
            probs.append(None)
            continue
        p = softmax(logit_scale * fused[candidates, e])
        probs.append(float(p[candidates.index(m)]))
    return probs


def score_pairs(similarities: np.ndarray, assignment: list[tuple[int, int]], margins: list[float | None],
                logit_scale: float) -> list[Pair]:
    """The evidence behind each assigned pair: fused similarity, the regret margin, the mask probability."""
    fused = similarities.mean(0)                       # [N, E]
    probs = mask_probability(fused, assignment, logit_scale)
    return [Pair(m, e, float(fused[m, e]), margin, prob, [float(s) for s in similarities[:, m, e]])
            for (m, e), margin, prob in zip(assignment, margins, probs)]


def rejection(pair: Pair, cfg: MatchConfig) -> str | None:
    """The first filter `pair` fails, said with its value ("similarity 0.183 < match.min_similarity 0.2"), or
    None. A filter set to None is off. A pair without a rival (margin/probability None) has no evidence against
    it: only the similarity filter applies to it."""
    for name, value in (("similarity", pair.similarity), ("margin", pair.margin), ("probability", pair.probability)):
        floor = getattr(cfg, f"min_{name}")
        if floor is not None and value is not None and value < floor:
            return f"{name} {value:.3f} < match.min_{name} {floor:g}"
    return None


def _stronger(a: float | None, b: float | None) -> bool:
    """Whether regret `a` is stronger evidence than `b` (None, no rival at all, is the strongest)."""
    return a is None or (b is not None and a > b)


def per_caption_hungarian(cost: np.ndarray, counts: list[int] | None,
                          mentions: list[list[int]]) -> tuple[list[tuple[int, int]], list[float | None]]:
    """Hungarian assignment solved once per caption over the entities that caption names: within a caption a
    mask goes to one entity, but two captions may give it two words. Two captions often name one thing twice
    ("grass", "lawn"); one-to-one across them would force the second word onto a wrong mask, and make both
    pairs look doubtful (either word could take the mask at little cost).

    A pair found in several captions keeps its strongest regret; an entity named in several captions keeps at
    most `count` masks, the strongest first."""
    counts = counts or [1] * cost.shape[1]
    regret: dict[tuple[int, int], float | None] = {}
    for caption in sorted({c for ms in mentions for c in ms}):
        members = [e for e, ms in enumerate(mentions) if caption in ms]
        sub_counts = [counts[e] for e in members]
        local = hungarian(cost[:, members], sub_counts)
        for (m, e), r in zip(local, hungarian_regret(cost[:, members], local, sub_counts)):
            key = (m, members[e])
            if key not in regret or _stronger(r, regret[key]):
                regret[key] = r
    kept: list[tuple[int, int]] = []
    for e in range(cost.shape[1]):
        mine = sorted((k for k in regret if k[1] == e), key=lambda k: (regret[k] is not None, -(regret[k] or 0)))
        kept += mine[:counts[e]]
    kept.sort()
    return kept, [regret[k] for k in kept]


def match(regions: list[np.ndarray], entities: np.ndarray, cfg: MatchConfig,
          counts: list[int] | None = None, logit_scale: float = 100.0,
          mentions: list[list[int]] | None = None, rejected: list[tuple[Pair, str]] | None = None) -> list[Pair]:
    """Confident pairs of one image, best first. `counts`: instances each entity's caption counts, used by
    Hungarian matching when `cfg.use_counts`; `logit_scale`: the region model's (CLIP's is 100), used unless
    `cfg.temperature` is set; `mentions`: the captions naming each entity, for `cfg.one_to_one`
    'per_caption' (None: one caption names them all); `rejected`, if given, receives each assigned pair a filter
    turned away, with why."""
    if len(entities) == 0 or len(regions[0]) == 0:
        return []
    sims = similarity_per_scale(regions, entities)
    cost = fused_cost(sims)
    if cfg.method == "hungarian":
        counts = counts if cfg.use_counts else None
        if cfg.one_to_one == "per_caption" and mentions is not None:
            assignment, margins = per_caption_hungarian(cost, counts, mentions)
        else:
            assignment = hungarian(cost, counts)
            margins = hungarian_regret(cost, assignment, counts)
    else:
        assignment = per_entity_argmax(cost)
        margins = argmax_regret(cost, assignment)
    scale = 1.0 / cfg.temperature if cfg.temperature is not None else logit_scale
    kept = []
    for pair in score_pairs(sims, assignment, margins, scale):
        why = rejection(pair, cfg)
        if why is None:
            kept.append(pair)
        elif rejected is not None:
            rejected.append((pair, why))
    return sorted(kept, key=lambda p: -p.similarity)
