"""Fisher optimal segmentation of an ordered sequence (Fisher 1958), as used by SGLP to partition layers.

The units 0..n-1 keep their order; a segmentation into ``k`` segments is a list of half-open index
ranges ``[(0, b1), (b1, b2), ..., (b_{k-1}, n)]``. With an additive segment cost ``c(i, j)`` for
the segment ``[i, j)``, the optimal total cost obeys the exact dynamic programme

    D[1][j] = c(0, j),        D[k][j] = min_{k-1 <= i < j} D[k-1][i] + c(i, j),

and the optimum for ``k`` segments is ``D[k][n]``. One pass of the DP gives every k up to ``max_k``.

Two segment costs (METHODS.md §4):

- ``sum_squares_costs(values)`` (paper): within-segment sum of squares of a 1-D sequence
  (SGLP feeds the column sums of the CKA matrix), ``c(i, j) = sum_{t in [i, j)} (v_t - mean)^2``;
- ``neg_mean_similarity_costs(sim)`` (choice): ``c(i, j) = -mean_{p, q in [i, j)} S_pq`` over the
  square block of the similarity matrix, diagonal included (a single unit's block is ``S_ii``).
  The total over segments is a sum of negative means, so it rewards many small segments: for a fixed
  k the optimum tends to split off single units (CKA_ii = 1) rather than follow the matrix's blocks.

A third cost works on the matrix as a proper within-segment dispersion:

- ``similarity_scatter_costs(sim)`` (``cka_sum_squares``): ``c(i, j) = Σ_{p, q in [i, j)} (1 − S_pq) / (j − i)``.
  Linear CKA is the cosine between the units' centred Gram matrices, so with u_p the normalised centred
  Gram matrix of unit p, ``1 − CKA_pq = ‖u_p − u_q‖² / 2`` and ``c(i, j) = Σ_{p in [i, j)} ‖u_p − ū‖²``:
  the paper's within-segment sum of squares, taken over the units' whole representations instead of
  a 1-D summary of them (the column sums, which cannot tell two blocks of equal total similarity apart).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from workbench.errors import WorkbenchError

SEGMENT_COSTS = ("sum_squares", "neg_mean_cka", "cka_sum_squares")


@dataclass(frozen=True)
class Segmentation:
    """An optimal segmentation: half-open ``(start, end)`` ranges in order, and its total cost."""

    boundaries: list[tuple[int, int]]
    cost: float

    @property
    def num_segments(self) -> int:
        return len(self.boundaries)


@dataclass(frozen=True)
class SegmentationChoice:
    """Result of :func:`choose_num_segments`: the chosen ``k``, every k's optimum and the loss drops."""

    k: int
    segmentation: Segmentation
    by_k: dict[int, Segmentation]
    drops: dict[int, float]


