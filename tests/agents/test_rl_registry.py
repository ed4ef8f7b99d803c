"""Registry-wide: every registered RL algorithm × distillation method trains, checkpoints and resumes; the
CLI's choices and the compare's defaults are the registries."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from agents.config import CompareConfig, TrainConfig
from agents.registry import ALGORITHMS, METHODS, Algorithm, RLMethod
from agents.train import GroupRunner
from workbench.config import resolve_config

PRESETS = Path(__file__).resolve().parents[2] / "agents" / "presets"
TINY = {
    "ppo": ["n_envs=2", "ppo.n_steps=16", "ppo.batch_size=16", "ppo.n_epochs=1", "total_steps=64"],
    "dqn": [
        "n_envs=1",
        "total_steps=64",
        "dqn.learning_starts=16",
        "dqn.train_freq=16",
        "dqn.gradient_steps=2",
        "dqn.buffer_size=200",
        "dqn.batch_size=8",
    ],
}
COMMON = ["students=2", "eval_episodes=0", "progress=false", "threads=1", "log_every=16", "seed=3"]


def test_every_algorithm_has_a_tiny_setting_here():
    assert set(ALGORITHMS.names()) == set(TINY), "add the new algorithm's tiny settings to TINY"
    assert all(isinstance(e, Algorithm) for _, e in ALGORITHMS.items())
    assert all(isinstance(e, RLMethod) for _, e in METHODS.items())


def test_cli_choices_and_compare_defaults_are_the_registries():
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    assert fields["algo"].metadata["choices"] == ALGORITHMS.names()
    assert fields["method"].metadata["choices"] == METHODS.names()
    assert CompareConfig().methods == list(METHODS.names())


def _cfg(algo: str, method: str, run_root: Path, *extra: str) -> TrainConfig:
    preset = ALGORITHMS[algo].presets["default"]
    overrides = [f"algo={algo}", f"method={method}", f"run_root={run_root}", *TINY[algo], *COMMON, *extra]
    return resolve_config(TrainConfig, overrides, preset, PRESETS)


def _params(runner: GroupRunner) -> list[torch.Tensor]:
    return [p.detach().clone() for s in runner.group.students for p in s.policy.parameters()]


def _interrupt_at(steps: int):
    def hook(runner: GroupRunner) -> None:
        if runner.group.steps >= steps:
            raise KeyboardInterrupt

    return hook


@pytest.mark.parametrize("method", METHODS.names())
@pytest.mark.parametrize("algo", ALGORITHMS.names())
def test_every_algorithm_and_method_trains_and_resumes(algo, method, run_root):
    """Straight and interrupted-then-resumed runs reach the same step and update counts (env states are not
    checkpointed, so the weights differ after a resume; the counters, schedules and distiller do not)."""
    from agents import sb3_compat
    from workbench.runs import create_run

    straight = GroupRunner(_cfg(algo, method, run_root), None)
    summary = straight.train()
    expected = [sb3_compat.counters(s) for s in straight.group.students]
    straight.close()
    assert summary["steps_done"] == 64 and summary["method"] == method and summary["algo"] == algo
    assert (straight.group.distiller is not None) == METHODS[method].distils

    cfg = _cfg(algo, method, run_root, *(["save_replay=true"] if algo == "dqn" else []))
    run = create_run("rl", cfg, f"{algo}-{method}")
    half = GroupRunner(cfg, run)
    half.on_iteration = _interrupt_at(32)
    with pytest.raises(KeyboardInterrupt):
        half.train()
    half.close()
    resumed = GroupRunner(cfg, run)
    resumed.restore()
    assert resumed.group.steps == 32
    resumed.train()
    got = [sb3_compat.counters(s) for s in resumed.group.students]
    resumed.close()
    run.close()
    for e, g in zip(expected, got):
        assert (g["num_timesteps"], g["n_updates"]) == (e["num_timesteps"], e["n_updates"]), (algo, method)


@pytest.mark.parametrize("flag", ["true", "false"])
def test_attention_self_key_reaches_the_group_attention(tmp_path, flag):
    runner = GroupRunner(_cfg("ppo", "opd-da", tmp_path, f"attention_self={flag}"), None)
    assert runner.group.attention is not None and runner.group.attention.include_self is (flag == "true")
