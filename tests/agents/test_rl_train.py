"""End to end: groups of PPO/DQN students on CartPole and Atari (both env backends) write a complete run
directory with per-student TensorBoard tags; λ = 0 reproduces independent students; resume continues."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from agents.config import TrainConfig
from agents.train import GroupRunner
from agents.train import run as train_run
from workbench.config import resolve_config
from workbench.runs import create_run, open_run
from workbench.tracking import read_metrics

PRESETS = Path(__file__).resolve().parents[2] / "agents" / "presets"
TINY_PPO = ["ppo.n_steps=16", "ppo.batch_size=32", "ppo.n_epochs=1"]
TINY_EVAL = ["eval_episodes=1", "eval_envs=1", "eval_max_steps=60", "progress=false", "threads=1", "env_threads=1"]


def _cfg(run_root: Path, *overrides: str, preset: str = "cartpole") -> TrainConfig:
    return resolve_config(TrainConfig, [f"run_root={run_root}", *overrides], preset, PRESETS)


def _tags(run_dir: Path) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return set(acc.Tags()["scalars"]) | set(acc.Tags()["images"])


def _train(cfg: TrainConfig) -> Path:
    run = create_run("rl", cfg, f"{cfg.algo}-{cfg.method}")
    try:
        train_run(cfg, run)
    finally:
        run.close()
    return run.dir


def _check_run(run_dir: Path, cfg: TrainConfig, rl_tags: tuple[str, ...]) -> dict:
    summary = json.loads((run_dir / "summary.json").read_text())
    for key in (
        "method",
        "algo",
        "env",
        "students",
        "total_steps",
        "final_return",
        "group_best_return",
        "steps_per_second",
    ):
        assert key in summary, key
    assert summary["method"] == cfg.method and summary["students"] == cfg.students
    assert len(summary["final_return"]) == cfg.students
    assert summary["steps_done"] >= cfg.total_steps
    assert (run_dir / "checkpoints" / "last.pt").is_file()
    tags = _tags(run_dir)
    for i in range(cfg.students):
        for t in rl_tags:
            assert f"student{i}/{t}" in tags, (f"student{i}/{t}", sorted(tags))
        assert f"eval/student{i}/return" in tags
    assert "group/steps_per_second" in tags and "eval/group_best" in tags
    if cfg.method != "independent":
        for i in range(cfg.students):
            assert f"student{i}/L_dec" in tags
    if cfg.method == "opd-da":
        assert "attention/matrix" in tags and "attention/alpha_0_1" in tags
        assert "group/diversity" in tags
    return summary


def test_cartpole_ppo_opd_da_end_to_end(run_root):
    cfg = _cfg(
        run_root, "students=2", "total_steps=512", "n_envs=4", *TINY_PPO, "log_every=64", *TINY_EVAL, "eval_every=256"
    )
    run_dir = _train(cfg)
    summary = _check_run(run_dir, cfg, ("return", "length", "pg_loss", "value_loss", "entropy_loss", "L_feat"))
    assert summary["env_backend"] == "gymnasium"
    evals = [e for e in read_metrics(run_dir) if "eval/group_best" in e]
    assert len(evals) >= 2  # periodic + final


def test_cartpole_dqn_opd_mean_end_to_end(run_root):
    cfg = _cfg(
        run_root,
        "method=opd-mean",
        "students=2",
        "total_steps=400",
        "dqn.learning_starts=100",
        "dqn.train_freq=50",
        "dqn.gradient_steps=5",
        "dqn.buffer_size=1000",
        "dqn.batch_size=16",
        "log_every=100",
        *TINY_EVAL,
        preset="cartpole-dqn",
    )
    run_dir = _train(cfg)
    _check_run(run_dir, cfg, ("td_loss", "exploration_rate"))


@pytest.mark.parametrize(("algo", "backend"), [("ppo", "ale"), ("ppo", "sb3"), ("dqn", "ale")])
def test_atari_group_end_to_end(run_root, algo, backend):
    common = ["env=ALE/Pong-v5", f"algo={algo}", f"env_backend={backend}", "students=2", "log_every=32", *TINY_EVAL]
    if algo == "ppo":
        cfg = _cfg(run_root, *common, "total_steps=64", "n_envs=2", *TINY_PPO, preset="demo")
        rl_tags = ("pg_loss", "value_loss", "L_dec", "L_feat")
    else:
        cfg = _cfg(
            run_root,
            *common,
            "total_steps=96",
            "n_envs=1",
            "dqn.buffer_size=200",
            "dqn.learning_starts=32",
            "dqn.batch_size=8",
            "dqn.train_freq=8",
            preset="atari-dqn",
        )
        rl_tags = ("td_loss", "L_dec", "L_feat")
    run_dir = _train(cfg)
    summary = _check_run(run_dir, cfg, rl_tags)
    assert summary["env_backend"] == backend
    assert "human_normalized" in summary


def _params(trainer: GroupRunner) -> list[torch.Tensor]:
    return [p.detach().clone() for s in trainer.group.students for p in s.policy.parameters()]


@pytest.mark.parametrize("algo", ["ppo", "dqn"])
def test_lambda_zero_opd_da_equals_independent(run_root, algo):
    if algo == "ppo":
        base = ["students=2", "total_steps=256", "n_envs=4", *TINY_PPO]
        preset = "cartpole"
    else:
        base = [
            "students=2",
            "total_steps=300",
            "dqn.learning_starts=50",
            "dqn.train_freq=25",
            "dqn.gradient_steps=4",
            "dqn.buffer_size=500",
            "dqn.batch_size=16",
        ]
        preset = "cartpole-dqn"
    base += ["eval_episodes=0", "progress=false", "threads=1", "log_every=64"]
    results = {}
    for name, extra in {
        "independent": ["method=independent"],
        "zero": ["method=opd-da", "lambda_dec=0", "lambda_feat=0"],
        "distil": ["method=opd-da", "lambda_dec=1", "lambda_feat=0.1"],
    }.items():
        trainer = GroupRunner(_cfg(run_root, *base, *extra, preset=preset), None)
        trainer.train()
        results[name] = _params(trainer)
        trainer.close()
    assert all(torch.equal(a, b) for a, b in zip(results["independent"], results["zero"]))
    assert not all(torch.equal(a, b) for a, b in zip(results["independent"], results["distil"]))


def test_group_ppo_without_distiller_is_sb3_ppo():
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    from agents.students import GroupPPO, Uint8RolloutBuffer

    kwargs = dict(n_steps=16, batch_size=32, n_epochs=2, seed=5, device="cpu")
    params = []
    for cls, extra in ((PPO, {}), (GroupPPO, {"rollout_buffer_class": Uint8RolloutBuffer})):
        torch.set_num_threads(1)
        model = cls("MlpPolicy", make_vec_env("CartPole-v1", n_envs=4, seed=1), **kwargs, **extra)
        model.learn(256)
        params.append([p.detach().clone() for p in model.policy.parameters()])
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(*params))


def test_resume_after_interrupt_continues_steps_and_curves(run_root, monkeypatch):
    from agents.group import Group

    cfg = _cfg(run_root, "students=2", "total_steps=512", "n_envs=4", *TINY_PPO, "log_every=64", *TINY_EVAL)
    run = create_run("rl", cfg, "resume")
    calls = {"n": 0}
    original = Group.iterate

    def interrupting(self):
        original(self)
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt

    monkeypatch.setattr(Group, "iterate", interrupting)
    with pytest.raises(KeyboardInterrupt):
        train_run(cfg, run)
    run.close()
    monkeypatch.setattr(Group, "iterate", original)
    state = torch.load(run.dir / "checkpoints" / "last.pt", weights_only=True)
    stopped = state["students"][0]["num_timesteps"]
    assert stopped == 4 * 64
    before = read_metrics(run.dir)
    assert before and max(e["step"] for e in before) <= stopped

    resumed, saved = open_run(run.dir, "rl")
    cfg2 = resolve_config(TrainConfig, [], base=saved)
    train_run(cfg2, resumed)
    resumed.close()
    summary = json.loads((run.dir / "summary.json").read_text())
    assert summary["steps_done"] == 512
    steps = [e["step"] for e in read_metrics(run.dir) if "group/steps_per_second" in e]
    assert steps == sorted(set(steps)) and steps[-1] == 512 and any(s > stopped for s in steps)
    assert any(s <= stopped for s in steps)  # the curve before the interruption is kept
    state = torch.load(run.dir / "checkpoints" / "last.pt", weights_only=True)
    assert state["students"][0]["n_updates"] == 512 // 64 * 1  # one epoch per rollout, no update lost or repeated
    assert np.isfinite(summary["steps_per_second"])


def test_linear_schedule_horizon():
    from agents.group import _schedule

    assert _schedule(0.3, "constant", 1000) == 0.3
    full = _schedule(1e-3, "linear", 1000)
    assert full(1.0) == pytest.approx(1e-3) and full(0.5) == pytest.approx(5e-4) and full(0.0) == 0.0
    # 15k steps of a 100k-step schedule: at the end of training the rate is still 85% of the start
    zoo = _schedule(1e-3, "linear", 15_000, 100_000)
    assert zoo(0.0) == pytest.approx(0.85e-3) and zoo(1.0) == pytest.approx(1e-3)
