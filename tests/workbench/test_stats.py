"""workbench.stats against hand-computed values, rliable's numbers, and bootstrap coverage on synthetic data."""

import itertools

import numpy as np
import pytest

from workbench import stats
from workbench.errors import WorkbenchError

# a fixed (runs × tasks) example; rliable's numbers below were computed once with rliable 1.2.0's
# rliable/metrics.py (aggregate_mean/median/iqm/optimality_gap, probability_of_improvement; scipy 1.17),
# installed with `pip install --target /tmp/x rliable --no-deps` (rliable itself is not a dependency)
X = np.array([[0.12, 0.85, 0.40], [0.95, 0.70, 0.33], [0.48, 1.20, 0.61], [0.77, 0.52, 0.29], [0.66, 0.91, 0.58]])
Y = np.array([[0.10, 0.60, 0.45], [0.52, 0.75, 0.20], [0.38, 0.81, 0.35], [0.71, 0.44, 0.31], [0.49, 0.58, 0.50]])
RLIABLE = {"mean": 0.6246666666666666, "median": 0.596, "iqm": 0.6188888888888888, "og": 0.3886666666666667}
RLIABLE_POI = 0.6933333333333334


def test_agrees_with_rliable_on_a_fixed_example():
    assert stats.mean(X) == pytest.approx(RLIABLE["mean"], abs=1e-12)
    assert stats.median(X) == pytest.approx(RLIABLE["median"], abs=1e-12)
    assert stats.iqm(X) == pytest.approx(RLIABLE["iqm"], abs=1e-12)
    assert stats.optimality_gap(X) == pytest.approx(RLIABLE["og"], abs=1e-12)
    assert stats.probability_of_improvement(X, Y, reps=10).value == pytest.approx(RLIABLE_POI, abs=1e-12)


def test_iqm_of_known_arrays():
    # sorted: 1 2 3 4 5 7 10 100; drop 2 at each end -> (3 + 4 + 5 + 7) / 4
    assert stats.iqm([[10, 1, 7, 3, 100, 2, 5, 4]]) == pytest.approx(4.75)
    # 10 values: drop 2 each end -> middle 6
    vals = [9, 0, 8, 1, 7, 2, 6, 3, 5, 40]
    assert stats.iqm([vals]) == pytest.approx((2 + 3 + 5 + 6 + 7 + 8) / 6)
    # pooled over tasks, not per task
    assert stats.iqm([[1, 2], [3, 4, 5, 6, 7, 100]]) == pytest.approx((3 + 4 + 5 + 6) / 4)


def test_mean_median_og_by_hand():
    tasks = [[1.0, 3.0], [10.0], [0.5, 0.5, 2.0]]  # task means 2, 10, 1
    assert stats.mean(tasks) == pytest.approx((2 + 10 + 1) / 3)
    assert stats.median(tasks) == pytest.approx(2.0)
    # min(x, 1): 1 1 1 0.5 0.5 1 -> mean 5/6
    assert stats.optimality_gap(tasks) == pytest.approx(1 - 5 / 6)
    assert stats.optimality_gap(tasks, gamma=2.0) == pytest.approx(2 - (1 + 2 + 2 + 0.5 + 0.5 + 2) / 6)


def _pairwise(x, y):
    return sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in itertools.product(x, y)) / (len(x) * len(y))


def test_probability_of_improvement_is_the_exact_pairwise_count():
    x1, y1 = [3, 1, 2, 2], [2, 0, 5]
    x2, y2 = [1, 1], [1, 0, 2, 1]
    est = stats.probability_of_improvement([x1, x2], [y1, y2], reps=200)
    assert est.value == pytest.approx((_pairwise(x1, y1) + _pairwise(x2, y2)) / 2)
    assert est.low <= est.value <= est.high
    assert stats.probability_of_improvement([[1, 2, 3]], [[1, 2, 3]], reps=10).value == 0.5
    assert stats.probability_of_improvement([[5, 6]], [[1, 2]], reps=10).value == 1.0
    with pytest.raises(WorkbenchError):
        stats.probability_of_improvement([[1]], [[1], [2]])


def test_stratified_resampling_keeps_each_stratum_and_its_size():
    tasks = [np.arange(3.0), 100 + np.arange(7.0), 1000 + np.arange(2.0)]
    samples = stats.stratified_resample(tasks, 500, np.random.default_rng(1))
    for t, s in zip(tasks, samples):
        assert s.shape == (500, t.size)
        assert np.isin(s, t).all()  # never a value of another task
    # resampling with replacement: some replicate repeats a run
    assert any(len(set(row)) < 7 for row in samples[1])


def test_bootstrap_ci_covers_the_true_mean_about_95_percent():
    rng = np.random.default_rng(0)
    trials, hits = 300, 0
    for i in range(trials):
        data = [rng.normal(2.0, 1.0, size=40), rng.normal(-1.0, 2.0, size=40)]  # true mean of task means: 0.5
        ci = stats.bootstrap_ci("mean", data, reps=400, seed=i)
        hits += ci.low <= 0.5 <= ci.high
    coverage = hits / trials
    # the percentile bootstrap undercovers slightly at n = 40; binomial sd at 300 trials ≈ 0.013
    assert 0.90 <= coverage <= 0.985, coverage


def test_ci_width_shrinks_with_runs_and_is_reproducible():
    rng = np.random.default_rng(3)
    small, large = rng.normal(size=(10, 2)), rng.normal(size=(200, 2))
    a, b = stats.bootstrap_ci("iqm", small, seed=5), stats.bootstrap_ci("iqm", large, seed=5)
    assert (b.high - b.low) < (a.high - a.low) / 2
    assert stats.bootstrap_ci("iqm", small, seed=5) == a
    agg = stats.aggregate(small, reps=300)
    assert set(agg) == {"mean", "median", "iqm", "optimality_gap"}
    assert all(e.low <= e.value <= e.high for e in agg.values())


def test_performance_profile_by_hand():
    tasks = [[0.1, 0.5, 0.9, 1.3], [0.2, 0.8]]
    point, low, high = stats.performance_profile(tasks, [0.0, 0.5, 1.0, 2.0], reps=300)
    # τ=0.5: task 1 -> 2/4 (0.5 is not above), task 2 -> 1/2
    np.testing.assert_allclose(point, [1.0, (2 / 4 + 1 / 2) / 2, (1 / 4 + 0) / 2, 0.0])
    assert np.all(low <= point + 1e-12) and np.all(point <= high + 1e-12)


def test_empty_task_and_normalisation():
    with pytest.raises(WorkbenchError):
        stats.iqm([[1.0], []])
    assert stats.min_max_normalise(75.0, 50.0, 150.0) == pytest.approx(0.25)
    with pytest.raises(WorkbenchError):
        stats.min_max_normalise(1.0, 2.0, 2.0)
