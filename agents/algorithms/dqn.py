"""DQN students (Mnih et al. 2015): SB3 ``DQN`` as :class:`~agents.students.GroupDQN`.

A group iteration runs SB3's ``collect_rollouts`` for ``train_freq`` steps per student, then its gradient
steps (Huber TD loss + the group's distillation term on each replay minibatch). Decisions are
``softmax(Q/τ)`` (``dqn_tau``); features the Q head's input (the last hidden layer).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from agents.registry import ALGORITHMS, Algorithm
from agents.students import GroupDQN, dqn_outputs

_REPLAY_FIELDS = ("observations", "next_observations", "actions", "rewards", "dones", "timeouts")


class DQNAlgorithm(Algorithm):
    section = "dqn"
    presets = {"atari": "atari-dqn", "minatar": "minatar-dqn", "default": "cartpole-dqn"}

    def build(self, cfg, env, seed, device, policy, policy_kwargs):
        d = cfg.dqn
        kwargs = dict(policy_kwargs)
        if d.net_arch:
            kwargs["net_arch"] = list(d.net_arch)
        return GroupDQN(
            policy,
            env,
            learning_rate=d.learning_rate,
            buffer_size=d.buffer_size,
            learning_starts=d.learning_starts,
            batch_size=d.batch_size,
            gamma=d.gamma,
            train_freq=d.train_freq,
            gradient_steps=d.gradient_steps,
            target_update_interval=d.target_update_interval,
            exploration_fraction=d.exploration_fraction,
            exploration_final_eps=d.exploration_final_eps,
            max_grad_norm=d.max_grad_norm,
            optimize_memory_usage=d.optimize_memory_usage,
            replay_buffer_kwargs={"handle_timeout_termination": not d.optimize_memory_usage},
            policy_kwargs=kwargs or None,
            seed=seed,
            device=device,
            verbose=0,
        )

    def validate(self, cfg, spec) -> None:
        from agents.config import check_replay_memory
        from agents.envs import observation_bytes

        check_replay_memory(cfg, observation_bytes(spec, cfg.frame_stack))

    def iterate(self, group) -> None:
        """``train_freq`` steps of every student in lockstep (:func:`~agents.rollout.collect_group_transitions`),
        then each student's ``gradient_steps`` updates (``-1``: as many as steps collected), as SB3's ``learn``."""
        from agents.rollout import collect_group_transitions

        collected = collect_group_transitions(group.students, group.students[0].train_freq.frequency)
        for s in group.students:
            if s.num_timesteps > s.learning_starts and s.num_timesteps > group.refill_until:
                steps = s.gradient_steps if s.gradient_steps >= 0 else collected
                if steps > 0:
                    s.train(batch_size=s.batch_size, gradient_steps=steps)

    def outputs(self, student, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return dqn_outputs(student.policy, obs)

    def decisions(self, raw: torch.Tensor, tau: float) -> torch.Tensor:
        return raw / tau

    def act(self, student, obs: np.ndarray, deterministic: bool, epsilon: float, rng: np.random.Generator):
        actions, _ = student.policy.predict(obs, deterministic=True)
        n_actions = int(student.action_space.n)
        explore = rng.random(len(actions)) < epsilon
        return np.where(explore, rng.integers(0, n_actions, len(actions)), actions)

    def probe_observations(self, student, n: int) -> np.ndarray | None:
        size = student.replay_buffer.size()
        if size < 2:
            return None
        idx = np.linspace(0, size - 1, min(n, size)).astype(np.int64)
        return student.replay_buffer.observations[idx, 0]

    def state_dict(self, student, cfg) -> dict[str, Any]:
        return {"replay": _replay_state(student.replay_buffer)} if cfg.save_replay else {}

    def load_state_dict(self, student, entry: dict[str, Any], group) -> None:
        if "replay" in entry:
            _load_replay_state(student.replay_buffer, entry["replay"])
        else:
            # an empty buffer refills with the current policy before learning resumes
            group.refill_until = max(
                group.refill_until, student.num_timesteps + min(student.learning_starts, student.buffer_size)
            )


def _replay_state(buffer) -> dict[str, Any]:
    state: dict[str, Any] = {"pos": int(buffer.pos), "full": bool(buffer.full)}
    for name in _REPLAY_FIELDS:
        arr = getattr(buffer, name, None)
        if arr is not None:
            state[name] = torch.from_numpy(np.ascontiguousarray(arr))
    return state


def _load_replay_state(buffer, state: dict[str, Any]) -> None:
    buffer.pos, buffer.full = state["pos"], state["full"]
    for name in _REPLAY_FIELDS:
        if name in state and getattr(buffer, name, None) is not None:
            getattr(buffer, name)[...] = state[name].numpy()


ALGORITHMS.register("dqn", DQNAlgorithm())
