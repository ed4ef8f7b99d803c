"""``workbench cil compare``: every (method, seed) as an in-process sub-run, then a mean ± std table and plots.

Every (method, seed) is a ``workbench cil run`` of the core sweep (:mod:`workbench.sweep`: each run its own
process, ``jobs`` = cores at once), under ``<compare run>/runs/cil/<NNN_method-..._seed-...>/``; ``--resume``
skips finished ones and resumes an interrupted one from its last task. The sweep also writes ``stats.md``
(IQM, bootstrap CIs), ``status.md`` and ``logs/``. Outputs: ``table.md`` / ``table.csv`` (last accuracy, average
incremental accuracy, average forgetting, BWT, old- and new-class accuracy after the last task, seconds per
task; mean ± std over seeds with n), ``table_old_new.md`` / ``.csv`` (old / new-class accuracy after every task),
``plots/seen_acc.png`` (seen-class accuracy per task, seed bands) and ``plots/acc_matrix_<method>.png``
(seed-mean accuracy matrix), and in ``summary.json`` the per-method numbers and the goal check of
BENCHMARKS.md (eTag/IR last accuracy ≥ 50 and ≥ 30 points above the best of Naive/LwF/EWC, lower forgetting).
"""

from __future__ import annotations

import json
import warnings
from typing import Any

from workbench.config import flatten_dict, to_dict
from workbench.errors import WorkbenchError
from workbench.io import atomic_write_text
from workbench.report import format_mean_std, mean_std, to_csv, to_markdown
from workbench.runs import Run, load_summary
from workbench.sweep import run_sweep
from workbench.sweep.grid import refuse_split
from workbench.sweep.keys import sweep_options

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


def _text(value: Any) -> str:
    """A config value as the ``key=value`` text a command line would give."""
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "null"
    if isinstance(value, (list, tuple)):
        return json.dumps(list(value))
    return str(value)


def grid_args(cfg: Any) -> list[str]:
    """The ``workbench cil run`` grid of the compare: methods × seeds, and every run key that differs from
    its default (the compare's preset and overrides, resolved)."""
    from continual.config import CILConfig

    defaults = flatten_dict(to_dict(CILConfig()))
    skip = {"method", "seed", "class_order", "name", "run_root"}
    args = [f"method={','.join(cfg.methods)}", f"seed={','.join(str(s) for s in cfg.seeds)}"]
    for key, value in flatten_dict(to_dict(cfg)).items():
        if key in defaults and key not in skip and value != defaults[key]:
            text = _text(value)
            refuse_split(key, text, "list[str]" if isinstance(value, (list, tuple)) else "str")
            args.append(f"{key}={text}")
    return args


def run_grid(cfg: Any, run: Run) -> tuple[dict[str, list[dict[str, Any]]], list[str]]:
    """The runs' summaries per method (finished runs, in seed order) and the names of failed runs."""
    args = grid_args(cfg)  # refuses a setting the grid would split before anything is kept
    run.commit()  # the sub-runs are the sweep's: a resumed compare never rolls back runs it finished
    sweep = run_sweep(["cil", "run"], args, sweep_options(cfg), sweep_dir=run.dir)
    if sweep.exit_code == 130:  # the sweep was interrupted: stop like any command (save, say how to resume)
        raise KeyboardInterrupt
    summaries: dict[str, list[dict[str, Any]]] = {m: [] for m in cfg.methods}
    for entry in (e for e in sweep.runs if e["status"] == "done"):
        summaries[entry["values"].get("method", cfg.methods[0])].append(load_summary(entry["run_dir"]) or {})
    failed = [e["name"] for e in sweep.runs if e["status"] != "done"]
    summaries = {m: ss for m, ss in summaries.items() if ss}
    if not summaries:
        raise WorkbenchError(f"every run failed ({', '.join(failed)}); see {run.dir / 'status.md'} and logs/")
    return summaries, failed


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

    summaries, failed = run_grid(cfg, run)

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
    print(f"\n{cfg.benchmark}, {len(cfg.seeds)} seeds ({'eval on ' + next(iter(summaries.values()))[0]['eval_split']})")
    print(table)
    print(old_new)
    summary = {
        "benchmark": cfg.benchmark,
        "methods": list(cfg.methods),
        "seeds": list(cfg.seeds),
        "eval_split": next(iter(summaries.values()))[0]["eval_split"],
        "results": {m: {k: {**stats(v), "values": v} for k, v in r.items()} for m, r in results.items()},
        "seen_acc": {m: [s["seen_acc"] for s in ss] for m, ss in summaries.items()},
        "goal": goal_check(results),
        "table": table,
        "table_old_new": old_new,
        "failed_runs": failed,
    }
    run.write_summary(summary)  # also when runs failed: the finished ones stay, --resume runs the rest
    if failed:
        raise WorkbenchError(
            f"{len(failed)} runs failed ({', '.join(failed)}); see {run.dir / 'status.md'} and logs/, then: "
            f"workbench cil compare --resume {run.dir}"
        )
    return summary
