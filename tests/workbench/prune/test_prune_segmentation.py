"""Fisher optimal segmentation equals brute-force search; the k-selection rule follows its definition."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from workbench.errors import WorkbenchError
from workbench.prune.segmentation import (
    choose_num_segments,
    cost_matrix,
    fisher_segmentation,
    neg_mean_similarity_costs,
    optimal_segmentations,
    similarity_scatter_costs,
    similarity_segmentation,
    sum_squares_costs,
)


def _ss(v: np.ndarray) -> float:
    return float(((v - v.mean()) ** 2).sum())


def _brute_force(n: int, k: int, seg_cost) -> float:
    best = np.inf
    for cuts in itertools.combinations(range(1, n), k - 1):
        edges = (0, *cuts, n)
        best = min(best, sum(seg_cost(a, b) for a, b in zip(edges[:-1], edges[1:])))
    return best


def _total(bounds, seg_cost) -> float:
    return sum(seg_cost(a, b) for a, b in bounds)


def _check_partition(bounds, n, k):
    assert len(bounds) == k
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(a < b for a, b in bounds)
    assert all(bounds[i][1] == bounds[i + 1][0] for i in range(k - 1))


def test_sum_squares_matches_brute_force_on_random_sequences():
    rng = np.random.default_rng(0)
    for _ in range(150):
        n = int(rng.integers(1, 13))
        v = rng.normal(size=n) * rng.uniform(0.1, 3.0) + rng.integers(0, 3, size=n)

        def seg(a, b, v=v):
            return _ss(v[a:b])

        for k in range(1, n + 1):
            got = fisher_segmentation(v, k)
            _check_partition(got.boundaries, n, k)
            want = _brute_force(n, k, seg)
            assert got.cost == pytest.approx(want, abs=1e-9)
            assert _total(got.boundaries, seg) == pytest.approx(want, abs=1e-9)


def test_neg_mean_cka_matches_brute_force_on_random_matrices():
    rng = np.random.default_rng(1)
    for _ in range(150):
        n = int(rng.integers(1, 11))
        a = rng.uniform(size=(n, n))
        s = (a + a.T) / 2
        np.fill_diagonal(s, 1.0)

        def seg(i, j, s=s):
            return -float(s[i:j, i:j].mean())

        for k in range(1, n + 1):
            got = similarity_segmentation(s, k)
            _check_partition(got.boundaries, n, k)
            want = _brute_force(n, k, seg)
            assert got.cost == pytest.approx(want, abs=1e-9)
            assert _total(got.boundaries, seg) == pytest.approx(want, abs=1e-9)


def test_cost_matrices_equal_their_definitions():
    rng = np.random.default_rng(2)
    v = rng.normal(size=7)
    s = rng.uniform(size=(7, 7))
    np.testing.assert_allclose(sum_squares_costs(v), cost_matrix(7, lambda i, j: _ss(v[i:j])), atol=1e-12)
    np.testing.assert_allclose(
        neg_mean_similarity_costs(s), cost_matrix(7, lambda i, j: -s[i:j, i:j].mean()), atol=1e-12
    )


def test_obvious_blocks_are_found():
    v = np.array([0.0, 0.1, 0.0, 5.0, 5.1, 4.9, 10.0, 10.2])
    assert fisher_segmentation(v, 3).boundaries == [(0, 3), (3, 6), (6, 8)]
    s = np.full((6, 6), 0.1)
    s[:2, :2] = 0.9
    s[2:, 2:] = 0.95
    assert similarity_segmentation(s, 2).boundaries == [(0, 2), (2, 6)]


def test_choose_num_segments_follows_the_documented_rule():
    rng = np.random.default_rng(3)
    v = np.concatenate([np.zeros(4), np.full(4, 3.0), np.full(4, 7.0)]) + rng.normal(0, 0.05, size=12)
    choice = choose_num_segments(v)
    costs = {k: seg.cost for k, seg in choice.by_k.items()}
    assert set(costs) == set(range(1, 13))
    span = costs[1] - min(costs.values())
    for k in range(2, 13):
        assert choice.drops[k] == pytest.approx((costs[k - 1] - costs[k]) / span)
    want = max((k for k in range(2, 13) if choice.drops[k] > 0.05), default=1)
    assert choice.k == want == 3
    assert choice.segmentation.boundaries == [(0, 4), (4, 8), (8, 12)]
    # A constant sequence has nothing to gain from splitting.
    assert choose_num_segments(np.ones(5)).k == 1


def test_choose_num_segments_on_a_matrix_and_max_k():
    s = np.full((6, 6), 0.1)
    s[:3, :3] = 0.9
    s[3:, 3:] = 0.9
    choice = choose_num_segments(s, cost="neg_mean_cka", max_k=4)
    assert set(choice.by_k) == {1, 2, 3, 4}
    assert choice.by_k[2].boundaries == [(0, 3), (3, 6)]


def test_cka_sum_squares_is_the_sum_of_squares_of_the_normalised_gram_matrices():
    rng = np.random.default_rng(3)
    n = 7
    # units' centred Gram matrices, flattened and normalised: linear CKA is their cosine
    u = rng.normal(size=(n, 20)) + np.repeat(rng.normal(size=(3, 20)) * 3, [3, 2, 2], axis=0)
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    cka = u @ u.T
    costs = similarity_scatter_costs(cka)
    explicit = cost_matrix(n, lambda i, j: float(((u[i:j] - u[i:j].mean(0)) ** 2).sum()))
    np.testing.assert_allclose(costs[np.triu_indices(n + 1, 1)], explicit[np.triu_indices(n + 1, 1)], atol=1e-12)
    for k in range(1, n + 1):
        assert optimal_segmentations(costs, k)[k].cost == pytest.approx(
            _brute_force(n, k, lambda a, b: costs[a, b]), abs=1e-12
        )
    assert choose_num_segments(cka, cost="cka_sum_squares").segmentation.boundaries == [(0, 3), (3, 5), (5, 7)]


def test_neg_mean_cka_splits_off_a_single_unit_where_cka_sum_squares_splits_evenly():
    # similarity decaying smoothly with depth: the even split is the natural pair of segments
    idx = np.arange(10)
    s = np.exp(-np.abs(idx[:, None] - idx[None, :]) / 5)
    assert optimal_segmentations(neg_mean_similarity_costs(s), 2)[2].boundaries == [(0, 1), (1, 10)]
    assert optimal_segmentations(similarity_scatter_costs(s), 2)[2].boundaries == [(0, 5), (5, 10)]


def test_bad_inputs_raise():
    with pytest.raises(WorkbenchError, match="number of segments"):
        fisher_segmentation([1.0, 2.0], 3)
    with pytest.raises(WorkbenchError, match="1-D"):
        fisher_segmentation(np.zeros((2, 2)), 1)
    with pytest.raises(WorkbenchError, match="unknown segment cost"):
        choose_num_segments([1.0, 2.0], cost="variance")
    with pytest.raises(WorkbenchError, match="square"):
        optimal_segmentations(neg_mean_similarity_costs(np.zeros((2, 3))), 1)
