"""SB3 internals live in ``agents/sb3_compat.py`` only, and still mean what that module assumes.

Fails loudly after an SB3 upgrade that renames a private attribute, changes a private signature, or moves
out of the pinned minor series; and when another ``agents/`` module starts touching SB3 internals itself.
"""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import numpy as np
import pytest
import stable_baselines3
import torch
from stable_baselines3 import DQN, PPO
from stable_baselines3.common.env_util import make_vec_env

from agents import sb3_compat

ROOT = Path(__file__).resolve().parents[2]


def _learners():
    env = make_vec_env("CartPole-v1", n_envs=2, seed=0)
    ppo = PPO("MlpPolicy", env, n_steps=8, batch_size=16, seed=0, device="cpu")
    dqn = DQN("MlpPolicy", make_vec_env("CartPole-v1", n_envs=1, seed=0), buffer_size=100, seed=0, device="cpu")
    for m in (ppo, dqn):
        sb3_compat.setup_learn(m, 64)
    return ppo, dqn


def test_installed_sb3_is_the_pinned_series():
    assert stable_baselines3.__version__.startswith(sb3_compat.SB3_SERIES + "."), (
        f"stable-baselines3 {stable_baselines3.__version__} is installed but agents/sb3_compat.py was checked "
        f"against {sb3_compat.SB3_SERIES}.x: re-check every name in PRIVATE_API, then update SB3_SERIES and the pin"
    )
    pin = re.search(r'"stable-baselines3([^"]*)"', (ROOT / "pyproject.toml").read_text()).group(1)
    major, minor = map(int, sb3_compat.SB3_SERIES.split("."))
    assert pin == f">={major}.{minor},<{major}.{minor + 1}", pin


def test_private_methods_keep_their_signatures():
    for owner, names in sb3_compat.PRIVATE_API.items():
        for name, params in names.items():
            assert hasattr(owner, name), f"SB3 {owner.__name__}.{name} is gone: agents/sb3_compat.py relies on it"
            got = [p for p in inspect.signature(getattr(owner, name)).parameters if p != "self"]
            assert tuple(got) == params, f"SB3 {owner.__name__}.{name}{tuple(got)} changed (expected {params})"


def test_learners_have_the_private_attributes_after_setup():
    ppo, dqn = _learners()
    for m in (ppo, dqn):
        for name in sb3_compat.LEARNER_ATTRIBUTES:
            assert hasattr(m, name), f"SB3 {type(m).__name__} has no {name} after _setup_learn"
    for name in sb3_compat.DQN_ATTRIBUTES:
        assert hasattr(dqn, name), name
    assert isinstance(sb3_compat.last_obs(ppo), np.ndarray) and sb3_compat.last_obs(ppo).shape == (2, 4)
    assert sb3_compat.progress_remaining(ppo) == 1.0
    ppo.num_timesteps = 32
    sb3_compat.update_progress(ppo)
    assert sb3_compat.progress_remaining(ppo) == pytest.approx(0.5)
    before = sb3_compat.counters(dqn)
    sb3_compat.add_updates(dqn, 3)
    assert sb3_compat.counters(dqn)["n_updates"] == before["n_updates"] + 3
    sb3_compat.load_counters(dqn, {**before, "num_timesteps": 16, "n_calls": 5})
    assert dqn.num_timesteps == 16 and dqn._n_calls == 5 and dqn._n_updates == before["n_updates"]


def test_episode_hook_sees_sb3_episodes():
    from agents.students import GroupPPO

    model = GroupPPO("MlpPolicy", make_vec_env("CartPole-v1", n_envs=2, seed=0), n_steps=64, batch_size=64, seed=0)
    model.learn(128)
    assert model.new_episodes and len(model.new_episodes) == len(model.ep_info_buffer)
    assert model.new_episodes == [(e["r"], e["l"]) for e in model.ep_info_buffer]


def _sb3_private_names() -> set[str]:
    ppo, dqn = _learners()
    names: set[str] = set()
    for obj in (ppo, dqn, ppo.rollout_buffer, dqn.replay_buffer, ppo.policy, dqn.policy):
        names |= {n for n in [*dir(obj), *vars(obj)] if n.startswith("_") and not n.startswith("__")}
    return names


def test_no_other_agents_module_touches_sb3_internals():
    private = _sb3_private_names()
    offenders = []
    for path in sorted((ROOT / "agents").rglob("*.py")):
        if path.name == "sb3_compat.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in private:
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} .{node.attr}")
    assert not offenders, "SB3 internals outside agents/sb3_compat.py: " + ", ".join(offenders)


@pytest.mark.parametrize("target_kl", [None, 0.002])
def test_group_ppo_honours_target_kl_as_sb3(target_kl):
    from agents.students import GroupPPO, Uint8RolloutBuffer

    kwargs = dict(n_steps=32, batch_size=16, n_epochs=6, learning_rate=3e-3, target_kl=target_kl, seed=5)
    params, updates = [], []
    for cls, extra in ((PPO, {}), (GroupPPO, {"rollout_buffer_class": Uint8RolloutBuffer})):
        torch.set_num_threads(1)
        model = cls("MlpPolicy", make_vec_env("CartPole-v1", n_envs=2, seed=1), device="cpu", **kwargs, **extra)
        model.learn(256)
        params.append([p.detach().clone() for p in model.policy.parameters()])
        updates.append(model._n_updates)
    assert updates[0] == updates[1]
    if target_kl is not None:  # early stopping did trigger, so the comparison covers it
        assert updates[1] < 6 * 256 // 64
    else:
        assert updates[1] == 6 * 256 // 64
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(*params))


def test_group_ppo_refuses_gsde_in_one_line():
    from agents.students import GroupPPO

    env = make_vec_env("Pendulum-v1", n_envs=1, seed=0)
    with pytest.raises(ValueError, match=r"does not support gSDE \(use_sde=True\).*set use_sde=False") as exc:
        GroupPPO("MlpPolicy", env, use_sde=True, n_steps=8, batch_size=8)
    assert "\n" not in str(exc.value)
