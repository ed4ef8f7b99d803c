"""The plots of every ``workbench rl train`` run, drawn from its logged ``metrics.jsonl`` into ``plots/``:

- ``learning_curves.png``: each student's training return (unclipped full-game episodes) and the group's
  best and mean, over env steps per student, with the evaluation points when there are any;
- ``attention.png`` (opd-da): the decision-attention matrix over training as a heatmap strip — one row per
  weight α_ij (student i's weight on student j, rows grouped by i), one column per logged step;
- ``diversity.png`` (groups of 2+): mean pairwise L2 distance between the students' action distributions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from workbench.tracking import read_metrics


def _series(metrics: list[dict], key: str) -> tuple[list[int], list[float]]:
    pts = [(e["step"], e[key]) for e in metrics if e.get(key) is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


def plot_data(metrics: list[dict], students: int) -> dict[str, Any]:
    """What the plots show, from the metrics entries: ``returns`` (per student), ``group_best``,
    ``group_mean``, ``eval_best``, ``eval_mean``, ``diversity`` as (steps, values); ``attention`` as
    (steps, matrix of shape (M·M, steps) with row i·M + j = α_ij) or None."""
    data: dict[str, Any] = {
        "returns": [_series(metrics, f"student{i}/return") for i in range(students)],
        "group_best": _series(metrics, "group/best_return"),
        "group_mean": _series(metrics, "group/mean_return"),
        "eval_best": _series(metrics, "eval/group_best"),
        "eval_mean": _series(metrics, "eval/group_mean"),
        "diversity": _series(metrics, "group/diversity"),
        "attention": None,
    }
    keys = [f"attention/alpha_{i}_{j}" for i in range(students) for j in range(students)]
    rows = [e for e in metrics if all(k in e for k in keys)]
    if rows:
        data["attention"] = ([e["step"] for e in rows], np.array([[e[k] for e in rows] for k in keys]))
    return data


def plot_run(run_dir: str | Path, students: int, title: str = "") -> list[Path]:
    """Draw the run's plots into ``run_dir/plots``; returns the files written."""
    import matplotlib.pyplot as plt

    from workbench.plots import save_figure

    plots = Path(run_dir) / "plots"
    data = plot_data(read_metrics(run_dir), students)
    written = []
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, (steps, values) in enumerate(data["returns"]):
        if steps:
            ax.plot(steps, values, lw=1, alpha=0.6, label=f"student {i}")
    for key, style, label in (("group_best", "-", "group best"), ("group_mean", "--", "group mean")):
        steps, values = data[key]
        if steps:
            ax.plot(steps, values, style, color="black", lw=2, label=label)
    for key, marker, label in (("eval_best", "^", "eval: group best"), ("eval_mean", "o", "eval: group mean")):
        steps, values = data[key]
        if steps:
            ax.plot(steps, values, marker, color="tab:red", label=label)
    ax.set(xlabel="env steps per student", ylabel="episode return", title=title)
    ax.legend(fontsize=7)
    written.append(save_figure(fig, plots / "learning_curves.png"))
    if data["attention"] is not None:
        steps, matrix = data["attention"]
        fig, ax = plt.subplots(figsize=(7, 0.9 + 0.25 * matrix.shape[0]))
        extent = (steps[0], steps[-1] if len(steps) > 1 else steps[0] + 1, matrix.shape[0] - 0.5, -0.5)
        im = ax.imshow(matrix, aspect="auto", cmap="viridis", vmin=0, vmax=1, extent=extent, interpolation="nearest")
        ax.set_yticks(range(matrix.shape[0]), [f"α{i}{j}" for i in range(students) for j in range(students)])
        for b in range(students, matrix.shape[0], students):
            ax.axhline(b - 0.5, color="white", lw=1)
        fig.colorbar(im, ax=ax, fraction=0.03)
        ax.set(xlabel="env steps per student", title=f"decision attention (row αij: student i's weight on j) {title}")
        written.append(save_figure(fig, plots / "attention.png"))
    steps, values = data["diversity"]
    if steps:
        fig, ax = plt.subplots(figsize=(7, 3))
        ax.plot(steps, values)
        ax.set(xlabel="env steps per student", ylabel="mean pairwise L2 of π", title=f"group diversity {title}")
        written.append(save_figure(fig, plots / "diversity.png"))
    return written
