"""A group of M SB3 students learning one game, stepped together (OPD-DA, arXiv 2406.05488).

Each student has its own env copy (seeded from the master seed), its own SB3 algorithm instance and
optimizer. One *iteration* steps every student once: PPO collects one rollout per student (all students in
lockstep, :mod:`agents.rollout`) and then runs each student's update (with the group's distillation term);
DQN collects ``train_freq`` steps per student and then runs its gradient steps. Checkpoints hold every
student's policy and optimizer, the attention module and its optimizer, the counters and the RNG states
(and optionally DQN replay buffers).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from stable_baselines3.common.logger import configure

from agents import sb3_compat as compat
from agents.config import TrainConfig
from agents.distillation import Distiller, diversity, group_outputs
from agents.envs import make_env, parse_env_id
from agents.registry import ALGORITHMS, METHODS
from agents.rollout import StackedPolicies
from workbench.distill import DecisionAttention
from workbench.seeding import derive_seed, rng_state, seed_everything, set_rng_state

CHECKPOINT_FORMAT = "workbench-rl-group/1"


def _schedule(value: float, kind: str, total_steps: int, schedule_steps: int = 0):
    """SB3 schedule of ``value`` (see :func:`agents.algorithms.ppo.schedule`)."""
    from agents.algorithms.ppo import schedule

    return schedule(value, kind, total_steps, schedule_steps)


def build_student(cfg: TrainConfig, env, seed: int, device: torch.device, atari):
    """One SB3 student of ``cfg.algo`` (``GroupPPO``, ``GroupDQN``, ...) with the config's hyper-parameters;
    ``atari``: the :class:`~agents.envs.EnvSpec` (or whether it is an Atari id)."""
    from agents.networks import policy_for

    policy, policy_kwargs = policy_for(atari)
    return ALGORITHMS[cfg.algo].build(cfg, env, seed, device, policy, policy_kwargs)


class Group:
    """The students, their envs, the distiller and the group counters."""

    def __init__(self, cfg: TrainConfig, device: torch.device) -> None:
        self.cfg = cfg
        self.spec = parse_env_id(cfg.env)
        self.device = device
        self.algorithm = ALGORITHMS[cfg.algo]
        self.method = METHODS[cfg.method]
        self.students = []
        for i in range(cfg.students):
            env = make_env(
                self.spec,
                cfg.n_envs,
                derive_seed(cfg.seed, "env", i),
                cfg.env_backend,
                sticky_actions=cfg.sticky_actions,
                frame_stack=cfg.frame_stack,
                num_threads=cfg.env_threads,
            )
            s = build_student(cfg, env, derive_seed(cfg.seed, "student", i), device, self.spec)
            if self.spec.atari and cfg.channels_last:
                # in place (param.data), so the optimizer keeps the same parameters
                s.policy.to(memory_format=torch.channels_last)
            s.index = i
            s.set_logger(configure(folder=None, format_strings=[]))
            s.group_callback = compat.setup_learn(s, cfg.total_steps)
            self.students.append(s)
        self.attention: DecisionAttention | None = None
        self.distiller: Distiller | None = None
        if self.method.distils:
            if self.method.attention:
                space = self.students[0].observation_space
                probe = torch.zeros((1, *space.shape), dtype=torch.as_tensor(space.low).dtype, device=device)
                z, h = group_outputs(self.students[:1], probe, cfg.algo, cfg.dqn_tau)
                dim = h.shape[-1] if cfg.attention_source == "features" else z.shape[-1]
                # its own RNG stream: building it must not change the students' randomness
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(derive_seed(cfg.seed, "attention"))
                    self.attention = DecisionAttention(
                        dim,
                        cfg.students,
                        scaled=cfg.attention_scaled,
                        source=cfg.attention_source,
                        include_self=cfg.attention_self,
                    ).to(device)
            lr = cfg.attention_lr or self.algorithm.learning_rate(cfg)
            self.distiller = Distiller(
                self.students,
                cfg.method,
                cfg.algo,
                cfg.lambda_dec,
                cfg.lambda_feat,
                cfg.temperature,
                cfg.dqn_tau,
                cfg.ramp_steps,
                self.attention,
                lr,
                step_fn=lambda: self.steps,
            )
            for s in self.students:
                s.distiller = self.distiller
        self.stacked: StackedPolicies | None = None
        self.iteration = 0
        self.refill_until = 0
        self.algorithm.setup(self)
        seed_everything(derive_seed(cfg.seed, "loop"))

    @property
    def steps(self) -> int:
        """Env steps per student (the students advance in lockstep)."""
        return min(s.num_timesteps for s in self.students)

    def iterate(self) -> None:
        """One group iteration: every student collects experience, then updates."""
        self.algorithm.iterate(self)
        self.iteration += 1

    def probe_observations(self, n: int = 256) -> np.ndarray | None:
        """A batch of recent observations of student 0 (for the diversity metric)."""
        return self.algorithm.probe_observations(self.students[0], n)

    def diversity(self) -> float | None:
        if len(self.students) < 2:
            return None
        obs = self.probe_observations()
        if obs is None:
            return None
        z, _ = group_outputs(self.students, obs, self.cfg.algo, self.cfg.dqn_tau)
        return diversity(z)

    # -- checkpoints -----------------------------------------------------------------------------------
    def state_dict(self, history: dict[str, Any]) -> dict[str, Any]:
        students = []
        for s in self.students:
            entry = {
                "policy": {k: v.detach().cpu() for k, v in s.policy.state_dict().items()},
                "optimizer": s.policy.optimizer.state_dict(),
                **compat.counters(s),
                **self.algorithm.state_dict(s, self.cfg),
            }
            students.append(entry)
        state: dict[str, Any] = {
            "students": students,
            "iteration": self.iteration,
            "rng": rng_state(),
            "history": history,
        }
        if self.attention is not None:
            state["attention"] = {k: v.detach().cpu() for k, v in self.attention.state_dict().items()}
            state["attention_optimizer"] = self.distiller.optimizer.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> dict[str, Any]:
        """Restore a checkpoint; returns its history."""
        for s, entry in zip(self.students, state["students"], strict=True):
            s.policy.load_state_dict(entry["policy"])
            s.policy.optimizer.load_state_dict(entry["optimizer"])
            compat.load_counters(s, entry)
            self.algorithm.load_state_dict(s, entry, self)
        if self.attention is not None and "attention" in state:
            self.attention.load_state_dict(state["attention"])
            self.distiller.optimizer.load_state_dict(state["attention_optimizer"])
        self.iteration = state["iteration"]
        set_rng_state(state["rng"])
        return state["history"]
