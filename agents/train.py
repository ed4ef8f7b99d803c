"""``workbench rl train``: run a group of students to ``total_steps`` each, with logging, evaluation,
checkpoints (``--resume``) and ``summary.json``.

TensorBoard tags (x axis: env steps per student): ``student{i}/return`` and ``length`` (unclipped full-game
episodes finished since the last log), ``student{i}/<RL loss>`` (PPO: pg_loss, value_loss, entropy_loss,
approx_kl, clip_fraction, explained_variance; DQN: td_loss, exploration_rate), ``student{i}/L_dec``,
``student{i}/L_feat``, ``attention/alpha_{i}_{j}`` and the image ``attention/matrix`` (opd-da),
``group/diversity``, ``group/best_return``, ``group/mean_return``, ``group/steps_per_second``, and
``eval/student{i}/return``, ``eval/group_best``, ``eval/group_mean``.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np
import torch

from agents.config import TrainConfig
from agents.envs import make_env
from agents.evaluate import make_actor, run_episodes
from agents.plots import plot_run
from agents.scores import human_normalized
from workbench.checkpoint import load_checkpoint, save_checkpoint
from workbench.device import choose_device
from workbench.runs import Run
from workbench.seeding import derive_seed
from workbench.trainer import DeferredInterrupt

CHECKPOINT = "last.pt"


def _mean(values: list[float]) -> float | None:
    return float(statistics.fmean(values)) if values else None


class GroupRunner:
    """Drives a :class:`~agents.group.Group`: iterations, logging, evaluation, checkpoints."""

    def __init__(self, cfg: TrainConfig, run: Run | None) -> None:
        from agents.group import Group

        self.cfg = cfg
        self.run = run
        self.group = Group(cfg, choose_device(cfg.device))
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)
        elif not self.group.spec.atari:
            torch.set_num_threads(1)  # small MLPs: extra threads only add synchronisation
        self.history: dict[str, Any] = {
            "episodes": [[] for _ in range(cfg.students)],
            "evals": [],
            "train_seconds": 0.0,
            "trained_steps": 0,
        }
        self._recent: list[list[tuple[float, int]]] = [[] for _ in range(cfg.students)]
        self._last_return: list[float | None] = [None] * cfg.students
        self._eval_envs: list | None = None
        self.on_iteration = None  # test hook: called after every iteration

    # -- state ------------------------------------------------------------------------------------------
    def save(self) -> None:
        if self.run is None:
            return
        state = self.group.state_dict(self.history)
        save_checkpoint(self.run.checkpoints / CHECKPOINT, state, fmt="workbench-rl-group/1")

    def restore(self) -> None:
        state = load_checkpoint(self.run.checkpoints / CHECKPOINT, fmt="workbench-rl-group/1")
        self.history = self.group.load_state_dict(state)
        self.run.resume_logging_at(self.group.steps)

    # -- logging ----------------------------------------------------------------------------------------
    def _log(self, step: int, steps_per_second: float) -> None:
        values: dict[str, float] = {"group/steps_per_second": steps_per_second}
        for i, s in enumerate(self.group.students):
            eps = self._recent[i]
            if eps:
                self._last_return[i] = _mean([r for r, _ in eps])
                values[f"student{i}/return"] = self._last_return[i]
                values[f"student{i}/length"] = _mean([float(n) for _, n in eps])
                self._recent[i] = []
            for key, vals in s.stats.items():
                if vals:
                    values[f"student{i}/{key}"] = _mean(vals)
            s.stats = {}
        known = [r for r in self._last_return if r is not None]
        if known:
            values["group/best_return"] = max(known)
            values["group/mean_return"] = _mean(known)
        div = self.group.diversity()
        if div is not None:
            values["group/diversity"] = div
        if self.run is None:
            return
        distiller = self.group.distiller
        alpha = distiller.pop_alpha() if distiller is not None else None
        if alpha is not None:
            m = alpha.shape[0]
            for i in range(m):
                for j in range(m):
                    values[f"attention/alpha_{i}_{j}"] = float(alpha[i, j])
            self.run.logger.image("attention/matrix", _upscale(alpha.numpy()), step)
        self.run.logger.scalars(values, step)

    def _collect_episodes(self) -> None:
        step = self.group.steps
        for i, s in enumerate(self.group.students):
            for r, n in s.pop_episodes():
                self._recent[i].append((r, n))
                self.history["episodes"][i].append([step, r, n])

    # -- evaluation -------------------------------------------------------------------------------------
    def evaluate(self, episodes: int) -> list[float]:
        cfg = self.cfg
        if self._eval_envs is None:
            self._eval_envs = [
                make_env(
                    self.group.spec,
                    min(cfg.eval_envs, episodes),
                    derive_seed(cfg.seed, "eval", i),
                    cfg.env_backend,
                    evaluation=True,
                    sticky_actions=cfg.sticky_actions,
                    frame_stack=cfg.frame_stack,
                    num_threads=cfg.env_threads,
                )
                for i in range(cfg.students)
            ]
        means = []
        for i, (s, env) in enumerate(zip(self.group.students, self._eval_envs)):
            act = make_actor(s, cfg.algo, cfg.eval_deterministic, cfg.eval_epsilon, derive_seed(cfg.seed, "act", i))
            rng_state = torch.get_rng_state()  # sampling actions must not shift the training randomness
            np_state = np.random.get_state()
            returns, _ = run_episodes(act, env, episodes, cfg.eval_max_steps)
            torch.set_rng_state(rng_state)
            np.random.set_state(np_state)
            means.append(float(np.mean(returns)))
        step = self.group.steps
        self.history["evals"].append({"step": step, "returns": means})
        if self.run is not None:
            values = {f"eval/student{i}/return": r for i, r in enumerate(means)}
            values.update({"eval/group_best": max(means), "eval/group_mean": float(np.mean(means))})
            self.run.logger.scalars(values, step)
        return means

    # -- the loop ---------------------------------------------------------------------------------------
    def train(self) -> dict[str, Any]:
        cfg = self.cfg
        group = self.group
        total = cfg.total_steps
        bar = None
        if cfg.progress:
            from tqdm import tqdm

            bar = tqdm(total=total * cfg.students, initial=group.steps * cfg.students, unit="step", smoothing=0.1)
        last_log = last_ckpt = last_eval = group.steps
        session_start_steps = group.steps
        session_seconds = 0.0
        try:
            # the first Ctrl-C / SIGTERM stops at the end of the iteration, so the checkpoint is consistent
            with DeferredInterrupt() as stop:
                while group.steps < total:
                    before = group.steps
                    t0 = time.perf_counter()
                    group.iterate()
                    dt = time.perf_counter() - t0
                    session_seconds += dt
                    self.history["train_seconds"] += dt
                    self.history["trained_steps"] += (group.steps - before) * cfg.students
                    self._collect_episodes()
                    step = group.steps
                    if bar is not None:
                        bar.update((step - before) * cfg.students)
                    if step - last_log >= cfg.log_every or step >= total:
                        sps = (step - session_start_steps) * cfg.students / max(session_seconds, 1e-9)
                        self._log(step, sps)
                        last_log = step
                    due = cfg.eval_every > 0 and step - last_eval >= cfg.eval_every
                    if due and cfg.eval_episodes > 0 and step < total:
                        self.evaluate(cfg.eval_episodes)
                        last_eval = step
                    if cfg.checkpoint_every > 0 and step - last_ckpt >= cfg.checkpoint_every:
                        self.save()
                        last_ckpt = step
                    if self.on_iteration is not None:
                        self.on_iteration(self)
                    if stop.requested:
                        raise KeyboardInterrupt
        except KeyboardInterrupt:
            self.save()
            raise
        finally:
            if bar is not None:
                bar.close()
        final = self.evaluate(cfg.eval_episodes) if cfg.eval_episodes > 0 else None
        self.save()
        return self.summary(final)

    def summary(self, final_eval: list[float] | None) -> dict[str, Any]:
        cfg = self.cfg
        eps = self.history["episodes"]
        last_train = [_mean([e[1] for e in ep[-10:]]) for ep in eps]
        mean_train = [_mean([e[1] for e in ep]) for ep in eps]
        final = final_eval if final_eval is not None else last_train
        known = [r for r in final if r is not None]
        out: dict[str, Any] = {
            "method": cfg.method,
            "algo": cfg.algo,
            "env": cfg.env,
            "env_backend": cfg.env_backend if self.group.spec.atari else "gymnasium",
            "students": cfg.students,
            "total_steps": cfg.total_steps,
            "steps_done": self.group.steps,
            "final_return": final,
            "final_return_source": "eval" if final_eval is not None else "last 10 training episodes",
            "group_best_return": max(known) if known else None,
            "group_mean_return": _mean(known),
            "final_train_return": last_train,
            "mean_train_return": mean_train,
            "episodes": [len(ep) for ep in eps],
            "steps_per_second": self.history["trained_steps"] / max(self.history["train_seconds"], 1e-9),
            "eval_episodes": cfg.eval_episodes,
        }
        if self.group.spec.atari:
            hns = [human_normalized(cfg.env, r) if r is not None else None for r in final]
            out["human_normalized"] = hns
            valid = [h for h in hns if h is not None]
            out["group_best_human_normalized"] = max(valid) if valid else None
        return out

    def close(self) -> None:
        for s in self.group.students:
            s.env.close()
        for env in self._eval_envs or []:
            env.close()


def _upscale(matrix: np.ndarray, cell: int = 16) -> np.ndarray:
    """An M×M matrix in [0, 1] as a grey image with ``cell``-pixel squares."""
    return np.kron(np.clip(matrix, 0.0, 1.0), np.ones((cell, cell))).astype(np.float32)


def run(cfg: TrainConfig, run: Run) -> dict[str, Any]:
    """Entry point of ``workbench rl train``."""
    trainer = GroupRunner(cfg, run)
    try:
        if run.resumed:
            trainer.restore()
        summary = trainer.train()
    finally:
        trainer.close()
    run.write_summary(summary)
    plot_run(run.dir, cfg.students, f"{cfg.method} {cfg.algo} {cfg.env}")
    final = ", ".join("n/a" if r is None else f"{r:.1f}" for r in summary["final_return"])
    print(
        f"{cfg.method} {cfg.algo} on {cfg.env}: final return per student [{final}], group best "
        f"{summary['group_best_return']}, {summary['steps_per_second']:.0f} group steps/s"
    )
    return summary
