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

from agents.config import TrainConfig
from agents.distillation import Distiller, diversity, group_outputs
from agents.envs import make_env, parse_env_id
from agents.rollout import StackedPolicies, collect_group_rollouts, resolve_inference
from agents.students import GroupDQN, GroupPPO, Uint8RolloutBuffer
from workbench.distill import DecisionAttention
from workbench.seeding import derive_seed, rng_state, seed_everything, set_rng_state

CHECKPOINT_FORMAT = "workbench-rl-group/1"


def _schedule(value: float, kind: str, total_steps: int, schedule_steps: int = 0):
    """SB3 schedule of ``value``: constant, or linear from ``value`` to 0 over ``schedule_steps`` env steps
    (``total_steps`` when 0). SB3's ``progress_remaining`` runs from 1 to 0 over ``total_steps``."""
    if kind != "linear":
        return value
    horizon = schedule_steps or total_steps
    return lambda progress_remaining: value * max(0.0, 1.0 - (1.0 - progress_remaining) * total_steps / horizon)


def _policy_name(atari: bool) -> str:
    return "CnnPolicy" if atari else "MlpPolicy"


def build_student(cfg: TrainConfig, env, seed: int, device: torch.device, atari: bool):
    """One SB3 student (``GroupPPO`` or ``GroupDQN``) with the config's hyper-parameters."""
    policy_kwargs: dict[str, Any] = {}
    if cfg.algo == "ppo":
        p = cfg.ppo
        if p.net_arch:
            policy_kwargs["net_arch"] = list(p.net_arch)
        return GroupPPO(
            _policy_name(atari),
            env,
            learning_rate=_schedule(p.learning_rate, p.lr_schedule, cfg.total_steps, p.schedule_steps),
            n_steps=p.n_steps,
            batch_size=p.batch_size,
            n_epochs=p.n_epochs,
            gamma=p.gamma,
            gae_lambda=p.gae_lambda,
            clip_range=_schedule(p.clip_range, p.clip_schedule, cfg.total_steps, p.schedule_steps),
            ent_coef=p.ent_coef,
            vf_coef=p.vf_coef,
            max_grad_norm=p.max_grad_norm,
            rollout_buffer_class=Uint8RolloutBuffer,
            policy_kwargs=policy_kwargs or None,
            seed=seed,
            device=device,
            verbose=0,
        )
    d = cfg.dqn
    if d.net_arch:
        policy_kwargs["net_arch"] = list(d.net_arch)
    return GroupDQN(
        _policy_name(atari),
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
        policy_kwargs=policy_kwargs or None,
        seed=seed,
        device=device,
        verbose=0,
    )


