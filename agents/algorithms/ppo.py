"""PPO students (Schulman et al., arXiv 1707.06347): SB3 ``PPO`` as :class:`~agents.students.GroupPPO`.

A group iteration collects one rollout per student in lockstep (:mod:`agents.rollout`), then runs each
student's clipped-surrogate update with the group's distillation term on every minibatch. Decisions are the
action logits; features the policy's last hidden layer (NatureCNN's 512-d output for CNN policies).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from agents import sb3_compat as compat
from agents.registry import ALGORITHMS, Algorithm
from agents.students import GroupPPO, Uint8RolloutBuffer, ppo_outputs
from workbench.errors import WorkbenchError


def schedule(value: float, kind: str, total_steps: int, schedule_steps: int = 0):
    """SB3 schedule of ``value``: constant, or linear from ``value`` to 0 over ``schedule_steps`` env steps
    (``total_steps`` when 0). SB3's ``progress_remaining`` runs from 1 to 0 over ``total_steps``."""
    if kind != "linear":
        return value
    horizon = schedule_steps or total_steps
    return lambda progress_remaining: value * max(0.0, 1.0 - (1.0 - progress_remaining) * total_steps / horizon)


class PPOAlgorithm(Algorithm):
    section = "ppo"
    presets = {"atari": "atari-ppo-100k", "minatar": "minatar-ppo", "Acrobot-v1": "acrobot", "default": "cartpole"}

    def build(self, cfg, env, seed, device, policy, policy_kwargs):
        p = cfg.ppo
        kwargs = dict(policy_kwargs)
        if p.net_arch:
            kwargs["net_arch"] = list(p.net_arch)
        return GroupPPO(
            policy,
            env,
            learning_rate=schedule(p.learning_rate, p.lr_schedule, cfg.total_steps, p.schedule_steps),
            n_steps=p.n_steps,
            batch_size=p.batch_size,
            n_epochs=p.n_epochs,
            gamma=p.gamma,
            gae_lambda=p.gae_lambda,
            clip_range=schedule(p.clip_range, p.clip_schedule, cfg.total_steps, p.schedule_steps),
            ent_coef=p.ent_coef,
            vf_coef=p.vf_coef,
            max_grad_norm=p.max_grad_norm,
            target_kl=p.target_kl or None,
            rollout_buffer_class=Uint8RolloutBuffer,
            policy_kwargs=kwargs or None,
            seed=seed,
            device=device,
            verbose=0,
        )

    def validate(self, cfg, spec) -> None:
        rollout = cfg.ppo.n_steps * cfg.n_envs
        if cfg.ppo.batch_size < 2 or cfg.ppo.batch_size > rollout:
            raise WorkbenchError(f"ppo.batch_size={cfg.ppo.batch_size} must be in [2, n_steps*n_envs={rollout}]")

    def setup(self, group) -> None:
        from agents.rollout import StackedPolicies, resolve_inference

        group.stacked = None
        if resolve_inference(group.cfg.inference, group.device) == "vmap":
            group.stacked = StackedPolicies([s.policy for s in group.students])

    def iterate(self, group) -> None:
        from agents.rollout import collect_group_rollouts

        collect_group_rollouts(group.students, group.stacked)
        for s in group.students:
            compat.update_progress(s)
        for s in group.students:
            s.train()

    def outputs(self, student, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z, h, _ = ppo_outputs(student.policy, obs)
        return z, h

    def act(self, student, obs: np.ndarray, deterministic: bool, epsilon: float, rng: np.random.Generator):
        actions, _ = student.policy.predict(obs, deterministic=deterministic)
        return actions

    def probe_observations(self, student, n: int) -> np.ndarray | None:
        obs = student.rollout_buffer.observations
        obs = obs.reshape(-1, *obs.shape[2:]) if not student.rollout_buffer.generator_ready else obs
        return obs[:: max(1, len(obs) // n)][:n]

    def state_dict(self, student, cfg) -> dict[str, Any]:
        return {}


ALGORITHMS.register("ppo", PPOAlgorithm())
