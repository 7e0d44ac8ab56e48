import itertools

import numpy as np
import pytest

from mining.config import MatchConfig
from mining.matching import (argmax_regret, fused_cost, hungarian, hungarian_regret, match, mask_probability,
                             per_entity_argmax, similarity_per_scale)


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
                  MatchConfig(min_similarity=None), counts=[2, 1])
    assert sorted((p.mask_index, p.entity_index) for p in pairs) == [(0, 0), (1, 1), (2, 0)]
    no_counts = match([sims[0] / np.linalg.norm(sims[0], axis=1, keepdims=True)], np.eye(2),
                      MatchConfig(min_similarity=None, use_counts=False), counts=[2, 1])
    assert len(no_counts) == 2


def test_multiscale_fusion_averages_costs():
    r1 = np.array([[1.0, 0.0], [0.0, 1.0]])
    r2 = np.array([[0.6, 0.8], [0.0, 1.0]])
    entities = np.array([[1.0, 0.0], [0.0, 1.0]])
    sims = similarity_per_scale([r1, r2], entities)
    assert sims.shape == (2, 2, 2)
    np.testing.assert_allclose(fused_cost(sims), [[1 - 0.8, 1 - 0.4], [1.0, 0.0]])


def _unit(v):
    v = np.asarray(v, float)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def test_margin_ignores_the_entitys_own_other_instances():
    # masks 0 and 1 are the two circles, mask 2 the square: a circle's rival is the square's mask, not its twin
    cost = 1 - np.array([[0.9, 0.0], [0.85, 0.0], [0.3, 0.8]])
    assignment = hungarian(cost, counts=[2, 1])
    assert assignment == [(0, 0), (1, 0), (2, 1)]
    # forbidding circle-mask 0 gives the circle mask 2 and the square mask 0: 0.9+0.8 -> 0.3+0.0
    assert hungarian_regret(cost, assignment, counts=[2, 1]) == pytest.approx([1.4, 1.35, 0.8 + 0.85 - 0.3])


def _regret_by_brute_force(cost, counts, pair):
    """Best total cost over all assignments of min(N, columns) pairs that avoid `pair`, minus the best."""
    columns = [e for e, n in enumerate(counts) for _ in range(n)]
    n, k = cost.shape[0], len(columns)
    totals, allowed = [], []
    if n >= k:
        options = [list(zip(rows, range(k))) for rows in itertools.permutations(range(n), k)]
    else:
        options = [list(zip(range(n), cols)) for cols in itertools.permutations(range(k), n)]
    for option in options:
        total = sum(cost[r, columns[c]] for r, c in option)
        totals.append(total)
        if all((r, columns[c]) != pair for r, c in option):
            allowed.append(total)
    return (min(allowed) - min(totals)) if allowed else None


@pytest.mark.parametrize("shape,counts", [((4, 3), [1, 1, 1]), ((3, 4), [1, 1, 1, 1]), ((5, 2), [2, 1]),
                                          ((2, 2), [1, 1]), ((1, 1), [1]), ((2, 1), [2])])
def test_regret_is_the_cost_of_the_best_assignment_without_the_pair(shape, counts):
    rng = np.random.default_rng(shape[0] * 10 + shape[1])
    for _ in range(10):
        cost = rng.random(shape)
        assignment = hungarian(cost, counts)
        got = hungarian_regret(cost, assignment, counts)
        want = [_regret_by_brute_force(cost, counts, pair) for pair in assignment]
        assert [g is None for g in got] == [w is None for w in want]
        assert [g for g in got if g is not None] == pytest.approx([w for w in want if w is not None])
        assert all(g is None or g >= 0 for g in got)


def test_hungarian_conflict_keeps_both_pairs_where_entity_margins_would_drop_one():
    # sims: mask A-dog 0.9, B-dog 0.5, A-cat 0.8, B-cat 0.3. Hungarian: A->cat, B->dog (1.3 beats 1.2).
    sims = np.array([[0.9, 0.8], [0.5, 0.3]])
    cost = 1 - sims
    assignment = hungarian(cost)
    assert assignment == [(0, 1), (1, 0)]
    # the only alternative is A->dog, B->cat: both pairs cost 0.1 to give up; the old entity-wise margin
    # called B->dog 0.5 - 0.9 = -0.4 and dropped it even at min_margin 0
    assert hungarian_regret(cost, assignment) == pytest.approx([0.1, 0.1])
    kept = match([sims], np.eye(2), MatchConfig(min_similarity=None, min_margin=0.05))
    assert sorted((p.mask_index, p.entity_index) for p in kept) == [(0, 1), (1, 0)]
    assert match([sims], np.eye(2), MatchConfig(min_similarity=None, min_margin=0.2)) == []


