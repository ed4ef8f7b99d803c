"""``workbench rl compare``: every (game, method, seed) of one train config as a ``workbench rl train`` run of
the core sweep (:mod:`workbench.sweep`: each run its own process, ``jobs`` = cores at once, finished runs
skipped on ``--resume``), then per game a table (per-student final return, group best, mean return over
training, human-normalised for Atari; mean ± std over seeds) and learning curves with seed bands, and the
aggregate over games.

Aggregate (Agarwal et al., arXiv 2108.13264, via :mod:`workbench.stats`): each run's ``score`` (default the
students' mean final return) normalised per game as ``(score − random) / (reference − random)``, with
``random`` the return of uniform random play measured here on the evaluation envs, and ``reference`` the
human score for Atari, a ``references`` entry, or else the best score of any run of that game in this
compare (stated in the report). Per method: IQM, mean, median with 95% stratified bootstrap CIs (strata:
games); P(opd-da > each other method); performance profiles (``plots/profile.png``).

Sub-runs live under ``<compare run>/runs/rl/...``, so ``workbench report`` and TensorBoard see them too.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from agents.config import CompareConfig, TrainConfig
from agents.plots import plot_run
from workbench.config import resolve_config
from workbench.io import atomic_write_text
from workbench.plots import plot_bands
from workbench.report import format_mean_std, to_csv, to_markdown
from workbench.runs import Run
from workbench.tracking import read_metrics


def _preset_for(cfg: CompareConfig, env: str | None = None) -> str:
    """The algorithm's preset for the env's family (``atari``, ``minatar``, the env id, else ``default``)."""
    from agents.envs import env_family
    from agents.registry import ALGORITHMS

    env = env or cfg.env
    if cfg.preset:
        return cfg.preset
    presets = ALGORITHMS[cfg.algo].presets
    for key in (env_family(env), env):
        if key in presets:
            return presets[key]
    return presets["default"]


def sub_config(cfg: CompareConfig, method: str, seed: int, run_root: str, env: str | None = None) -> TrainConfig:
    from agents.train import run as _  # noqa: F401 - fail early if the training stack cannot import
    from workbench.cli import load_object

    presets = load_object("agents.commands:GROUP").commands[0].presets_dir()
    env = env or cfg.env
    overrides = [
        f"env={env}",
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
    return resolve_config(TrainConfig, overrides, _preset_for(cfg, env), presets)


def _cell(values: list[float]) -> str:
    return f"{format_mean_std(values)} (n={len(values)})" if values else "n/a"


def games(cfg: CompareConfig) -> list[str]:
    return list(cfg.envs) or [cfg.env]


def grid_args(cfg: CompareConfig) -> list[str]:
    """The ``workbench rl train`` grid of the compare: games × methods × seeds, the shared keys, then
    ``overrides`` (which replace a shared key of the same name)."""
    keys = {
        "env": ",".join(games(cfg)),
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
    return [f"{k}={v}" for k, v in keys.items()]


def run_grid(cfg: CompareConfig, run: Run) -> list[dict[str, Any]]:
    """Every (game, method, seed) as a ``workbench rl train`` run of the core sweep, in the compare's own run
    directory (each run its own process, ``jobs`` = cores at once; a resumed compare skips finished runs and
    resumes interrupted ones). One sweep per game when the games need different presets."""
    from workbench.errors import WorkbenchError
    from workbench.sweep import run_sweep
    from workbench.sweep.keys import sweep_options

    run.commit()  # the sub-runs are the sweep's: a resumed compare never rolls back runs it finished
    by_preset: dict[str, list[str]] = {}
    for env in games(cfg):
        by_preset.setdefault(_preset_for(cfg, env), []).append(env)
    entries, failed = [], []
    for i, (preset, envs) in enumerate(by_preset.items()):
        one = dataclasses.replace(cfg, envs=envs, env=envs[0])
        where = run.dir if len(by_preset) == 1 else run.dir / f"sweep-{i}"
        sweep = run_sweep(["rl", "train"], ["--preset", preset, *grid_args(one)], sweep_options(cfg), sweep_dir=where)
        if sweep.exit_code == 130:  # the sweep was interrupted: stop like any command (save, say how to resume)
            raise KeyboardInterrupt
        for e in sweep.runs:
            e["values"].setdefault("env", envs[0])
            e["values"].setdefault("method", cfg.methods[0])
        entries += [e for e in sweep.runs if e["status"] == "done"]
        failed += [e["name"] for e in sweep.runs if e["status"] != "done"]
    if failed:
        raise WorkbenchError(
            f"{len(failed)} runs failed ({', '.join(failed)}); see status.md and logs/ in {run.dir}, then: "
            f"workbench rl compare --resume {run.dir}"
        )
    return entries


def run(cfg: CompareConfig, run: Run) -> dict[str, Any]:
    from workbench.runs import load_summary

    envs = games(cfg)
    results: dict[str, dict[str, list[dict[str, Any]]]] = {e: {m: [] for m in cfg.methods} for e in envs}
    curves: dict[str, dict[str, list]] = {e: {m: [] for m in cfg.methods} for e in envs}
    for entry in run_grid(cfg, run):
        env, method, sub_dir = entry["values"]["env"], entry["values"]["method"], entry["run_dir"]
        summary = dict(load_summary(sub_dir) or {})
        plot_run(sub_dir, cfg.students, f"{method} {cfg.algo} {env} seed {entry['values'].get('seed', cfg.seeds[0])}")
        summary["run_dir"] = sub_dir
        results[env][method].append(summary)
        points = [(e["step"], e["group/mean_return"]) for e in read_metrics(sub_dir) if "group/mean_return" in e]
        if points:
            curves[env][method].append(([p[0] for p in points], [p[1] for p in points]))
    title = f"{cfg.algo}, {cfg.students} students, {cfg.total_steps} steps each, seeds {cfg.seeds}"
    sections, csv_parts, per_game = [], [], {}
    for env in envs:
        header, cells, rows = _table(cfg, results[env])
        per_game[env] = rows
        table = to_markdown(header, cells)
        print(table if len(envs) == 1 else f"{env}\n{table}")
        if len(envs) == 1:
            sections.append(f"# {env} {title}\n\n{table}\n")
        else:
            sections.append(f"## {env}\n\n{table}\n\n![{env}](plots/learning_curves_{_slug(env)}.png)\n")
        multi = len(envs) > 1
        csv_parts.append(to_csv(["env", *header], [[env, *c] for c in cells]) if multi else to_csv(header, cells))
        name = "learning_curves.png" if len(envs) == 1 else f"learning_curves_{_slug(env)}.png"
        plot_bands(
            curves[env],
            run.plots / name,
            "env steps per student",
            "group mean return (training episodes)",
            f"{env} {cfg.algo}",
        )
    if len(envs) > 1:
        sections.insert(0, f"# {len(envs)} games, {title}\n")
    agg_text, agg = aggregate_section(cfg, results, run)
    atomic_write_text(run.dir / "report.md", "\n".join(sections) + "\n" + agg_text)
    atomic_write_text(run.dir / "report.csv", "".join(csv_parts) if len(envs) == 1 else "\n".join(csv_parts))
    print(agg_text)
    summary = {
        "env": envs[0] if len(envs) == 1 else envs,
        "algo": cfg.algo,
        "students": cfg.students,
        "total_steps": cfg.total_steps,
        "seeds": list(cfg.seeds),
        "methods": per_game[envs[0]],
        "aggregate": agg,
    }
    if len(envs) > 1:
        summary["games"] = per_game
    run.write_summary(summary)
    return summary


def _slug(env: str) -> str:
    return env.replace("/", "-")


def random_return(cfg: CompareConfig, env: str, episodes: int) -> float:
    """Mean unclipped return of uniform random play on ``episodes`` evaluation episodes of ``env``."""
    import numpy as np

    from agents.envs import make_env, parse_env_id
    from agents.evaluate import run_episodes
    from workbench.seeding import derive_seed

    spec = parse_env_id(env)
    sub = sub_config(cfg, cfg.methods[0], cfg.seeds[0], "", env)
    venv = make_env(
        spec,
        min(sub.eval_envs, episodes),
        derive_seed(cfg.seed, "random", env),
        sub.env_backend,
        evaluation=True,
        sticky_actions=sub.sticky_actions,
        frame_stack=sub.frame_stack,
    )
    rng = np.random.default_rng(derive_seed(cfg.seed, "random-actions", env))
    n = int(venv.action_space.n)
    returns, _ = run_episodes(lambda obs: rng.integers(0, n, len(obs)), venv, episodes, sub.eval_max_steps)
    venv.close()
    return float(np.mean(returns))


def _reference(cfg: CompareConfig, env: str, scores: list[float]) -> tuple[float, str]:
    from agents.scores import SCORES, game_of

    for entry in cfg.references:
        key, _, value = entry.rpartition("=")
        if key == env:
            return float(value), "given (references)"
    game = game_of(env)
    if game in SCORES:
        return SCORES[game][1], "human (Mnih et al. 2015)"
    return max(scores), "best run of this compare"


def aggregate_section(
    cfg: CompareConfig, results: dict[str, dict[str, list[dict[str, Any]]]], run: Run
) -> tuple[str, dict[str, Any]]:
    """Normalised scores per game, and per method IQM/mean/median with CIs, P(opd-da > other), profiles."""
    import numpy as np

    from workbench import stats
    from workbench.plots import plot_performance_profiles

    envs = list(results)
    normalised: dict[str, dict[str, list[float]]] = {m: {} for m in cfg.methods}
    refs: dict[str, dict[str, Any]] = {}
    for env in envs:
        raw = {m: [r[cfg.score] for r in runs if r.get(cfg.score) is not None] for m, runs in results[env].items()}
        pooled = [x for v in raw.values() for x in v]
        if not pooled:
            continue
        low = random_return(cfg, env, cfg.random_episodes)
        high, source = _reference(cfg, env, pooled)
        if high == low:
            high = low + 1.0
            source += " (equal to random: scale 1)"
        refs[env] = {"random": low, "reference": high, "reference_source": source}
        for m, v in raw.items():
            if v:
                normalised[m][env] = [float(stats.min_max_normalise(x, low, high)) for x in v]
    methods = [m for m in cfg.methods if normalised[m]]
    out: dict[str, Any] = {"score": cfg.score, "normalisation": refs, "normalised": normalised, "methods": {}}
    if not methods:
        return "", out
    method_text = stats.CI_METHOD.format(reps=cfg.bootstrap_reps, seed=cfg.seed)
    lines = [
        f"## Aggregate over {len(envs)} game{'s' if len(envs) > 1 else ''}: normalised `{cfg.score}`",
        "",
        "Normalised score = (score − random) / (reference − random) per game; random = uniform random play "
        f"({cfg.random_episodes} evaluation episodes). CI: {method_text}.",
        "",
        "| game | random | reference | source |",
        "|---|---|---|---|",
        *[f"| {e} | {r['random']:.2f} | {r['reference']:.2f} | {r['reference_source']} |" for e, r in refs.items()],
        "",
        "| method | games | runs | IQM | mean | median |",
        "|---|---|---|---|---|---|",
    ]
    for m in methods:
        agg = stats.aggregate(list(normalised[m].values()), reps=cfg.bootstrap_reps, seed=cfg.seed)
        runs = sum(len(v) for v in normalised[m].values())
        lines.append(
            f"| {m} | {len(normalised[m])} | {runs} | {agg['iqm'].format()} | {agg['mean'].format()} | "
            f"{agg['median'].format()} |"
        )
        out["methods"][m] = {k: [e.value, e.low, e.high] for k, e in agg.items()}
    if "opd-da" in methods and len(methods) > 1:
        lines += ["", "| P(opd-da > Y) | shared games | estimate [95% CI] |", "|---|---|---|"]
        out["probability_of_improvement"] = {}
        for m in methods:
            if m == "opd-da":
                continue
            shared = [e for e in normalised["opd-da"] if e in normalised[m]]
            est = stats.probability_of_improvement(
                [normalised["opd-da"][e] for e in shared],
                [normalised[m][e] for e in shared],
                reps=cfg.bootstrap_reps,
                seed=cfg.seed,
            )
            lines.append(f"| {m} | {len(shared)} | {est.format()} |")
            out["probability_of_improvement"][m] = [est.value, est.low, est.high]
    pooled = np.concatenate([np.asarray(v) for m in methods for v in normalised[m].values()])
    taus = np.linspace(pooled.min(), pooled.max(), 60) if pooled.max() > pooled.min() else pooled[:1]
    reps, seed = cfg.bootstrap_reps, cfg.seed
    profiles = {
        m: (taus, *stats.performance_profile(list(normalised[m].values()), taus, reps=reps, seed=seed)) for m in methods
    }
    plot_performance_profiles(profiles, run.plots / "profile.png", xlabel=f"normalised {cfg.score}")
    lines += ["", "![performance profiles](plots/profile.png)", ""]
    return "\n".join(lines), out


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