class Group:
    """The students, their envs, the distiller and the group counters."""

    def __init__(self, cfg: TrainConfig, device: torch.device) -> None:
        self.cfg = cfg
        self.spec = parse_env_id(cfg.env)
        self.device = device
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
            s = build_student(cfg, env, derive_seed(cfg.seed, "student", i), device, self.spec.atari)
            if self.spec.atari and cfg.channels_last:
                # in place (param.data), so the optimizer keeps the same parameters
                s.policy.to(memory_format=torch.channels_last)
            s.index = i
            s.set_logger(configure(folder=None, format_strings=[]))
            _, callback = s._setup_learn(cfg.total_steps, callback=None, reset_num_timesteps=True, progress_bar=False)
            s._total_timesteps = cfg.total_steps
            s.group_callback = callback
            self.students.append(s)
        self.attention: DecisionAttention | None = None
        self.distiller: Distiller | None = None
        if cfg.method != "independent":
            if cfg.method == "opd-da":
                space = self.students[0].observation_space
                probe = torch.zeros((1, *space.shape), dtype=torch.as_tensor(space.low).dtype, device=device)
                z, h = group_outputs(self.students[:1], probe, cfg.algo, cfg.dqn_tau)
                dim = h.shape[-1] if cfg.attention_source == "features" else z.shape[-1]
                # its own RNG stream: building it must not change the students' randomness
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(derive_seed(cfg.seed, "attention"))
                    self.attention = DecisionAttention(
                        dim, cfg.students, scaled=cfg.attention_scaled, source=cfg.attention_source
                    ).to(device)
            lr = cfg.attention_lr or (cfg.ppo.learning_rate if cfg.algo == "ppo" else cfg.dqn.learning_rate)
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
        if cfg.algo == "ppo" and resolve_inference(cfg.inference, device) == "vmap":
            self.stacked = StackedPolicies([s.policy for s in self.students])
        self.iteration = 0
        self.refill_until = 0
        seed_everything(derive_seed(cfg.seed, "loop"))

    @property
    def steps(self) -> int:
        """Env steps per student (the students advance in lockstep)."""
        return min(s.num_timesteps for s in self.students)

    def iterate(self) -> None:
        """One group iteration: every student collects experience, then updates."""
        if self.cfg.algo == "ppo":
            collect_group_rollouts(self.students, self.stacked)
            for s in self.students:
                s._update_current_progress_remaining(s.num_timesteps, s._total_timesteps)
            for s in self.students:
                s.train()
        else:
            for s in self.students:
                rollout = s.collect_rollouts(
                    s.env,
                    callback=s.group_callback,
                    train_freq=s.train_freq,
                    replay_buffer=s.replay_buffer,
                    action_noise=None,
                    learning_starts=s.learning_starts,
                    log_interval=None,
                )
                if s.num_timesteps > s.learning_starts and s.num_timesteps > self.refill_until:
                    steps = s.gradient_steps if s.gradient_steps >= 0 else rollout.episode_timesteps
                    if steps > 0:
                        s.train(batch_size=s.batch_size, gradient_steps=steps)
        self.iteration += 1

    def probe_observations(self, n: int = 256) -> np.ndarray | None:
        """A batch of recent observations of student 0 (for the diversity metric)."""
        s = self.students[0]
        if self.cfg.algo == "ppo":
            obs = s.rollout_buffer.observations
            obs = obs.reshape(-1, *obs.shape[2:]) if not s.rollout_buffer.generator_ready else obs
            return obs[:: max(1, len(obs) // n)][:n]
        size = s.replay_buffer.size()
        if size < 2:
            return None
        idx = np.linspace(0, size - 1, min(n, size)).astype(np.int64)
        return s.replay_buffer.observations[idx, 0]

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
                "num_timesteps": int(s.num_timesteps),
                "n_updates": int(s._n_updates),
                "episode_num": int(s._episode_num),
                "n_calls": int(getattr(s, "_n_calls", 0)),
            }
            if self.cfg.algo == "dqn" and self.cfg.save_replay:
                entry["replay"] = _replay_state(s.replay_buffer)
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
            s.num_timesteps = entry["num_timesteps"]
            s._num_timesteps_at_start = s.num_timesteps
            s._n_updates = entry["n_updates"]
            s._episode_num = entry["episode_num"]
            if hasattr(s, "_n_calls"):
                s._n_calls = entry["n_calls"]
            s._update_current_progress_remaining(s.num_timesteps, s._total_timesteps)
            if "replay" in entry:
                _load_replay_state(s.replay_buffer, entry["replay"])
            elif self.cfg.algo == "dqn":
                # an empty buffer refills with the current policy before learning resumes
                self.refill_until = max(self.refill_until, s.num_timesteps + min(s.learning_starts, s.buffer_size))
        if self.attention is not None and "attention" in state:
            self.attention.load_state_dict(state["attention"])
            self.distiller.optimizer.load_state_dict(state["attention_optimizer"])
        self.iteration = state["iteration"]
        set_rng_state(state["rng"])
        return state["history"]


_REPLAY_FIELDS = ("observations", "next_observations", "actions", "rewards", "dones", "timeouts")


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