def test_hungarian_keeps_at_least_the_right_pairs_argmax_keeps_at_one_threshold():
    # three masks, two entities that both like mask 0 best: argmax gives mask 0 to both (one is wrong),
    # Hungarian gives entity 1 its own mask 2; at the same margin threshold Hungarian keeps that pair too
    sims = np.array([[0.9, 0.85], [0.4, 0.3], [0.35, 0.7]])
    cfg = dict(min_similarity=None, min_margin=0.1)
    hung = match([sims], np.eye(2), MatchConfig(**cfg))
    arg = match([sims], np.eye(2), MatchConfig(method="argmax", **cfg))
    assert sorted((p.mask_index, p.entity_index) for p in hung) == [(0, 0), (2, 1)]
    assert sorted((p.mask_index, p.entity_index) for p in arg) == [(0, 0), (0, 1)]
    assert [p.margin for p in sorted(arg, key=lambda p: p.entity_index)] == pytest.approx([0.5, 0.15])


def test_argmax_regret_is_the_margin_over_the_entitys_next_best_mask():
    cost = 1 - np.array([[0.9, 0.1], [0.5, 0.2], [0.3, 0.8]])
    assert argmax_regret(cost, per_entity_argmax(cost)) == pytest.approx([0.4, 0.6])
    assert argmax_regret(cost[:1], per_entity_argmax(cost[:1])) == [None, None]


def test_an_entity_with_no_rival_mask_has_no_margin_and_passes_the_margin_filter():
    sims = np.array([[0.5]])
    pairs = match([sims], np.eye(1), MatchConfig(min_similarity=0.2, min_margin=0.5, min_probability=0.9))
    assert len(pairs) == 1 and pairs[0].margin is None and pairs[0].probability is None
    assert match([sims], np.eye(1), MatchConfig(min_similarity=0.6)) == []


def test_probability_is_over_the_entitys_masks_and_ignores_other_entities():
    fused = np.array([[0.30, 0.0], [0.25, 0.0], [0.10, 0.9]])
    p_alone = mask_probability(fused[:, :1], [(0, 0)], logit_scale=100.0)[0]
    want = np.exp(30) / (np.exp(30) + np.exp(25) + np.exp(10))
    assert p_alone == pytest.approx(want)
    assert p_alone < 1.0, "one entity no longer means probability 1"
    # adding an unrelated entity does not change the dog's probability
    assert mask_probability(fused, [(0, 0), (2, 1)], logit_scale=100.0)[0] == pytest.approx(want)
    # the entity's own other instances are not candidates
    assert mask_probability(fused[:, :1], [(0, 0), (1, 0)], 100.0)[0] == pytest.approx(
        np.exp(30) / (np.exp(30) + np.exp(10)))
    # a lower logit scale (a less sure model) spreads the probability
    assert mask_probability(fused[:, :1], [(0, 0)], logit_scale=10.0)[0] < want


def test_probability_uses_the_models_logit_scale_unless_a_temperature_is_set():
    sims = np.array([[0.30], [0.25]])
    by_model = match([sims], np.eye(1), MatchConfig(min_similarity=None), logit_scale=20.0)[0].probability
    assert by_model == pytest.approx(1 / (1 + np.exp(-20 * 0.05)))
    fixed = match([sims], np.eye(1), MatchConfig(min_similarity=None, temperature=0.01), logit_scale=20.0)
    assert fixed[0].probability == pytest.approx(1 / (1 + np.exp(-100 * 0.05)))


