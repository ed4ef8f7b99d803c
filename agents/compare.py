"""``workbench rl compare``: every (method, seed) of one train config as a grid of ``workbench rl train`` runs
through the core sweep (``workbench.sweep``: each run its own process, ``jobs`` = cores at once, finished runs
skipped and interrupted ones resumed on ``--resume``), then a table (per-student final return, group best,
mean return over training, human-normalised for Atari; mean ± std over seeds), the sweep's statistics
(``stats.md``: IQM and bootstrap CIs) and learning curves with seed bands.

Sub-runs live under ``<compare run>/runs/rl/...``, so ``workbench report`` and TensorBoard see them too.
"""

from __future__ import annotations

from typing import Any

from agents.config import CompareConfig
from workbench.io import atomic_write_text
from workbench.plots import plot_bands
from workbench.report import format_mean_std, to_csv, to_markdown
from workbench.runs import Run
from workbench.tracking import read_metrics


def _preset_for(cfg: CompareConfig) -> str:
    if cfg.preset:
        return cfg.preset
    if cfg.env.startswith("ALE/") or cfg.env.endswith("NoFrameskip-v4"):
        return "atari-ppo-100k" if cfg.algo == "ppo" else "atari-dqn"
    if cfg.env == "Acrobot-v1" and cfg.algo == "ppo":
        return "acrobot"
    return "cartpole" if cfg.algo == "ppo" else "cartpole-dqn"


def _cell(values: list[float]) -> str:
    return f"{format_mean_std(values)} (n={len(values)})" if values else "n/a"


def grid_args(cfg: CompareConfig) -> list[str]:
    """The ``workbench rl train`` grid of the compare: methods × seeds, the shared keys, then ``overrides``
    (which replace a shared key of the same name)."""
    keys = {
        "env": cfg.env,
        "algo": cfg.algo,
        "method": ",".join(cfg.methods),
        "seed": ",".join(str(s) for s in cfg.seeds),
        "students": str(cfg.students),
        "total_steps": str(cfg.total_steps),
        "device": cfg.device,
        "progress": str(cfg.progress).lower(),
    }
    for item in cfg.overrides:
        key, _, value = item.partition("=")
        keys[key.strip()] = value
    return ["--preset", _preset_for(cfg), *(f"{k}={v}" for k, v in keys.items())]


def run(cfg: CompareConfig, run: Run) -> dict[str, Any]:
    from workbench.errors import WorkbenchError
    from workbench.runs import load_summary
    from workbench.sweep import run_sweep

    run.commit()  # the sub-runs are the sweep's: a resumed compare never rolls back runs it finished
    sweep = run_sweep(["rl", "train"], grid_args(cfg), sweep_dir=run.dir)
    if sweep.exit_code == 130:  # the sweep was interrupted: stop like any command (save, print how to resume)
        raise KeyboardInterrupt
    failed = [e["name"] for e in sweep.runs if e["status"] != "done"]
    results: dict[str, list[dict[str, Any]]] = {m: [] for m in cfg.methods}
    curves: dict[str, list[tuple[list[float], list[float]]]] = {m: [] for m in cfg.methods}
    for entry in (e for e in sweep.runs if e["status"] == "done"):
        method = entry["values"].get("method", cfg.methods[0])
        summary = dict(load_summary(entry["run_dir"]) or {})
        summary["run_dir"] = entry["run_dir"]
        results[method].append(summary)
        points = [
            (e["step"], e["group/mean_return"]) for e in read_metrics(entry["run_dir"]) if "group/mean_return" in e
        ]
        if points:
            curves[method].append(([p[0] for p in points], [p[1] for p in points]))
    header, cells, rows = _table(cfg, results)
    table = to_markdown(header, cells)
    atomic_write_text(
        run.dir / "report.md",
        f"# {cfg.env} {cfg.algo}, {cfg.students} students, "
        f"{cfg.total_steps} steps each, seeds {cfg.seeds}\n\n{table}\n",
    )
    atomic_write_text(run.dir / "report.csv", to_csv(header, cells))
    plot_bands(
        curves,
        run.plots / "learning_curves.png",
        "env steps per student",
        "group mean return (training episodes)",
        f"{cfg.env} {cfg.algo}",
    )
    print(table)
    summary = {
        "env": cfg.env,
        "algo": cfg.algo,
        "students": cfg.students,
        "total_steps": cfg.total_steps,
        "seeds": list(cfg.seeds),
        "methods": rows,
        "failed_runs": failed,
    }
    run.write_summary(summary)  # also when runs failed: the finished ones stay, --resume runs the rest
    if failed:
        raise WorkbenchError(
            f"{len(failed)} runs failed ({', '.join(failed)}); see {run.dir / 'status.md'} and logs/, then: "
            f"workbench rl compare --resume {run.dir}"
        )
    return summary


def _table(cfg: CompareConfig, results: dict[str, list[dict[str, Any]]]):
    atari = any(s.get("human_normalized") is not None for runs in results.values() for s in runs)
    header = [
        "method",
        *[f"student{i} final" for i in range(cfg.students)],
        "group best",
        "student mean",
        "mean return over training",
    ]
    if atari:
        header.append("group best human-norm.")
    cells, rows = [], {}
    for method, runs in results.items():
        per_student = [
            [r["final_return"][i] for r in runs if r["final_return"][i] is not None] for i in range(cfg.students)
        ]
        best = [r["group_best_return"] for r in runs if r["group_best_return"] is not None]
        mean = [r["group_mean_return"] for r in runs if r["group_mean_return"] is not None]
        auc = [
            sum(v for v in r["mean_train_return"] if v is not None) / max(1, len(r["mean_train_return"])) for r in runs
        ]
        row = [method, *[_cell(v) for v in per_student], _cell(best), _cell(mean), _cell(auc)]
        hn = [r["group_best_human_normalized"] for r in runs if r.get("group_best_human_normalized") is not None]
        if atari:
            row.append(_cell(hn))
        cells.append(row)
        rows[method] = {
            "group_best": best,
            "student_mean": mean,
            "mean_train_return": auc,
            "per_student": per_student,
            "group_best_human_normalized": hn,
            "run_dirs": [r["run_dir"] for r in runs],
        }
    return header, cells, rows
