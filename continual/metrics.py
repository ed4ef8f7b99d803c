"""Class-incremental metrics from an accuracy matrix (pure Python, no torch).

``a[i][j]`` is the accuracy (%) on task j's test classes after training task i; entries with ``j > i`` are
``None`` (not evaluated). With ``n_j`` test images in task j (``sizes``; equal sizes when omitted):

- seen-class accuracy after task i: ``s_i = Σ_{j≤i} n_j·a[i][j] / Σ_{j≤i} n_j`` (accuracy on all seen classes);
- average incremental accuracy: ``mean_i s_i`` (over every task, the first included, as eTag/PASS report it);
- last accuracy: ``s_{T−1}``;
- average forgetting (Chaudhry et al., arXiv 1801.10112): ``mean_{j<T−1} (max_{i<T−1} a[i][j] − a[T−1][j])``,
  0 for a single task;
- backward transfer (Lopez-Paz & Ranzato, arXiv 1706.08840): ``BWT = mean_{j<T−1} (a[T−1][j] − a[j][j])``
  (negative = forgetting), 0 for a single task;
- old- and new-class accuracy after task i: ``old_i = Σ_{j<i} n_j·a[i][j] / Σ_{j<i} n_j`` (``None`` for i = 0)
  and ``new_i = a[i][i]`` (the classes of the task just learned).
"""

from __future__ import annotations

from collections.abc import Sequence

Matrix = Sequence[Sequence[float | None]]


def _check(matrix: Matrix) -> int:
    rows = len(matrix)
    for i, row in enumerate(matrix):
        if len(row) < i + 1 or any(row[j] is None for j in range(i + 1)):
            raise ValueError(f"accuracy matrix row {i} must hold tasks 0..{i}, got {list(row)}")
    return rows


def seen_accuracy(matrix: Matrix, sizes: Sequence[int] | None = None) -> list[float]:
    """Accuracy on all classes seen so far after every task (test-size weighted mean of row ``i``, ``j ≤ i``)."""
    rows = _check(matrix)
    sizes = list(sizes) if sizes is not None else [1] * max(rows, len(matrix[-1]) if rows else 0)
    out = []
    for i in range(rows):
        total = sum(sizes[: i + 1])
        out.append(sum(sizes[j] * float(matrix[i][j]) for j in range(i + 1)) / total)
    return out


def average_incremental_accuracy(matrix: Matrix, sizes: Sequence[int] | None = None) -> float:
    seen = seen_accuracy(matrix, sizes)
    return sum(seen) / len(seen)


def last_accuracy(matrix: Matrix, sizes: Sequence[int] | None = None) -> float:
    return seen_accuracy(matrix, sizes)[-1]


def average_forgetting(matrix: Matrix) -> float:
    """Mean over the old tasks of (best accuracy before the last task − accuracy after the last task)."""
    rows = _check(matrix)
    if rows < 2:
        return 0.0
    last = rows - 1
    drops = [max(float(matrix[i][j]) for i in range(j, last)) - float(matrix[last][j]) for j in range(last)]
    return sum(drops) / len(drops)


def backward_transfer(matrix: Matrix) -> float:
    """``mean_{j<T−1} (a[T−1][j] − a[j][j])``: the change of every old task's accuracy since it was learned."""
    rows = _check(matrix)
    if rows < 2:
        return 0.0
    last = rows - 1
    return sum(float(matrix[last][j]) - float(matrix[j][j]) for j in range(last)) / last


def old_new_accuracy(matrix: Matrix, sizes: Sequence[int] | None = None) -> tuple[list[float | None], list[float]]:
    """``(old, new)`` after every task: test-size weighted accuracy on the earlier tasks' classes (``None`` after
    the first task) and accuracy on the classes of the task just learned."""
    rows = _check(matrix)
    sizes = list(sizes) if sizes is not None else [1] * max(rows, len(matrix[-1]) if rows else 0)
    old: list[float | None] = [None]
    for i in range(1, rows):
        old.append(sum(sizes[j] * float(matrix[i][j]) for j in range(i)) / sum(sizes[:i]))
    return old, [float(matrix[i][i]) for i in range(rows)]


def summarize(matrix: Matrix, sizes: Sequence[int] | None = None) -> dict[str, object]:
    """``seen_acc``, ``avg_incremental_acc``, ``last_acc``, ``avg_forgetting``, ``bwt``, ``old_acc``, ``new_acc``
    of a (partial) matrix."""
    seen = seen_accuracy(matrix, sizes)
    old, new = old_new_accuracy(matrix, sizes)
    return {
        "seen_acc": seen,
        "avg_incremental_acc": sum(seen) / len(seen),
        "last_acc": seen[-1],
        "avg_forgetting": average_forgetting(matrix),
        "bwt": backward_transfer(matrix),
        "old_acc": old,
        "new_acc": new,
    }