def test_filters_drop_weak_pairs_and_each_can_be_switched_off():
    regions = [_unit([[1, 0, 0], [0.7, 0.7, 0], [0, 0, 1]])]
    entities = _unit([[1, 0.05, 0], [0, 1, 0]])
    off = dict(min_similarity=None, min_margin=None, min_probability=None)
    everything = match(regions, entities, MatchConfig(**off))
    assert {(p.mask_index, p.entity_index) for p in everything} == {(0, 0), (1, 1)}
    strict = match(regions, entities, MatchConfig(**(off | {"min_similarity": 0.9})))
    assert [(p.mask_index, p.entity_index) for p in strict] == [(0, 0)]
    # regrets: giving mask 0 up costs 0.999 - 0.741 + 0.707 = 0.965, mask 1 costs 0.707
    by_margin = match(regions, entities, MatchConfig(**(off | {"min_margin": 0.8})))
    assert [(p.mask_index, p.entity_index) for p in by_margin] == [(0, 0)]
    # entity 1 hesitates between masks 1 and 2 (0.30 vs 0.29): p = 0.73 at logit scale 100
    sims = np.array([[0.9, 0.2], [0.5, 0.30], [0.1, 0.29]])
    by_prob = match([sims], np.eye(2), MatchConfig(**(off | {"min_probability": 0.9, "temperature": 0.01})))
    assert [(p.mask_index, p.entity_index) for p in by_prob] == [(0, 0)]


def test_filters_are_off_only_when_null():
    assert MatchConfig(min_margin=None, min_similarity=None, min_probability=None).min_margin is None
    with pytest.raises(ValueError):
        MatchConfig(min_margin=-0.1)
    with pytest.raises(ValueError):
        MatchConfig(temperature=float("inf"))


def test_argmax_method_lets_masks_repeat():
    regions = [_unit([[1, 0], [0.1, 1]])]
    entities = _unit([[1, 0.1], [1, 0.2]])
    pairs = match(regions, entities, MatchConfig(method="argmax", min_similarity=None))
    assert {p.mask_index for p in pairs} == {0} and len(pairs) == 2
    assert match(regions, np.zeros((0, 2)), MatchConfig()) == []


def test_two_captions_may_give_one_mask_two_words_but_one_caption_may_not():
    # masks: 0 the lawn, 1 a star, 2 a sliver of sky. Caption 0 says "grass" and "star", caption 1 "lawn".
    sims = np.array([[0.80, 0.10, 0.78],
                     [0.20, 0.70, 0.21],
                     [0.30, 0.05, 0.31]])
    off = dict(min_similarity=None, min_margin=0.1)
    per_caption = match([sims], np.eye(3), MatchConfig(**off), mentions=[[0], [0], [1]])
    assert sorted((p.mask_index, p.entity_index) for p in per_caption) == [(0, 0), (0, 2), (1, 1)]
    # one-to-one over the image: "lawn" is pushed onto the sky, and grass vs lawn is a coin toss (regret 0.03)
    per_image = match([sims], np.eye(3), MatchConfig(**(off | {"one_to_one": "per_image"})), mentions=[[0], [0], [1]])
    assert sorted((p.mask_index, p.entity_index) for p in per_image) == [(1, 1)]
    everything = match([sims], np.eye(3), MatchConfig(min_similarity=None, one_to_one="per_image"))
    assert sorted((p.mask_index, p.entity_index) for p in everything) == [(0, 0), (1, 1), (2, 2)]


def test_a_caption_is_one_to_one_over_every_entity_it_names():
    # captions: 0 "a dog", 1 "a dog chasing a cat". Masks: 0 the dog, 1 the cat. CLIP likes the dog's mask
    # slightly better for "cat" too; caption 1 names both, so the cat must take its own mask
    sims = np.array([[0.9, 0.62], [0.2, 0.6]])
    pairs = match([sims], np.eye(2), MatchConfig(min_similarity=None), mentions=[[0, 1], [1]])
    assert sorted((p.mask_index, p.entity_index) for p in pairs) == [(0, 0), (1, 1)]


def test_an_entity_named_twice_keeps_its_count_of_masks_strongest_first():
    # caption 0 names only "dog": mask 0, regret 0.9 - 0.3 = 0.6. Caption 1 names "dog" and "ball": the ball
    # takes mask 0 there and the dog mask 1, regret 1.25 - 1.05 = 0.2. One dog: the stronger pair stays
    sims = np.array([[0.9, 0.95], [0.3, 0.1], [0.1, 0.1]])
    pairs = match([sims], np.eye(2), MatchConfig(min_similarity=None), mentions=[[0, 1], [1]])
    dog = [p for p in pairs if p.entity_index == 0]
    assert [(p.mask_index, round(p.margin, 6)) for p in dog] == [(0, 0.6)]
    two_dogs = match([sims], np.eye(2), MatchConfig(min_similarity=None), counts=[2, 1], mentions=[[0, 1], [1]])
    assert sorted(p.mask_index for p in two_dogs if p.entity_index == 0) == [0, 1]
