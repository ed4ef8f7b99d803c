"""PNG plots written into a run's ``plots/``: learning curves (with seed bands), heatmaps, scatter plots."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from workbench.io import atomic_write  # noqa: E402


def save_figure(fig: plt.Figure, path: str | Path) -> Path:
    """Save ``fig`` as PNG atomically and close it."""
    out = atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120, bbox_inches="tight"))
    plt.close(fig)
    return out


def plot_history(history: Sequence[Mapping[str, float]], path: str | Path, title: str = "") -> Path:
    """Train loss and train/test accuracy per epoch."""
    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
    ax1.plot(epochs, [h["train/loss"] for h in history], marker="o")
    ax1.set(xlabel="epoch", ylabel="train loss")
    for key, label in (("train/acc", "train"), ("test/acc", "test")):
        pts = [(h["epoch"], h[key]) for h in history if key in h]
        if pts:
            ax2.plot(*zip(*pts), marker="o", label=label)
    ax2.set(xlabel="epoch", ylabel="accuracy (%)")
    ax2.legend()
    fig.suptitle(title)
    return save_figure(fig, path)


def plot_bands(
    curves: Mapping[str, Sequence[tuple[Sequence[float], Sequence[float]]]],
    path: str | Path,
    xlabel: str,
    ylabel: str,
    title: str = "",
) -> Path:
    """One line per label: the mean over seeds with a ±1 std band.

    ``curves[label]`` holds one ``(x, y)`` pair per seed; seeds are put on a common x grid by linear
    interpolation over their shared x range.
    """
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(6.5, 4))
    integer_x = True
    for label, runs in curves.items():
        runs = [(np.asarray(x, float), np.asarray(y, float)) for x, y in runs if len(x)]
        integer_x = integer_x and all(np.all(x == np.round(x)) for x, _ in runs)
        if not runs:
            continue
        lo, hi = max(x[0] for x, _ in runs), min(x[-1] for x, _ in runs)
        n = max(len(x) for x, _ in runs)
        grid = np.linspace(lo, hi, n) if hi > lo else runs[0][0]
        ys = np.stack([np.interp(grid, x, y) for x, y in runs])
        mean, std = ys.mean(0), ys.std(0)
        ax.plot(grid, mean, label=f"{label} (n={len(runs)})")
        if len(runs) > 1:
            ax.fill_between(grid, mean - std, mean + std, alpha=0.2)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    if integer_x:  # tasks, epochs: no 1.5 ticks
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def plot_matrix(
    matrix: np.ndarray,
    path: str | Path,
    title: str = "",
    xlabel: str = "",
    ylabel: str = "",
    boundaries: Sequence[int] = (),
    marks: Sequence[int] = (),
    fmt: str | None = "{:.0f}",
    vmin: float | None = None,
    vmax: float | None = None,
) -> Path:
    """A heatmap; ``boundaries`` draw segment lines before those indices, ``marks`` highlight diagonal cells."""
    matrix = np.asarray(matrix, float)
    fig, ax = plt.subplots(figsize=(1 + 0.45 * matrix.shape[1] + 1.5, 1 + 0.45 * matrix.shape[0]))
    im = ax.imshow(matrix, cmap="viridis", vmin=vmin, vmax=vmax)
    fig.colorbar(im, ax=ax, fraction=0.046)
    if fmt and matrix.size <= 400:
        for (i, j), v in np.ndenumerate(matrix):
            if np.isfinite(v):
                ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize=7, color="w")
    for b in boundaries:
        ax.axhline(b - 0.5, color="red", lw=1.5)
        ax.axvline(b - 0.5, color="red", lw=1.5)
    for m in marks:
        ax.add_patch(plt.Rectangle((m - 0.5, m - 0.5), 1, 1, fill=False, ec="white", lw=2))
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    return save_figure(fig, path)


def plot_scatter(
    points: Mapping[str, Sequence[tuple[float, float, float]]], path: str | Path, xlabel: str, ylabel: str, title=""
) -> Path:
    """``points[label]`` = list of (x, y_mean, y_std), drawn with error bars (e.g. accuracy against MACs)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, pts in points.items():
        x, y, e = zip(*pts)
        ax.errorbar(x, y, yerr=e, fmt="o", capsize=3, label=label)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def plot_performance_profiles(
    profiles: Mapping[str, tuple[Sequence[float], Sequence[float], Sequence[float], Sequence[float]]],
    path: str | Path,
    xlabel: str,
    title: str = "",
) -> Path:
    """Performance profiles: ``profiles[label] = (taus, fraction of runs > τ, CI low, CI high)``, each a line
    with its bootstrap band (Agarwal et al., arXiv:2108.13264, Fig. 5 style)."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for label, (taus, point, low, high) in profiles.items():
        (line,) = ax.plot(taus, point, label=label)
        ax.fill_between(taus, low, high, alpha=0.2, color=line.get_color())
    ax.set(xlabel=f"{xlabel} (τ)", ylabel="fraction of runs with score > τ", title=title, ylim=(-0.02, 1.02))
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)
