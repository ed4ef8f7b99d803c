"""``workbench rl compare``: every (method, seed) of one train config as sub-runs in this process, then a
table (per-student final return, group best, mean return over training, human-normalised for Atari; mean ±
std over seeds) and learning curves with seed bands.

Sub-runs live under ``<compare run>/runs/rl/...``, so ``workbench report`` and TensorBoard see them too.
"""

from __future__ import annotations

from typing import Any

from agents.config import CompareConfig, TrainConfig
from agents.plots import plot_run
from workbench.config import resolve_config
from workbench.io import atomic_write_text
from workbench.plots import plot_bands
from workbench.report import format_mean_std, to_csv, to_markdown
from workbench.runs import Run, create_run, default_name
from workbench.tracking import read_metrics


def _preset_for(cfg: CompareConfig) -> str:
    """The algorithm's preset for the env's family (``atari``, ``minatar``, the env id, else ``default``)."""
    from agents.envs import env_family
    from agents.registry import ALGORITHMS

    if cfg.preset:
        return cfg.preset
    presets = ALGORITHMS[cfg.algo].presets
    for key in (env_family(cfg.env), cfg.env):
        if key in presets:
            return presets[key]
    return presets["default"]


def sub_config(cfg: CompareConfig, method: str, seed: int, run_root: str) -> TrainConfig:
    from agents.train import run as _  # noqa: F401 - fail early if the training stack cannot import
    from workbench.cli import load_object

    presets = load_object("agents.commands:GROUP").commands[0].presets_dir()
    overrides = [
        f"env={cfg.env}",
        f"algo={cfg.algo}",
        f"method={method}",
        f"seed={seed}",
        f"students={cfg.students}",
        f"total_steps={cfg.total_steps}",
        f"device={cfg.device}",
        f"run_root={run_root}",
        f"progress={str(cfg.progress).lower()}",
        *cfg.overrides,
    ]
    return resolve_config(TrainConfig, overrides, _preset_for(cfg), presets)


def _cell(values: list[float]) -> str:
    return f"{format_mean_std(values)} (n={len(values)})" if values else "n/a"


def run(cfg: CompareConfig, run: Run) -> dict[str, Any]:
    from agents.train import GroupRunner

    results: dict[str, list[dict[str, Any]]] = {m: [] for m in cfg.methods}
    curves: dict[str, list[tuple[list[float], list[float]]]] = {m: [] for m in cfg.methods}
    # validate every sub-config before anything trains
    configs = [(m, s, sub_config(cfg, m, s, str(run.dir / "runs"))) for m in cfg.methods for s in cfg.seeds]
    for method, seed, sub_cfg in configs:
        print(f"== {method} seed {seed}", flush=True)
        sub = create_run("rl", sub_cfg, default_name(sub_cfg, ("env", "algo", "method")))
        trainer = GroupRunner(sub_cfg, sub)
        try:
            summary = trainer.train()
        finally:
            trainer.close()
            sub.close()
        sub.write_summary(summary)
        plot_run(sub.dir, sub_cfg.students, f"{method} {cfg.algo} {cfg.env} seed {seed}")
        summary["run_dir"] = str(sub.dir)
        results[method].append(summary)
        points = [(e["step"], e["group/mean_return"]) for e in read_metrics(sub.dir) if "group/mean_return" in e]
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
    }
    run.write_summary(summary)
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
