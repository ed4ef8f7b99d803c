"""The group's lockstep rollout: with one student it fills the buffer exactly as SB3's ``collect_rollouts``;
batched (vmapped) inference equals one forward per student."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agents.config import TrainConfig
from agents.envs import make_env, parse_env_id
from agents.group import build_student
from agents.rollout import StackedPolicies, collect_group_rollouts, resolve_inference
from agents.students import ppo_outputs
from workbench.config import resolve_config
from workbench.seeding import seed_everything

BUFFER_FIELDS = ("observations", "actions", "rewards", "episode_starts", "values", "log_probs", "advantages")


def _student(env_id: str, seed: int = 3):
    cfg = resolve_config(
        TrainConfig, [f"env={env_id}", "ppo.n_steps=24", "ppo.batch_size=32", "n_envs=2", "total_steps=2000"]
    )
    spec = parse_env_id(env_id)
    env = make_env(spec, cfg.n_envs, seed=11, backend=cfg.env_backend, frame_stack=cfg.frame_stack, num_threads=1)
    s = build_student(cfg, env, seed, torch.device("cpu"), spec.atari)
    _, s.group_callback = s._setup_learn(cfg.total_steps, callback=None, progress_bar=False)
    return s


@pytest.mark.parametrize("env_id", ["CartPole-v1", "ALE/Pong-v5"])
def test_one_student_lockstep_rollout_equals_sb3(env_id):
    torch.set_num_threads(1)
    a, b = _student(env_id), _student(env_id)
    seed_everything(7)
    a.collect_rollouts(a.env, a.group_callback, a.rollout_buffer, n_rollout_steps=a.n_steps)
    seed_everything(7)
    collect_group_rollouts([b])
    assert a.num_timesteps == b.num_timesteps == 48
    for name in BUFFER_FIELDS:
        np.testing.assert_array_equal(getattr(a.rollout_buffer, name), getattr(b.rollout_buffer, name), err_msg=name)
    np.testing.assert_array_equal(a._last_obs, b._last_obs)
    assert len(a.ep_info_buffer) == len(b.ep_info_buffer)


def test_time_limit_truncations_are_bootstrapped_like_sb3():
    """Episodes cut by a time limit get reward + γ·V(terminal obs), exactly as in SB3."""
    import gymnasium as gym
    from stable_baselines3.common.env_util import make_vec_env

    torch.set_num_threads(1)
    cfg = resolve_config(TrainConfig, ["ppo.n_steps=64", "ppo.batch_size=32", "n_envs=2"])
    students = []
    for _ in range(2):
        env = make_vec_env(lambda: gym.make("CartPole-v1", max_episode_steps=8), n_envs=2, seed=11)
        s = build_student(cfg, env, 3, torch.device("cpu"), atari=False)
        _, s.group_callback = s._setup_learn(cfg.total_steps, callback=None, progress_bar=False)
        students.append(s)
    a, b = students
    seed_everything(1)
    a.collect_rollouts(a.env, a.group_callback, a.rollout_buffer, n_rollout_steps=a.n_steps)
    seed_everything(1)
    collect_group_rollouts([b])
    assert any(ep["l"] == 8 for ep in b.ep_info_buffer), "no episode reached the time limit"
    for name in BUFFER_FIELDS:
        np.testing.assert_array_equal(getattr(a.rollout_buffer, name), getattr(b.rollout_buffer, name), err_msg=name)


@pytest.mark.parametrize("env_id", ["CartPole-v1", "ALE/Pong-v5"])
def test_vmapped_inference_equals_one_forward_per_student(env_id):
    torch.set_num_threads(1)
    students = [_student(env_id, seed=i) for i in range(3)]
    stacked = StackedPolicies([s.policy for s in students])
    stacked.restack()
    space = students[0].observation_space
    gen = torch.Generator().manual_seed(0)
    if space.dtype == np.uint8:
        obs = torch.randint(0, 256, (3, 2, *space.shape), generator=gen, dtype=torch.uint8)
    else:
        obs = torch.randn((3, 2, *space.shape), generator=gen)
    logits, feats, values = stacked(obs)
    for i, s in enumerate(students):
        z, h, v = ppo_outputs(s.policy, obs[i])
        torch.testing.assert_close(logits[i], z, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(feats[i], h, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(values[i], v, rtol=1e-5, atol=1e-5)
    # restacking picks up parameter changes
    with torch.no_grad():
        students[1].policy.value_net.bias.add_(1.0)
    stacked.restack()
    torch.testing.assert_close(stacked(obs)[2][1], values[1] + 1.0, rtol=1e-5, atol=1e-5)


def test_group_rollout_with_vmap_fills_every_buffer():
    torch.set_num_threads(1)
    students = [_student("CartPole-v1", seed=i) for i in range(2)]
    collect_group_rollouts(students, StackedPolicies([s.policy for s in students]))
    for s in students:
        assert s.num_timesteps == 48 and s.rollout_buffer.full
    assert not np.array_equal(students[0].rollout_buffer.actions, students[1].rollout_buffer.actions)


def test_resolve_inference():
    assert resolve_inference("auto", torch.device("cpu")) == "loop"
    assert resolve_inference("auto", torch.device("cuda")) == "vmap"
    assert resolve_inference("vmap", torch.device("cpu")) == "vmap"


REPLAY_FIELDS = ("observations", "next_observations", "actions", "rewards", "dones", "timeouts")


def _dqn_student(env_id: str, make=None):
    from agents import sb3_compat

    cfg = resolve_config(
        TrainConfig,
        [
            f"env={env_id}",
            "algo=dqn",
            "n_envs=2",
            "total_steps=400",
            "dqn.learning_starts=40",  # crossed inside the collection: random, then ε-greedy actions
            "dqn.buffer_size=300",
            "dqn.optimize_memory_usage=false",
            "dqn.train_freq=60",
            "dqn.target_update_interval=20",
            "dqn.exploration_fraction=0.5",
        ],
    )
    spec = parse_env_id(env_id)
    env = make() if make is not None else make_env(spec, cfg.n_envs, seed=11, frame_stack=cfg.frame_stack)
    s = build_student(cfg, env, 3, torch.device("cpu"), spec)
    s.group_callback = sb3_compat.setup_learn(s, cfg.total_steps)
    return s


@pytest.mark.parametrize("env_id", ["CartPole-v1", "MinAtar/Breakout-v1"])
def test_one_dqn_student_lockstep_transitions_equal_sb3(env_id):
    """``collect_group_transitions`` with one student = SB3's ``collect_rollouts`` (replay, counters, ε,
    target updates), time-limit truncations included (CartPole cut at 8 steps)."""
    import gymnasium as gym
    from stable_baselines3.common.env_util import make_vec_env

    from agents.rollout import collect_group_transitions

    if env_id.startswith("MinAtar"):
        pytest.importorskip("minatar")
        make = None
    else:

        def make():
            return make_vec_env(lambda: gym.make("CartPole-v1", max_episode_steps=8), n_envs=2, seed=11)

    torch.set_num_threads(1)
    a, b = _dqn_student(env_id, make), _dqn_student(env_id, make)
    seed_everything(5)
    for _ in range(2):
        a.collect_rollouts(a.env, a.group_callback, a.train_freq, a.replay_buffer, None, a.learning_starts, None)
    seed_everything(5)
    for _ in range(2):
        collect_group_transitions([b], b.train_freq.frequency)
    assert a.num_timesteps == b.num_timesteps == 240
    assert (a.replay_buffer.pos, a.replay_buffer.full) == (b.replay_buffer.pos, b.replay_buffer.full)
    for name in REPLAY_FIELDS:
        np.testing.assert_array_equal(getattr(a.replay_buffer, name), getattr(b.replay_buffer, name), err_msg=name)
    assert a.exploration_rate == b.exploration_rate < 1.0
    assert (a._n_calls, a._episode_num) == (b._n_calls, b._episode_num) and a._episode_num > 0
    assert [e["r"] for e in a.ep_info_buffer] == [e["r"] for e in b.ep_info_buffer]
    if make is not None:
        assert b.replay_buffer.timeouts.any(), "no time-limit truncation was exercised"
    for pa, pb in zip(a.q_net_target.parameters(), b.q_net_target.parameters()):
        torch.testing.assert_close(pa, pb)
