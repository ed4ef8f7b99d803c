"""``workbench report PATH... [out=DIR] [metric=KEY] [by=KEY] [reps=N]``: tables of the runs under the paths.

``report.md``/``report.csv``: runs whose resolved configs differ only in ``seed`` (and bookkeeping keys such as
``name``, ``run_root``, ``device``) form one row; each numeric summary value is shown as mean ± std with the
seed count.

``stats.md``/``stats.csv``/``profile.png``: reliable statistics of one metric (:mod:`workbench.stats`): per
method (the varying config keys other than ``by``) the mean, median, IQM and optimality gap, each with a 95 %
stratified bootstrap CI (strata: the values of ``by``, e.g. ``env`` or ``dataset``), the probability of
improvement between methods, and performance profiles.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from workbench.config import flatten_dict
from workbench.errors import WorkbenchError
from workbench.io import atomic_write_text
from workbench.runs import find_runs, load_config_dict, load_summary

IGNORED_KEYS = {"seed", "name", "run_root", "device", "progress", "num_workers", "data_root"}


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, std


def format_mean_std(values: Sequence[float], digits: int = 2) -> str:
    mean, std = mean_std(values)
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def group_runs(paths: Sequence[str | Path]) -> list[dict[str, Any]]:
    """Group runs that differ only by seed; returns rows with ``config``, ``seeds`` and ``summaries``."""
    groups: dict[str, dict[str, Any]] = {}
    for run_dir in find_runs(list(paths)):
        cfg = flatten_dict(load_config_dict(run_dir))
        key_cfg = {k: v for k, v in cfg.items() if k not in IGNORED_KEYS}
        key = json.dumps(key_cfg, sort_keys=True, default=str)
        row = groups.setdefault(key, {"config": key_cfg, "seeds": [], "summaries": [], "dirs": []})
        row["seeds"].append(cfg.get("seed"))
        row["summaries"].append(load_summary(run_dir))
        row["dirs"].append(str(run_dir))
    return list(groups.values())


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def build_table(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Header and cells: the config keys that vary between rows, ``n``, then every numeric summary key."""
    if not rows:
        raise WorkbenchError("no runs found (folders with summary.json and config.yaml) under the given paths")
    keys = sorted({k for r in rows for k in r["config"]})
    varying = [k for k in keys if len({json.dumps(r["config"].get(k), default=str) for r in rows}) > 1]
    if not varying:
        varying = [k for k in ("command", "method", "dataset", "model") if k in keys][:2]
    metric_keys: list[str] = []
    for r in rows:
        for s in r["summaries"]:
            for k, v in s.items():
                if _is_number(v) and k not in metric_keys and k not in ("seed",):
                    metric_keys.append(k)
    header = [*varying, "n", *metric_keys]
    cells = []
    for r in rows:
        line = [str(r["config"].get(k, "")) for k in varying] + [str(len(r["seeds"]))]
        for k in metric_keys:
            vals = [s[k] for s in r["summaries"] if _is_number(s.get(k))]
            line.append(format_mean_std(vals) if vals else "")
        cells.append(line)
    return header, cells


def to_markdown(header: list[str], cells: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(c) + " |" for c in cells]
    return "\n".join(lines) + "\n"


