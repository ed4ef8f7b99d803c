"""``workbench cil compare``: every (method, seed) as an in-process sub-run, then a mean ± std table and plots.

Sub-runs live under ``<compare run>/runs/cil/<benchmark>_<method>/``; ``--resume`` skips finished ones and
resumes an interrupted one from its last task. Outputs: ``table.md`` / ``table.csv`` (last accuracy, average
incremental accuracy, average forgetting, BWT, old- and new-class accuracy after the last task, seconds per
task; mean ± std over seeds with n), ``table_old_new.md`` / ``.csv`` (old / new-class accuracy after every task),
``plots/seen_acc.png`` (seen-class accuracy per task, seed bands) and ``plots/acc_matrix_<method>.png``
(seed-mean accuracy matrix), and in ``summary.json`` the per-method numbers and the goal check of
BENCHMARKS.md (eTag/IR last accuracy ≥ 50 and ≥ 30 points above the best of Naive/LwF/EWC, lower forgetting).
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Any

from workbench.io import atomic_write_text
from workbench.report import format_mean_std, mean_std, to_csv, to_markdown
from workbench.runs import Run, create_run, load_summary, open_run

METRICS = (
    ("last_acc", "last acc (%)"),
    ("avg_incremental_acc", "avg incremental acc (%)"),
    ("avg_forgetting", "avg forgetting (pts)"),
    ("bwt", "BWT (pts)"),
    ("last_old_acc", "old-class acc, last (%)"),
    ("last_new_acc", "new-class acc, last (%)"),
    ("mean_seconds_per_task", "s / task"),
)
BASELINES = ("naive", "lwf", "ewc")


def _sub_config(cfg: Any, method: str, seed: int, root: Path) -> Any:
    from continual.config import CILConfig

    values = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(CILConfig)}
    values.update(method=method, seed=seed, class_order=[], run_root=str(root), name="")
    return CILConfig(**values)


def _existing(root: Path, name: str, seed: int) -> Path | None:
    folder = root / "cil" / name
    found = sorted(folder.glob(f"*-s{seed}")) if folder.is_dir() else []
    return found[-1] if found else None


def _one(cfg: Any, method: str, seed: int, root: Path) -> dict[str, Any]:
    from continual.run import run as run_one
    from workbench.config import resolve_config

    sub = _sub_config(cfg, method, seed, root)
    name = f"{cfg.benchmark}_{method}"
    previous = _existing(root, name, seed)
    if previous is not None:
        summary = load_summary(previous)
        if summary and summary.get("complete"):
            return summary
        sub_run, saved = open_run(previous, "cil")
        from continual.config import CILConfig

        sub = resolve_config(CILConfig, base=saved)
    else:
        sub_run = create_run("cil", sub, name)
    print(f"== {method} seed {seed}: {sub_run.dir}", flush=True)
    try:
        return run_one(sub, sub_run)
    finally:
        sub_run.close()


def metric(summary: dict[str, Any], key: str) -> float | None:
    """One table entry of a run's summary (``None`` where undefined: the old-class accuracy of a one-task run).
    Summaries written before BWT and old/new accuracies existed get them from their accuracy matrix."""
    if key in summary:
        return summary[key]
    from continual.metrics import summarize

    rows = summary["acc_matrix"]
    full = summarize([r[: i + 1] for i, r in enumerate(rows)], summary.get("test_sizes"))
    full["last_old_acc"], full["last_new_acc"] = full["old_acc"][-1], full["new_acc"][-1]
    return full[key]


def cell(values: list[float | None]) -> str:
    """``mean ± std`` of the values, ``—`` when a run has none."""
    return "—" if not values or any(v is None for v in values) else format_mean_std(values)


def old_new_table(summaries: dict[str, list[dict[str, Any]]]) -> tuple[list[str], list[list[str]]]:
    """Old- / new-class accuracy after every task, mean ± std over seeds, one row per method."""
    tasks = max(len(s["acc_matrix"]) for ss in summaries.values() for s in ss)
    header = ["method", *[f"after task {t} old / new (%)" for t in range(tasks)]]
    cells = []
    for m, ss in summaries.items():
        row = [m]
        for t in range(tasks):
            new = [s["new_acc"][t] for s in ss if "new_acc" in s and len(s["new_acc"]) > t]
            old = [
                s["old_acc"][t] for s in ss if "old_acc" in s and len(s["old_acc"]) > t and s["old_acc"][t] is not None
            ]
            row.append(f"{cell(old)} / {cell(new)}")
        cells.append(row)
    return header, cells


def stats(values: list[float | None]) -> dict[str, float | None]:
    if not values or any(v is None for v in values):
        return {"mean": None, "std": None}
    mean, std = mean_std(values)
    return {"mean": mean, "std": std}


def goal_check(results: dict[str, dict[str, list[float]]]) -> dict[str, Any]:
    """BENCHMARKS.md's split-fmnist-5 goal for eTag and IR against the best of Naive/LwF/EWC."""
    base = [m for m in BASELINES if m in results]
    if not base:
        return {}
    best_last = max(mean_std(results[m]["last_acc"])[0] for m in base)
    least_forgetting = min(mean_std(results[m]["avg_forgetting"])[0] for m in base)
    out: dict[str, Any] = {"best_baseline_last_acc": best_last, "baseline_min_forgetting": least_forgetting}
    for m in ("etag", "ir"):
        if m in results:
            last = mean_std(results[m]["last_acc"])[0]
            forget = mean_std(results[m]["avg_forgetting"])[0]
            out[m] = {
                "last_acc": last,
                "last_acc_at_least_50": last >= 50.0,
                "margin_over_best_baseline": last - best_last,
                "margin_at_least_30": last - best_last >= 30.0,
                "lower_forgetting": forget < least_forgetting,
            }
    return out


