"""PPO rollouts of a whole group in lockstep: every env step of every student in one loop.

SB3's ``OnPolicyAlgorithm.collect_rollouts`` fills one learner's buffer at a time: policy forward, then a
blocking ``env.step``. A group can do better, because the students' policies are fixed while they collect:

* **Overlapped env steps.** Student i's envs step (``step_async``; ale-py's native vector env runs them in its
  own C++ threads) while students i+1, ... run their policy forward; the group then waits for all envs.
* **Batched inference** (``inference="vmap"``): one call computes every student's logits and values, their
  parameters stacked once per rollout (``torch.func.stack_module_state`` + ``vmap``). It pays off where
  per-call overhead dominates (a GPU: one kernel launch series instead of M); on a CPU the grouped
  convolutions are slower than M plain ones (measured 1.2-1.5x slower, NatureCNN, batch 8, 1 thread), so
  ``inference="auto"`` uses vmap on CUDA only.

Everything else is SB3's ``collect_rollouts`` step for step (episode bookkeeping, bootstrapping of
time-outs with the value of the terminal observation, GAE at the end), so with one student and
``inference="loop"`` the buffer is identical to SB3's.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.utils import obs_as_tensor
from torch.func import functional_call, stack_module_state, vmap

from agents import sb3_compat as compat
from agents.students import ppo_outputs


def resolve_inference(inference: str, device: torch.device) -> str:
    """``auto`` → ``vmap`` on CUDA, ``loop`` elsewhere."""
    if inference == "auto":
        return "vmap" if device.type == "cuda" else "loop"
    return inference


class _Outputs(torch.nn.Module):
    """``ppo_outputs`` of a policy as a module forward, so that ``functional_call`` can swap its parameters."""

    def __init__(self, policy) -> None:
        super().__init__()
        self.policy = policy

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return ppo_outputs(self.policy, obs)


class StackedPolicies:
    """Every student's ``(logits, feature, value)`` in one vmapped call; parameters restacked per rollout."""

    def __init__(self, policies: Sequence) -> None:
        self.modules = [_Outputs(p) for p in policies]
        self.params: dict[str, torch.Tensor] = {}
        self.buffers: dict[str, torch.Tensor] = {}

        # a stateless skeleton: functional_call on a live policy can leave batched tensors behind in it
        skeleton = copy.deepcopy(self.modules[0]).to("meta")

        def call(params, buffers, obs):
            return functional_call(skeleton, (params, buffers), (obs,))

        self._call = vmap(call)

    def restack(self) -> None:
        with torch.no_grad():
            params, buffers = stack_module_state(self.modules)
        # vmap's batched convolution wants contiguous weights (the students may hold channels-last ones)
        self.params = {k: v.contiguous() for k, v in params.items()}
        self.buffers = {k: v.contiguous() for k, v in buffers.items()}

    def __call__(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``obs`` of shape (M, n_envs, ...) → logits, features, values with a leading student axis."""
        return self._call(self.params, self.buffers, obs)


def _act(student, logits: torch.Tensor) -> tuple[np.ndarray, torch.Tensor]:
    """Sample actions from the policy's distribution over ``logits``: (numpy actions, log-probabilities)."""
    dist = student.policy.action_dist.proba_distribution(action_logits=logits)
    actions = dist.get_actions(deterministic=False)
    log_prob = dist.log_prob(actions)
    actions = actions.reshape((-1, *student.action_space.shape))
    return actions.cpu().numpy(), log_prob


def _env_actions(student, actions: np.ndarray) -> np.ndarray:
    space = student.action_space
    if isinstance(space, spaces.Box):
        if student.policy.squash_output:
            return student.policy.unscale_action(actions)
        return np.clip(actions, space.low, space.high)
    return actions


def collect_group_rollouts(students: Sequence, stacked: StackedPolicies | None = None) -> None:
    """Fill every student's rollout buffer with ``n_steps`` steps of its own envs, in lockstep.

    ``stacked`` (a :class:`StackedPolicies` over the students' policies) switches to batched inference.
    """
    n_steps = students[0].n_steps
    for s in students:
        if s.use_sde:
            raise ValueError("the group rollout does not support gSDE (use_sde=True); set use_sde=False")
        if s.n_steps != n_steps:
            raise ValueError("all students of a group collect rollouts of the same length")
        s.policy.set_training_mode(False)
        s.rollout_buffer.reset()
        s.group_callback.on_rollout_start()
    if stacked is not None:
        stacked.restack()
    device = students[0].device
    steps = [None] * len(students)
    for _ in range(n_steps):
        with torch.no_grad():
            if stacked is not None:
                obs = torch.stack([obs_as_tensor(compat.last_obs(s), device) for s in students])
                logits, _, values = stacked(obs)
            for i, s in enumerate(students):
                if stacked is None:
                    lg, _, value = ppo_outputs(s.policy, obs_as_tensor(compat.last_obs(s), device))
                else:
                    lg, value = logits[i], values[i]
                actions, log_prob = _act(s, lg)
                s.env.step_async(_env_actions(s, actions))
                steps[i] = (actions, value, log_prob)
        for s, (actions, values_i, log_prob) in zip(students, steps):
            _store_step(s, actions, values_i, log_prob)
    for s in students:
        with torch.no_grad():
            last_values = s.policy.predict_values(obs_as_tensor(compat.last_obs(s), device))
        s.rollout_buffer.compute_returns_and_advantage(last_values=last_values, dones=compat.last_episode_starts(s))
        s.group_callback.on_rollout_end()


def _store_step(s, actions: np.ndarray, values: torch.Tensor, log_probs: torch.Tensor) -> None:
    """Wait for a student's env step and record it as SB3's ``collect_rollouts`` does."""
    new_obs, rewards, dones, infos = s.env.step_wait()
    s.num_timesteps += s.env.num_envs
    s.group_callback.update_locals({"new_obs": new_obs, "rewards": rewards, "dones": dones, "infos": infos})
    s.group_callback.on_step()
    compat.record_infos(s, infos, dones)
    if isinstance(s.action_space, spaces.Discrete):
        actions = actions.reshape(-1, 1)
    for idx, done in enumerate(dones):
        info = infos[idx]
        if done and info.get("terminal_observation") is not None and info.get("TimeLimit.truncated", False):
            terminal_obs = s.policy.obs_to_tensor(info["terminal_observation"])[0]
            with torch.no_grad():
                terminal_value = s.policy.predict_values(terminal_obs)[0]
            rewards[idx] += s.gamma * terminal_value
    s.rollout_buffer.add(compat.last_obs(s), actions, rewards, compat.last_episode_starts(s), values, log_probs)
    compat.advance(s, new_obs, dones)


def collect_group_transitions(students: Sequence, train_freq: int) -> int:
    """DQN (off-policy) students in lockstep: ``train_freq`` env steps of every student, each student's env
    stepping (``step_async``) while the next students choose their actions; returns the transitions
    collected per student (SB3's ``RolloutReturn.episode_timesteps``).

    Per student it is SB3's ``OffPolicyAlgorithm.collect_rollouts`` with a step-unit ``train_freq``, step for
    step (random actions before ``learning_starts``, ε-greedy after, replay transitions with terminal
    observations and time-outs, target updates and exploration schedule in ``_on_step``), so with one
    student the replay buffer equals SB3's (test).
    """
    for s in students:
        s.policy.set_training_mode(False)
        s.group_callback.on_rollout_start()
    pending = [None] * len(students)
    for _ in range(train_freq):
        for i, s in enumerate(students):
            actions, buffer_actions = compat.sample_action(s, s.learning_starts, s.env.num_envs)
            s.env.step_async(actions)
            pending[i] = buffer_actions
        for s, buffer_actions in zip(students, pending):
            new_obs, rewards, dones, infos = s.env.step_wait()
            s.num_timesteps += s.env.num_envs
            s.group_callback.update_locals({"new_obs": new_obs, "rewards": rewards, "dones": dones, "infos": infos})
            s.group_callback.on_step()
            compat.record_off_policy_step(s, s.replay_buffer, buffer_actions, new_obs, rewards, dones, infos)
    for s in students:
        s.group_callback.on_rollout_end()
    return train_freq * students[0].env.num_envs
