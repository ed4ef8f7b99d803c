"""``workbench bench rl-throughput``: group env steps/s of the workbench's PPO groups ÷ the same number of
independent standard SB3 PPO learners (``make_atari_env`` + ``VecFrameStack``), Breakout, same n_envs,
n_steps, batch size and epochs, measured back to back in one process.

Rows: ``opd-da group / SB3`` (3 OPD-DA students, distillation included) and ``independent group / SB3``
(the workbench's students without distillation). Each repeat runs one warm-up iteration (untimed), then
times ``iterations`` PPO iterations of every learner; above 1 means the workbench is faster.
"""

from __future__ import annotations

import time

import torch

from workbench.bench import BenchResult, median_ratio

GAME = "BreakoutNoFrameskip-v4"


def _settings(quick: bool) -> dict:
    if quick:
        return {"n_envs": 8, "n_steps": 32, "batch_size": 64, "n_epochs": 2, "iterations": 2, "students": 3}
    return {"n_envs": 8, "n_steps": 128, "batch_size": 256, "n_epochs": 4, "iterations": 3, "students": 3}


def _sb3_group(s: dict, seed: int) -> float:
    """Group steps/s of ``students`` standard SB3 PPO learners trained one after another."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_atari_env
    from stable_baselines3.common.vec_env import VecFrameStack

    from agents.envs import _register_ale

    _register_ale()
    learners = []
    for i in range(s["students"]):
        env = VecFrameStack(make_atari_env(GAME, n_envs=s["n_envs"], seed=seed + i), n_stack=4)
        model = PPO(
            "CnnPolicy",
            env,
            n_steps=s["n_steps"],
            batch_size=s["batch_size"],
            n_epochs=s["n_epochs"],
            learning_rate=2.5e-4,
            clip_range=0.1,
            ent_coef=0.01,
            seed=seed + i,
            device="cpu",
            verbose=0,
        )
        model.learn(s["n_steps"] * s["n_envs"])  # warm-up iteration
        learners.append(model)
    steps = s["iterations"] * s["n_steps"] * s["n_envs"]
    start = time.perf_counter()
    for model in learners:
        model.learn(steps, reset_num_timesteps=False)
    elapsed = time.perf_counter() - start
    for model in learners:
        model.env.close()
    return steps * len(learners) / elapsed


def _workbench_group(s: dict, method: str, seed: int) -> float:
    from agents.config import TrainConfig
    from agents.group import Group
    from workbench.config import resolve_config

    overrides = [
        f"env={GAME}",
        "algo=ppo",
        f"method={method}",
        f"students={s['students']}",
        f"n_envs={s['n_envs']}",
        f"ppo.n_steps={s['n_steps']}",
        f"ppo.batch_size={s['batch_size']}",
        f"ppo.n_epochs={s['n_epochs']}",
        f"total_steps={(s['iterations'] + 1) * s['n_steps'] * s['n_envs']}",
        f"seed={seed}",
        "device=cpu",
    ]
    cfg = resolve_config(TrainConfig, overrides)
    group = Group(cfg, torch.device("cpu"))
    group.iterate()  # warm-up iteration
    before = group.steps
    start = time.perf_counter()
    for _ in range(s["iterations"]):
        group.iterate()
    elapsed = time.perf_counter() - start
    for st in group.students:
        st.env.close()
    return (group.steps - before) * len(group.students) / elapsed


def bench(repeats: int = 3, quick: bool = False) -> list[BenchResult]:
    """Ratios of group steps/s: workbench OPD-DA and independent groups ÷ standard SB3 PPO learners."""
    s = _settings(quick)
    sb3, da, ind = [], [], []
    for r in range(repeats):
        sb3.append(_sb3_group(s, seed=r))
        da.append(_workbench_group(s, "opd-da", seed=r))
        ind.append(_workbench_group(s, "independent", seed=r))
    detail = {
        **{k: v for k, v in s.items()},
        "game": GAME,
        "torch_threads": torch.get_num_threads(),
        "sb3_steps_per_s": [round(x, 1) for x in sb3],
        "opd_da_steps_per_s": [round(x, 1) for x in da],
        "independent_steps_per_s": [round(x, 1) for x in ind],
    }
    r_da, rs_da = median_ratio(da, sb3)
    r_ind, rs_ind = median_ratio(ind, sb3)
    return [
        BenchResult("rl-throughput opd-da group / SB3", r_da, rs_da, goal=">= 1.0", detail=detail),
        BenchResult("rl-throughput independent group / SB3", r_ind, rs_ind, goal="> 1.0", detail={}),
    ]