def run(cfg: Any, run: Run) -> dict[str, Any]:
    import numpy as np

    from workbench.plots import plot_bands, plot_matrix

    root = run.dir / "runs"
    summaries: dict[str, list[dict[str, Any]]] = {m: [] for m in cfg.methods}
    for method in cfg.methods:
        for seed in cfg.seeds:
            summaries[method].append(_one(cfg, method, seed, root))

    results = {m: {k: [metric(s, k) for s in ss] for k, _ in METRICS} for m, ss in summaries.items()}
    header = ["method", "n", *[label for _, label in METRICS]]
    cells = [[m, str(len(ss)), *[cell(results[m][k]) for k, _ in METRICS]] for m, ss in summaries.items()]
    table = to_markdown(header, cells)
    on_header, on_cells = old_new_table(summaries)
    old_new = to_markdown(on_header, on_cells)
    if run.is_main:
        atomic_write_text(run.dir / "table.md", table)
        atomic_write_text(run.dir / "table.csv", to_csv(header, cells))
        atomic_write_text(run.dir / "table_old_new.md", old_new)
        atomic_write_text(run.dir / "table_old_new.csv", to_csv(on_header, on_cells))
        curves = {
            m: [(list(range(1, len(s["seen_acc"]) + 1)), s["seen_acc"]) for s in ss] for m, ss in summaries.items()
        }
        plot_bands(
            curves,
            run.plots / "seen_acc.png",
            "tasks learned",
            "seen-class accuracy (%)",
            f"{cfg.benchmark}: mean ± std over seeds {list(cfg.seeds)}",
        )
        for m, ss in summaries.items():
            stack = np.array([[[np.nan if a is None else a for a in row] for row in s["acc_matrix"]] for s in ss])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # columns of unseen tasks are all NaN
                mean_matrix = np.nanmean(stack, axis=0)
            plot_matrix(
                mean_matrix,
                run.plots / f"acc_matrix_{m}.png",
                f"{m} on {cfg.benchmark} (mean of {len(ss)} seeds)",
                "evaluated task",
                "after task",
                vmin=0,
                vmax=100,
            )
    print(f"\n{cfg.benchmark}, {len(cfg.seeds)} seeds ({'eval on ' + summaries[cfg.methods[0]][0]['eval_split']})")
    print(table)
    print(old_new)
    summary = {
        "benchmark": cfg.benchmark,
        "methods": list(cfg.methods),
        "seeds": list(cfg.seeds),
        "eval_split": summaries[cfg.methods[0]][0]["eval_split"],
        "results": {m: {k: {**stats(v), "values": v} for k, v in r.items()} for m, r in results.items()},
        "seen_acc": {m: [s["seen_acc"] for s in ss] for m, ss in summaries.items()},
        "goal": goal_check(results),
        "table": table,
        "table_old_new": old_new,
    }
    run.write_summary(summary)
    return summary
