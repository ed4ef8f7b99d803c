"""Reliable aggregate statistics over runs (Agarwal et al., "Deep RL at the Edge of the Statistical Precipice",
arXiv:2108.13264), in numpy.

Scores are given per task (a game, a benchmark, a dataset): ``scores[t]`` holds the runs (seeds) of task ``t``;
tasks may have different run counts. With ``x_{t,i}`` the score of run ``i`` on task ``t`` and ``N`` the
number of all scores:

- mean       = (1/T) Σ_t mean_i x_{t,i}                      (mean of per-task means)
- median     = median_t mean_i x_{t,i}                        (median of per-task means)
- IQM        = mean of the pooled scores left after dropping ⌊N/4⌋ from each end of the sorted list
               (the 25 % trimmed mean, ``scipy.stats.trim_mean(x, 0.25)``)
- OG(γ)      = γ − (1/N) Σ_{t,i} min(x_{t,i}, γ)              (optimality gap, γ = 1 for normalised scores)
- P(X > Y)   = (1/T) Σ_t (1/(n_t m_t)) Σ_{i,j} [ 1(x_{t,i} > y_{t,j}) + ½ 1(x_{t,i} = y_{t,j}) ]
               (the Mann-Whitney U statistic per task, averaged over tasks)
- profile(τ) = (1/T) Σ_t (1/n_t) Σ_i 1(x_{t,i} > τ)           (run-score distribution, "performance profile")

Confidence intervals are stratified percentile bootstraps: each replicate resamples, with replacement, the runs
of every task separately (each stratum keeps its size), recomputes the statistic, and the interval is the
(α/2, 1 − α/2) percentiles of the replicates; a fixed RNG seed makes a report reproducible. P(X > Y)
resamples X and Y independently within each task.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from workbench.errors import WorkbenchError

#: the statement every table carries next to its intervals
CI_METHOD = "95% stratified percentile bootstrap over runs (strata: tasks), {reps} replicates, seed {seed}"

Scores = Sequence[Sequence[float]] | np.ndarray


def as_tasks(scores: Scores | Mapping[str, Sequence[float]]) -> list[np.ndarray]:
    """Per-task 1-D float arrays. A 2-D array is read rliable-style as ``(runs, tasks)``; a mapping by its values."""
    if isinstance(scores, Mapping):
        scores = list(scores.values())
    if isinstance(scores, np.ndarray) and scores.ndim == 2:
        tasks = [scores[:, t] for t in range(scores.shape[1])]
    elif isinstance(scores, np.ndarray) and scores.ndim == 1:
        tasks = [scores]
    else:
        tasks = [np.asarray(t, dtype=float).reshape(-1) for t in scores]
    tasks = [np.asarray(t, dtype=float) for t in tasks]
    if not tasks or any(t.size == 0 for t in tasks):
        raise WorkbenchError("statistics need at least one run in every task; a cell of the table has no runs")
    return tasks


# ------------------------------------------------------------------ batched statistics
# Each takes per-task samples of shape (reps, n_t) and returns one value per replicate, shape (reps,).


def _task_means(samples: list[np.ndarray]) -> np.ndarray:
    return np.stack([s.mean(axis=1) for s in samples], axis=1)


def _mean(samples: list[np.ndarray]) -> np.ndarray:
    return _task_means(samples).mean(axis=1)


def _median(samples: list[np.ndarray]) -> np.ndarray:
    return np.median(_task_means(samples), axis=1)


def _iqm(samples: list[np.ndarray]) -> np.ndarray:
    pooled = np.sort(np.concatenate(samples, axis=1), axis=1)
    cut = pooled.shape[1] // 4
    return pooled[:, cut : pooled.shape[1] - cut].mean(axis=1)


def _optimality_gap(samples: list[np.ndarray], gamma: float = 1.0) -> np.ndarray:
    pooled = np.concatenate(samples, axis=1)
    return gamma - np.minimum(pooled, gamma).mean(axis=1)


AGGREGATES: dict[str, Callable[[list[np.ndarray]], np.ndarray]] = {
    "mean": _mean,
    "median": _median,
    "iqm": _iqm,
    "optimality_gap": _optimality_gap,
}


def _point(fn: Callable[[list[np.ndarray]], np.ndarray], tasks: list[np.ndarray]) -> float:
    return float(fn([t[None, :] for t in tasks])[0])


def mean(scores: Scores) -> float:
    """Mean of per-task means."""
    return _point(_mean, as_tasks(scores))


def median(scores: Scores) -> float:
    """Median of per-task means."""
    return _point(_median, as_tasks(scores))


def iqm(scores: Scores) -> float:
    """Interquartile mean: the mean of the middle 50 % of all runs pooled (⌊N/4⌋ dropped at each end)."""
    return _point(_iqm, as_tasks(scores))


def optimality_gap(scores: Scores, gamma: float = 1.0) -> float:
    """γ − mean(min(score, γ)) over all runs: how far the method stays below the target γ."""
    return _point(lambda s: _optimality_gap(s, gamma), as_tasks(scores))


# ------------------------------------------------------------------ bootstrap


def stratified_resample(tasks: list[np.ndarray], reps: int, rng: np.random.Generator) -> list[np.ndarray]:
    """``reps`` stratified bootstrap samples: task ``t``'s runs drawn with replacement, ``n_t`` of them."""
    return [t[rng.integers(0, t.size, size=(reps, t.size))] for t in tasks]