def to_csv(header: list[str], cells: list[list[str]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows(cells)
    return buf.getvalue()


def write_report(paths: Sequence[str | Path], out: str | Path) -> tuple[Path, Path, str]:
    """Write ``report.md`` and ``report.csv`` into ``out``; returns their paths and the Markdown."""
    header, cells = build_table(group_runs(paths))
    md = to_markdown(header, cells)
    out = Path(out)
    md_path = atomic_write_text(out / "report.md", md)
    csv_path = atomic_write_text(out / "report.csv", to_csv(header, cells))
    return md_path, csv_path, md


#: summary keys tried first as the metric of ``stats.md``
PREFERRED_METRICS = ("normalized_score", "score", "mean_return", "return", "test_acc", "final_acc", "avg_acc", "acc")
STRATA_KEYS = ("env", "dataset", "benchmark", "task", "game")


def choose_metric(rows: list[dict[str, Any]]) -> str:
    keys: list[str] = []
    for r in rows:
        for s in r["summaries"]:
            keys += [k for k, v in s.items() if _is_number(v) and k != "seed" and k not in keys]
    if not keys:
        raise WorkbenchError("no numeric result in the runs' summary.json; nothing to compute statistics on")
    for want in PREFERRED_METRICS:
        if want in keys:
            return want
    return next((k for k in keys if any(w in k for w in ("score", "return", "acc"))), keys[0])


def stat_cells(rows: list[dict[str, Any]], metric: str, by: str | None) -> tuple[dict[str, dict[str, list]], str]:
    """``{method: {task: [metric per run]}}`` and the strata key used ('' for one stratum)."""
    keys = sorted({k for r in rows for k in r["config"]})
    varying = [k for k in keys if len({json.dumps(r["config"].get(k), default=str) for r in rows}) > 1]
    if by is None:
        by = next((k for k in STRATA_KEYS if k in varying), "")
    elif by not in keys:
        raise WorkbenchError(f"unknown key '{by}' for by=; the runs' config keys are: {', '.join(keys)}")
    method_keys = [k for k in varying if k != by]
    cells: dict[str, dict[str, list]] = {}
    for r in rows:
        method = ", ".join(f"{k}={r['config'].get(k)}" for k in method_keys) or "all runs"
        task = str(r["config"].get(by, "")) if by else "all"
        vals = [s[metric] for s in r["summaries"] if _is_number(s.get(metric))]
        cells.setdefault(method, {}).setdefault(task, []).extend(vals)
    return {m: {t: v for t, v in tasks.items() if v} for m, tasks in cells.items()}, by


def write_stats(
    paths: Sequence[str | Path],
    out: str | Path,
    metric: str | None = None,
    by: str | None = None,
    reps: int = 2000,
    seed: int = 0,
    gamma: float | None = None,
) -> list[Path]:
    """Write ``stats.md``, ``stats.csv`` and ``profile.png`` into ``out``; returns their paths."""
    import numpy as np

    from workbench import stats
    from workbench.plots import plot_performance_profiles

    rows = group_runs(paths)
    if not rows:
        raise WorkbenchError("no runs found (folders with summary.json and config.yaml) under the given paths")
    metric = metric or choose_metric(rows)
    cells, by = stat_cells(rows, metric, by)
    cells = {m: t for m, t in cells.items() if t}
    if not cells:
        raise WorkbenchError(f"no run has a numeric '{metric}' in its summary.json; pass metric=KEY")
    pooled = np.concatenate([np.asarray(v, float) for t in cells.values() for v in t.values()])
    if gamma is None:  # accuracies in percent: the gap to 100 %; normalised scores: to 1
        gamma = 100.0 if pooled.max() > 1 and pooled.min() >= 0 and pooled.max() <= 100 else 1.0
    method_text = stats.CI_METHOD.format(reps=reps, seed=seed)
    strata = f"strata: {by} ({len({t for c in cells.values() for t in c})} values)" if by else "one stratum"
    lines = [
        f"# Statistics of `{metric}`",
        "",
        f"CI: {method_text}; {strata}. n: runs per cell (method × "
        f"{by or 'all'}). Optimality gap threshold γ = {gamma:g}.",
        "",
        "| method | cells | n | mean | median | IQM | optimality gap |",
        "|---|---|---|---|---|---|---|",
    ]
    csv_rows = [["method", "metric", "statistic", "value", "ci_low", "ci_high", "n_runs", "cells", "ci_method"]]
    for method, tasks in cells.items():
        agg = stats.aggregate(list(tasks.values()), reps=reps, seed=seed, gamma=gamma)
        sizes = sorted({len(v) for v in tasks.values()})
        n = str(sizes[0]) if len(sizes) == 1 else f"{sizes[0]}–{sizes[-1]}"
        lines.append(f"| {method} | {len(tasks)} | {n} | " + " | ".join(agg[k].format() for k in agg) + " |")
        total = sum(len(v) for v in tasks.values())
        for k, e in agg.items():
            csv_rows.append([method, metric, k, e.value, e.low, e.high, total, len(tasks), method_text])
    names = list(cells)
    pairs = (
        [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
        if len(names) <= 8
        else [(a, names[0]) for a in names[1:]]
    )
    if pairs:
        lines += [
            "",
            "## Probability of improvement P(X > Y)",
            "",
            "P(X > Y) = P(a run of X scores higher than a run of Y on the same task), ties ½, averaged over "
            "tasks; CI resamples X and Y independently within each task.",
            "",
            "| X | Y | shared cells | P(X > Y) |",
            "|---|---|---|---|",
        ]
    for a, b in pairs:
        shared = [t for t in cells[a] if t in cells[b]]
        if not shared:
            continue
        est = stats.probability_of_improvement(
            [cells[a][t] for t in shared], [cells[b][t] for t in shared], reps=reps, seed=seed
        )
        lines.append(f"| {a} | {b} | {len(shared)} | {est.format()} |")
        csv_rows.append(
            [
                f"{a} > {b}",
                metric,
                "probability_of_improvement",
                est.value,
                est.low,
                est.high,
                sum(len(cells[a][t]) + len(cells[b][t]) for t in shared),
                len(shared),
                method_text,
            ]
        )
    taus = np.linspace(pooled.min(), pooled.max(), 60) if pooled.max() > pooled.min() else pooled[:1]
    profiles = {
        m: (taus, *stats.performance_profile(list(t.values()), taus, reps=reps, seed=seed)) for m, t in cells.items()
    }
    out = Path(out)
    lines += ["", "![performance profile](profile.png)", ""]
    paths_out = [
        atomic_write_text(out / "stats.md", "\n".join(lines)),
        atomic_write_text(out / "stats.csv", _csv(csv_rows)),
    ]
    paths_out.append(
        plot_performance_profiles(
            profiles, out / "profile.png", xlabel=metric, title=f"performance profile ({method_text.split(',')[0]})"
        )
    )
    return paths_out


def _csv(rows: list[list[Any]]) -> str:
    buf = io.StringIO()
    csv.writer(buf).writerows(rows)
    return buf.getvalue()


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(
            "usage: workbench report PATH... [out=DIR] [metric=KEY] [by=KEY] [reps=N]   (default out: the first "
            "PATH; metric: the first score/return/accuracy key; by: env or dataset when they vary)"
        )
        return 0
    from workbench.command import parse_options

    allowed = {"out": str, "metric": str, "by": str, "reps": int}
    paths, opts = parse_options(argv, allowed, "workbench report")
    if not paths:
        raise WorkbenchError("workbench report needs at least one PATH holding run directories")
    if opts.get("reps", 2000) < 100:
        raise WorkbenchError(f"bad value for 'reps': {opts['reps']}; must be ≥ 100")
    out = opts.get("out") or (paths[0] if Path(paths[0]).is_dir() else ".")
    md_path, csv_path, md = write_report(paths, out)
    stats_paths = write_stats(paths, out, opts.get("metric"), opts.get("by"), opts.get("reps", 2000))
    print(md)
    print((Path(out) / "stats.md").read_text())
    print(f"wrote {md_path}, {csv_path}, " + ", ".join(str(p) for p in stats_paths))
    return 0