def sum_squares_costs(values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Segment-cost matrix ``C[i, j]`` = within-segment sum of squares of ``values[i:j]`` (i < j).

    Computed from prefix sums: ``SS = sum v^2 - (sum v)^2 / (j - i)``, clipped at 0 against rounding.
    Entries with ``i >= j`` are ``inf``.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or v.size == 0:
        raise WorkbenchError(f"segmentation needs a non-empty 1-D sequence, got shape {v.shape}")
    n = v.size
    s1 = np.concatenate([[0.0], np.cumsum(v)])
    s2 = np.concatenate([[0.0], np.cumsum(v * v)])
    i, j = np.meshgrid(np.arange(n + 1), np.arange(n + 1), indexing="ij")
    length = np.maximum(j - i, 1)
    cost = (s2[j] - s2[i]) - (s1[j] - s1[i]) ** 2 / length
    cost = np.maximum(cost, 0.0)
    cost[j <= i] = np.inf
    return cost


def _square_matrix(sim: np.ndarray) -> np.ndarray:
    s = np.asarray(sim, dtype=np.float64)
    if s.ndim != 2 or s.shape[0] != s.shape[1] or s.shape[0] == 0:
        raise WorkbenchError(f"segmentation needs a non-empty square similarity matrix, got shape {s.shape}")
    return s


def _block_means(m: np.ndarray, power: int) -> np.ndarray:
    """``B[i, j] = Σ m[i:j, i:j] / (j − i)^power`` for i < j (``inf`` elsewhere), from 2-D prefix sums."""
    n = m.shape[0]
    p = np.zeros((n + 1, n + 1))
    p[1:, 1:] = m.cumsum(0).cumsum(1)  # p[a, b] = sum of m[:a, :b]
    i, j = np.meshgrid(np.arange(n + 1), np.arange(n + 1), indexing="ij")
    block = (p[j, j] - p[i, j] - p[j, i] + p[i, i]) / np.maximum(j - i, 1) ** power
    block[j <= i] = np.inf
    return block


def neg_mean_similarity_costs(sim: np.ndarray) -> np.ndarray:
    """Segment-cost matrix ``C[i, j] = -mean(S[i:j, i:j])`` for a square similarity matrix (i < j)."""
    return _block_means(-_square_matrix(sim), power=2)


def similarity_scatter_costs(sim: np.ndarray) -> np.ndarray:
    """Segment-cost matrix ``C[i, j] = Σ_{p, q in [i, j)} (1 − S_pq) / (j − i)`` (module docstring) for i < j."""
    return np.maximum(_block_means(1.0 - _square_matrix(sim), power=1), 0.0)


def optimal_segmentations(costs: np.ndarray, max_k: int) -> dict[int, Segmentation]:
    """The exact optimum for every ``k = 1..max_k`` from a segment-cost matrix ``costs[i, j]``.

    ``costs`` has shape ``(n + 1, n + 1)``; only entries with ``i < j`` are read. O(max_k · n²).
    """
    c = np.asarray(costs, dtype=np.float64)
    n = c.shape[0] - 1
    if c.ndim != 2 or c.shape[1] != n + 1 or n < 1:
        raise WorkbenchError(f"segment costs must be an (n+1, n+1) matrix with n >= 1, got shape {c.shape}")
    if not 1 <= max_k <= n:
        raise WorkbenchError(f"number of segments must be in 1..{n} for {n} units, got {max_k}")
    table = np.full((max_k + 1, n + 1), np.inf)
    arg = np.zeros((max_k + 1, n + 1), dtype=np.int64)
    table[0, 0] = 0.0
    for k in range(1, max_k + 1):
        for j in range(k, n + 1):
            starts = np.arange(k - 1, j)
            totals = table[k - 1, starts] + c[starts, j]
            best = int(np.argmin(totals))
            table[k, j] = totals[best]
            arg[k, j] = starts[best]
    result = {}
    for k in range(1, max_k + 1):
        bounds, end = [], n
        for kk in range(k, 0, -1):
            start = int(arg[kk, end])
            bounds.append((start, end))
            end = start
        result[k] = Segmentation(boundaries=bounds[::-1], cost=float(table[k, n]))
    return result


def cost_matrix(n: int, segment_cost: Callable[[int, int], float]) -> np.ndarray:
    """Tabulate any segment-cost function ``segment_cost(i, j)`` of ``[i, j)`` for the DP."""
    c = np.full((n + 1, n + 1), np.inf)
    for i in range(n):
        for j in range(i + 1, n + 1):
            c[i, j] = segment_cost(i, j)
    return c


def _costs_for(data: Sequence[float] | np.ndarray, cost: str) -> np.ndarray:
    if cost == "sum_squares":
        return sum_squares_costs(data)
    if cost == "neg_mean_cka":
        return neg_mean_similarity_costs(np.asarray(data))
    if cost == "cka_sum_squares":
        return similarity_scatter_costs(np.asarray(data))
    raise WorkbenchError(f"unknown segment cost '{cost}'; valid: {', '.join(SEGMENT_COSTS)}")


def fisher_segmentation(values: Sequence[float] | np.ndarray, k: int) -> Segmentation:
    """Optimal ``k``-segmentation of a 1-D sequence under within-segment sum of squares."""
    return optimal_segmentations(sum_squares_costs(values), k)[k]


def similarity_segmentation(sim: np.ndarray, k: int) -> Segmentation:
    """Optimal ``k``-segmentation of the units of a similarity (CKA) matrix, cost −mean intra-block CKA."""
    return optimal_segmentations(neg_mean_similarity_costs(sim), k)[k]


def choose_num_segments(
    data: Sequence[float] | np.ndarray,
    cost: str = "sum_squares",
    max_k: int | None = None,
    threshold: float = 0.05,
) -> SegmentationChoice:
    """Pick the number of segments as the largest ``k`` whose loss drop exceeds ``threshold``.

    ``data`` is the 1-D sequence (``cost="sum_squares"``) or the similarity matrix
    (``cost="neg_mean_cka"`` or ``"cka_sum_squares"``). With ``C_k`` the optimal total cost for ``k``
    segments, ``k = 1..K`` (``K = max_k``, default the number of units), the loss drop of step ``k`` is

        drop_k = (C_{k-1} - C_k) / (C_1 - min_{k'} C_{k'}),     k = 2..K,

    the share of the whole achievable cost reduction gained by going from ``k-1`` to ``k`` segments
    (for the sum of squares ``min C = C_n = 0``, so this is the share of the total sum of squares).
    Normalising by the range rather than by ``C_{k-1}`` keeps the rule meaningful near ``k = n``,
    where ``C_k -> 0`` would make every relative step look large. The chosen ``k`` is the largest
    with ``drop_k > threshold``; ``k = 1`` when there is none (also when all costs are equal).
    """
    costs = _costs_for(data, cost)
    n = costs.shape[0] - 1
    kmax = n if max_k is None else max_k
    by_k = optimal_segmentations(costs, kmax)
    span = by_k[1].cost - min(s.cost for s in by_k.values())
    drops = {k: (by_k[k - 1].cost - by_k[k].cost) / span if span > 0 else 0.0 for k in range(2, kmax + 1)}
    chosen = max((k for k, d in drops.items() if d > threshold), default=1)
    return SegmentationChoice(k=chosen, segmentation=by_k[chosen], by_k=by_k, drops=drops)