def percentile_interval(replicates: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The ((1−level)/2, (1+level)/2) percentiles of bootstrap replicates."""
    alpha = 1.0 - level
    lo, hi = np.percentile(replicates, [100 * alpha / 2, 100 * (1 - alpha / 2)], axis=0)
    return float(lo), float(hi)


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its confidence interval."""

    value: float
    low: float
    high: float

    def format(self, digits: int = 3) -> str:
        return f"{self.value:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


def bootstrap_ci(
    stat: str | Callable[[list[np.ndarray]], np.ndarray],
    scores: Scores,
    reps: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> Estimate:
    """A statistic (a name of :data:`AGGREGATES` or a batched function) with its stratified bootstrap CI."""
    fn = AGGREGATES[stat] if isinstance(stat, str) else stat
    tasks = as_tasks(scores)
    replicates = fn(stratified_resample(tasks, reps, np.random.default_rng(seed)))
    return Estimate(_point(fn, tasks), *percentile_interval(replicates, level))


def aggregate(scores: Scores, reps: int = 2000, seed: int = 0, gamma: float = 1.0) -> dict[str, Estimate]:
    """Mean, median, IQM and optimality gap, each with its 95 % stratified bootstrap CI (same replicates)."""
    tasks = as_tasks(scores)
    samples = stratified_resample(tasks, reps, np.random.default_rng(seed))
    fns = {**AGGREGATES, "optimality_gap": lambda s: _optimality_gap(s, gamma)}
    return {name: Estimate(_point(fn, tasks), *percentile_interval(fn(samples))) for name, fn in fns.items()}


# ------------------------------------------------------------------ probability of improvement


def _improvement(xs: list[np.ndarray], ys: list[np.ndarray]) -> np.ndarray:
    per_task = []
    for x, y in zip(xs, ys):
        diff = x[:, :, None] - y[:, None, :]
        per_task.append(((diff > 0) + 0.5 * (diff == 0)).mean(axis=(1, 2)))
    return np.mean(per_task, axis=0)


def probability_of_improvement(x: Scores, y: Scores, reps: int = 2000, seed: int = 0, level: float = 0.95) -> Estimate:
    """P(X > Y), ties counted ½, averaged over tasks, with an independent stratified bootstrap CI."""
    xs, ys = as_tasks(x), as_tasks(y)
    if len(xs) != len(ys):
        raise WorkbenchError(f"P(X > Y) needs the same tasks for both methods; got {len(xs)} and {len(ys)} tasks")
    point = float(_improvement([t[None, :] for t in xs], [t[None, :] for t in ys])[0])
    rng = np.random.default_rng(seed)
    replicates = _improvement(stratified_resample(xs, reps, rng), stratified_resample(ys, reps, rng))
    return Estimate(point, *percentile_interval(replicates, level))


# ------------------------------------------------------------------ performance profiles


def _profile(samples: list[np.ndarray], taus: np.ndarray) -> np.ndarray:
    """Shape (reps, len(taus)): per task the fraction of runs above τ, averaged over tasks."""
    return np.mean([(s[:, :, None] > taus[None, None, :]).mean(axis=1) for s in samples], axis=0)


def performance_profile(
    scores: Scores, taus: Sequence[float], reps: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The fraction of runs with score > τ for each τ, and the lower and upper ends of its bootstrap CI."""
    tasks = as_tasks(scores)
    taus = np.asarray(taus, dtype=float)
    point = _profile([t[None, :] for t in tasks], taus)[0]
    replicates = _profile(stratified_resample(tasks, reps, np.random.default_rng(seed)), taus)
    alpha = 1.0 - level
    low, high = np.percentile(replicates, [100 * alpha / 2, 100 * (1 - alpha / 2)], axis=0)
    return point, low, high


def min_max_normalise(score: float | np.ndarray, low: float, high: float) -> float | np.ndarray:
    """(score − low) / (high − low): 0 at a stated random/reference-low score, 1 at the reference-high score
    (human-normalised scores are this with low = random, high = human)."""
    if high == low:
        raise WorkbenchError(f"cannot normalise with equal low and high reference scores ({low})")
    return (np.asarray(score, dtype=float) - low) / (high - low)
