"""Every `rl train` run draws its plots from its own logged metrics."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from agents.config import TrainConfig
from agents.plots import plot_data
from agents.train import run as train_run
from workbench.config import resolve_config
from workbench.runs import create_run
from workbench.tracking import read_metrics

PRESETS = Path(__file__).resolve().parents[2] / "agents" / "presets"


def test_train_draws_curves_attention_strip_and_diversity_from_metrics(run_root):
    cfg = resolve_config(
        TrainConfig,
        [
            f"run_root={run_root}",
            "students=3",
            "total_steps=512",
            "n_envs=4",
            "ppo.n_steps=16",
            "ppo.batch_size=32",
            "ppo.n_epochs=1",
            "log_every=64",
            "eval_every=256",
            "eval_episodes=1",
            "eval_envs=1",
            "eval_max_steps=60",
            "progress=false",
            "threads=1",
        ],
        "cartpole",
        PRESETS,
    )
    run = create_run("rl", cfg, "plots")
    train_run(cfg, run)
    run.close()
    plots = run.dir / "plots"
    for name in ("learning_curves.png", "attention.png", "diversity.png"):
        assert (plots / name).is_file() and (plots / name).stat().st_size > 5000, name
    metrics = read_metrics(run.dir)
    data = plot_data(metrics, 3)
    for i in range(3):
        steps, values = data["returns"][i]
        logged = [(e["step"], e[f"student{i}/return"]) for e in metrics if f"student{i}/return" in e]
        assert list(zip(steps, values)) == logged and len(logged) >= 2
    steps, matrix = data["attention"]
    assert matrix.shape == (9, len(steps)) and len(steps) >= 4
    rows = [e for e in metrics if "attention/alpha_1_2" in e]
    np.testing.assert_allclose(matrix[1 * 3 + 2], [e["attention/alpha_1_2"] for e in rows])
    np.testing.assert_allclose(matrix.reshape(3, 3, -1).sum(axis=1), 1.0, atol=1e-5)  # each row of α sums to 1
    assert data["diversity"][0] and data["eval_best"][0]
