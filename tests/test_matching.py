import itertools

import numpy as np
import pytest

from mining.config import MatchConfig
from mining.matching import fused_cost, hungarian, match, per_entity_argmax, score_pairs, similarity_per_scale


def brute_force(cost: np.ndarray) -> float:
    n, e = cost.shape
    if n >= e:
        return min(sum(cost[rows[j], j] for j in range(e)) for rows in itertools.permutations(range(n), e))
    return min(sum(cost[i, cols[i]] for i in range(n)) for cols in itertools.permutations(range(e), n))


@pytest.mark.parametrize("shape", [(3, 3), (5, 2), (2, 5), (6, 4), (1, 4)])
def test_hungarian_matches_brute_force(shape):
    rng = np.random.default_rng(sum(shape))
    for _ in range(20):
        cost = rng.random(shape)
        pairs = hungarian(cost)
        assert len(pairs) == min(shape)
        assert len({m for m, _ in pairs}) == len(pairs) == len({e for _, e in pairs})
        assert sum(cost[m, e] for m, e in pairs) == pytest.approx(brute_force(cost))


def test_hungarian_beats_greedy_on_a_known_case():
    # entity 0 prefers mask 0 slightly, entity 1 needs mask 0 badly: one-to-one must give mask 0 to entity 1
    cost = np.array([[0.10, 0.20], [0.15, 0.90]])
    assert sorted(hungarian(cost)) == [(0, 1), (1, 0)]
    assert per_entity_argmax(cost) == [(0, 0), (0, 1)]


def test_counted_entity_takes_as_many_masks_as_its_caption_says():
    # masks 0 and 2 are the two circles; mask 1 is the square
    cost = np.array([[0.1, 0.9], [0.8, 0.2], [0.15, 0.7]])
    assert hungarian(cost) == [(0, 0), (1, 1)]
    assert hungarian(cost, counts=[2, 1]) == [(0, 0), (1, 1), (2, 0)]
    rng = np.random.default_rng(0)
    for _ in range(10):   # a count is the same as that many copies of the entity
        cost = rng.random((6, 3))
        pairs = hungarian(cost, counts=[2, 1, 2])
        assert len(pairs) == 5 and len({m for m, _ in pairs}) == 5
        assert sum(cost[m, e] for m, e in pairs) == pytest.approx(brute_force(cost[:, [0, 0, 1, 2, 2]]))
    sims = 1 - np.array([[0.1, 0.9], [0.8, 0.2], [0.15, 0.7]])[None]
    pairs = match([sims[0] / np.linalg.norm(sims[0], axis=1, keepdims=True)], np.eye(2),
                  MatchConfig(min_similarity=-1, min_margin=0.0), counts=[2, 1])
    assert sorted((p.mask_index, p.entity_index) for p in pairs) == [(0, 0), (1, 1), (2, 0)]
    no_counts = match([sims[0] / np.linalg.norm(sims[0], axis=1, keepdims=True)], np.eye(2),
                      MatchConfig(min_similarity=-1, use_counts=False), counts=[2, 1])
    assert len(no_counts) == 2


def test_margin_ignores_the_entitys_own_other_instances():
    fused = np.array([[0.9, 0.0], [0.85, 0.0], [0.3, 0.8]])
    pairs = score_pairs(fused[None], [(0, 0), (1, 0), (2, 1)], temperature=0.01)
    # each circle's rival is the square's mask (0.3), not the other circle
    assert [round(p.margin, 3) for p in pairs] == [0.6, 0.55, 0.8]


def test_multiscale_fusion_averages_costs():
    r1 = np.array([[1.0, 0.0], [0.0, 1.0]])
    r2 = np.array([[0.6, 0.8], [0.0, 1.0]])
    entities = np.array([[1.0, 0.0], [0.0, 1.0]])
    sims = similarity_per_scale([r1, r2], entities)
    assert sims.shape == (2, 2, 2)
    np.testing.assert_allclose(fused_cost(sims), [[1 - 0.8, 1 - 0.4], [1.0, 0.0]])


def test_scores_margin_and_probability():
    sims = np.array([[[0.9, 0.1], [0.5, 0.2], [0.3, 0.8]]])   # 1 scale, 3 masks, 2 entities
    pairs = score_pairs(sims, [(0, 0), (2, 1)], temperature=0.1)
    assert pairs[0].similarity == pytest.approx(0.9)
    assert pairs[0].margin == pytest.approx(0.9 - 0.5)
    assert pairs[1].margin == pytest.approx(0.8 - 0.2)
    expected = np.exp(0.9 / 0.1) / (np.exp(0.9 / 0.1) + np.exp(0.1 / 0.1))
    assert pairs[0].probability == pytest.approx(expected)
    assert pairs[0].scale_similarities == [pytest.approx(0.9)]


def _unit(v):
    v = np.asarray(v, float)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def test_filters_drop_weak_pairs():
    regions = [_unit([[1, 0, 0], [0.7, 0.7, 0], [0, 0, 1]])]
    entities = _unit([[1, 0.05, 0], [0, 1, 0]])
    everything = match(regions, entities, MatchConfig(min_similarity=-1, min_margin=0, min_probability=0))
    assert {(p.mask_index, p.entity_index) for p in everything} == {(0, 0), (1, 1)}
    strict = match(regions, entities, MatchConfig(min_similarity=0.9, min_margin=0, min_probability=0))
    assert [(p.mask_index, p.entity_index) for p in strict] == [(0, 0)]
    by_margin = match(regions, entities, MatchConfig(min_similarity=-1, min_margin=0.5, min_probability=0))
    assert [(p.mask_index, p.entity_index) for p in by_margin] == [(1, 1)]
    by_prob = match(regions, entities, MatchConfig(min_similarity=-1, min_margin=0, min_probability=0.99,
                                                   temperature=0.01))
    assert [(p.mask_index, p.entity_index) for p in by_prob] == [(0, 0)]


def test_argmax_method_lets_masks_repeat():
    regions = [_unit([[1, 0], [0.1, 1]])]
    entities = _unit([[1, 0.1], [1, 0.2]])
    pairs = match(regions, entities, MatchConfig(method="argmax", min_similarity=-1, min_margin=0))
    assert {p.mask_index for p in pairs} == {0} and len(pairs) == 2
    assert match(regions, np.zeros((0, 2)), MatchConfig()) == []
