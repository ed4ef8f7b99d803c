"""MinAtar (arXiv 1903.03176) through the optional ``minatar`` package: channel-first uint8 states, MinAtar's
network as the students' feature extractor, SB3-identical PPO rollouts, presets, one-line errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("minatar", reason="optional extra: pip install -e '.[minatar]'")

from agents.config import TrainConfig  # noqa: E402
from agents.envs import MINATAR_GAMES, make_env, parse_env_id  # noqa: E402
from agents.group import build_student  # noqa: E402
from agents.networks import MinAtarNet  # noqa: E402
from agents.rollout import collect_group_rollouts  # noqa: E402
from workbench.config import resolve_config  # noqa: E402
from workbench.errors import WorkbenchError  # noqa: E402
from workbench.seeding import seed_everything  # noqa: E402

PRESETS = Path(__file__).resolve().parents[2] / "agents" / "presets"
BUFFER_FIELDS = ("observations", "actions", "rewards", "episode_starts", "values", "log_probs", "advantages")


@pytest.mark.parametrize("game", MINATAR_GAMES)
def test_wrapper_gives_channel_first_uint8_states_equal_to_minatar(game):
    import gymnasium as gym

    spec = parse_env_id(f"MinAtar/{game}-v1")
    raw = gym.make(f"MinAtar/{game}-v1")
    raw_obs, _ = raw.reset(seed=5)
    h, w, c = raw_obs.shape
    env = make_env(spec, 2, seed=5)
    assert env.observation_space.shape == (c, 10, 10) and env.observation_space.dtype == np.uint8
    assert (h, w) == (10, 10)
    obs = env.reset()
    assert obs.shape == (2, c, 10, 10) and obs.dtype == np.uint8 and set(np.unique(obs)) <= {0, 1}
    # channel k of the wrapper is MinAtar's channel k (env 0 is seeded like the raw env)
    for k in range(c):
        np.testing.assert_array_equal(obs[0, k], raw_obs[..., k].astype(np.uint8))
    rng = np.random.default_rng(0)
    for _ in range(20):
        action = rng.integers(0, env.action_space.n, size=1)
        obs, _, _, _ = env.step(np.repeat(action, 2))
        raw_obs, _, term, trunc, _ = raw.step(int(action[0]))
        if term or trunc:
            break
        np.testing.assert_array_equal(obs[0], np.transpose(raw_obs, (2, 0, 1)).astype(np.uint8))
    env.close()


def _cfg(*overrides: str, preset: str = "minatar-ppo") -> TrainConfig:
    return resolve_config(TrainConfig, list(overrides), preset, PRESETS)


def test_students_use_minatar_net_and_its_128_unit_layer_as_features():
    from agents.distillation import decisions_and_features

    for algo, preset in (("ppo", "minatar-ppo"), ("dqn", "minatar-dqn")):
        cfg = _cfg("env=MinAtar/Seaquest-v1", "n_envs=1", "ppo.n_steps=16", "ppo.batch_size=16", preset=preset)
        spec = parse_env_id(cfg.env)
        s = build_student(cfg, make_env(spec, 1, 0), 0, torch.device("cpu"), spec)
        extractor = s.policy.features_extractor if algo == "ppo" else s.policy.q_net.features_extractor
        assert isinstance(extractor, MinAtarNet)
        conv = extractor.conv[0]
        assert (conv.out_channels, conv.kernel_size, conv.stride) == (16, (3, 3), (1, 1))
        assert extractor.linear[0].out_features == 128
        obs = torch.as_tensor(make_env(spec, 3, 1).reset())
        z, h = decisions_and_features(s, obs, algo, 1.0)
        assert h.shape == (3, 128) and z.shape == (3, s.action_space.n)
        torch.testing.assert_close(h, extractor(obs))  # the heads are single linear layers on the 128 units


def test_one_student_lockstep_rollout_equals_sb3_on_minatar():
    torch.set_num_threads(1)
    cfg = _cfg("env=MinAtar/Breakout-v1", "n_envs=2", "ppo.n_steps=64", "ppo.batch_size=32", "total_steps=2000")
    spec = parse_env_id(cfg.env)
    students = []
    for _ in range(2):
        s = build_student(cfg, make_env(spec, 2, seed=11), 3, torch.device("cpu"), spec)
        from agents import sb3_compat

        s.group_callback = sb3_compat.setup_learn(s, cfg.total_steps)
        students.append(s)
    a, b = students
    seed_everything(7)
    a.collect_rollouts(a.env, a.group_callback, a.rollout_buffer, n_rollout_steps=a.n_steps)
    seed_everything(7)
    collect_group_rollouts([b])
    assert b.rollout_buffer.observations.dtype == np.uint8  # no float copies in the buffer
    for name in BUFFER_FIELDS:
        np.testing.assert_array_equal(
            getattr(a.rollout_buffer, name).astype(np.float32), getattr(b.rollout_buffer, name), err_msg=name
        )
    assert len(a.ep_info_buffer) == len(b.ep_info_buffer)


@pytest.mark.parametrize("preset", ["minatar-ppo", "minatar-dqn"])
def test_minatar_groups_train_end_to_end(preset, run_root):
    from agents.train import GroupRunner

    tiny = {
        "minatar-ppo": ["n_envs=2", "ppo.n_steps=16", "ppo.batch_size=32", "total_steps=64"],
        "minatar-dqn": ["total_steps=96", "dqn.learning_starts=32", "dqn.buffer_size=200", "dqn.batch_size=8"],
    }[preset]
    cfg = _cfg(
        "env=MinAtar/SpaceInvaders-v1",
        "students=2",
        *tiny,
        "eval_episodes=1",
        "eval_envs=1",
        "eval_max_steps=30",
        "progress=false",
        f"run_root={run_root}",
        preset=preset,
    )
    runner = GroupRunner(cfg, None)
    summary = runner.train()
    runner.close()
    assert summary["steps_done"] >= cfg.total_steps and len(summary["final_return"]) == 2
    assert runner.group.attention is not None and runner.group.attention.feature_dim == 128


@pytest.mark.parametrize(
    ("env_id", "needle"),
    [
        ("MinAtar/Breakot-v1", "unknown MinAtar game 'Breakot' (did you mean 'Breakout'?)"),
        ("MinAtar/Pong-v1", "unknown MinAtar game 'Pong'"),
        ("MinAtar/Breakout-v7", "unknown MinAtar id"),
    ],
)
def test_unknown_minatar_game_is_one_line_exit_2(cli, run_root, env_id, needle):
    res = cli("rl", "train", "--preset", "minatar-ppo", f"env={env_id}", f"run_root={run_root}")
    assert res.returncode == 2, res.stderr
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], res.stderr
    assert not run_root.exists() or not any(run_root.rglob("config.yaml"))


def test_missing_minatar_package_is_one_line_naming_the_fix(monkeypatch):
    import importlib.util

    import gymnasium as gym

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(gym, "registry", {k: v for k, v in gym.registry.items() if not k.startswith("MinAtar/")})
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "minatar" else real_find_spec(n, *a))
    with pytest.raises(WorkbenchError) as exc:
        parse_env_id("MinAtar/Breakout-v1")
    msg = str(exc.value)
    assert "\n" not in msg and "pip install -e '.[minatar]'" in msg and "GPL-3.0" in msg


def test_minatar_run_evaluates_and_draws_a_gif(run_root):
    import json

    from agents.eval_command import main as eval_main
    from agents.train import run as train_run
    from workbench.runs import create_run

    cfg = _cfg(
        "env=MinAtar/Asterix-v1",
        "students=2",
        "n_envs=2",
        "ppo.n_steps=16",
        "ppo.batch_size=32",
        "total_steps=64",
        "eval_episodes=1",
        "eval_envs=1",
        "eval_max_steps=30",
        "progress=false",
        f"run_root={run_root}",
    )
    run = create_run("rl", cfg, "gif")
    train_run(cfg, run)
    run.close()
    assert eval_main([str(run.dir), "episodes=2", "eval_envs=2", "gif=true", "gif_steps=10", "max_steps=30"]) == 0
    out = json.loads((run.dir / "eval.json").read_text())
    assert len(out["students"]) == 2 and Path(out["gif"]).is_file()
    from PIL import Image

    img = Image.open(out["gif"])
    assert img.size == (160, 160) and img.n_frames >= 2  # 16-pixel cells; PIL merges identical frames
    assert np.asarray(img.convert("L")).max() > 0  # the state is drawn, not an all-black placeholder
