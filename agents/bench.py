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
MINATAR_GAME = "MinAtar/Breakout-v1"


def _settings(quick: bool) -> dict:
    if quick:
        return {"n_envs": 8, "n_steps": 32, "batch_size": 64, "n_epochs": 2, "iterations": 2, "students": 3}
    return {"n_envs": 8, "n_steps": 128, "batch_size": 256, "n_epochs": 4, "iterations": 3, "students": 3}


def _sb3_env(game: str, n_envs: int, seed: int):
    """The reference env of a standard SB3 learner and its policy kwargs (MinAtar: the same MinAtarNet)."""
    from stable_baselines3.common.env_util import make_atari_env
    from stable_baselines3.common.vec_env import VecFrameStack

    from agents.envs import _register_ale, make_env, parse_env_id
    from agents.networks import policy_for

    if game.startswith("MinAtar/"):
        spec = parse_env_id(game)
        return make_env(spec, n_envs, seed), policy_for(spec)[1]
    _register_ale()
    return VecFrameStack(make_atari_env(game, n_envs=n_envs, seed=seed), n_stack=4), {}


def _sb3_group(s: dict, seed: int, game: str = GAME) -> float:
    """Group steps/s of ``students`` standard SB3 PPO learners trained one after another."""
    from stable_baselines3 import PPO

    learners = []
    for i in range(s["students"]):
        env, policy_kwargs = _sb3_env(game, s["n_envs"], seed + i)
        model = PPO(
            "CnnPolicy",
            env,
            policy_kwargs=policy_kwargs or None,
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


def _workbench_group(s: dict, method: str, seed: int, game: str = GAME) -> float:
    from agents.config import TrainConfig
    from agents.group import Group
    from workbench.config import resolve_config

    overrides = [
        f"env={game}",
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
    rows = [
        BenchResult("rl-throughput opd-da group / SB3", r_da, rs_da, goal=">= 1.0", detail=detail),
        BenchResult("rl-throughput independent group / SB3", r_ind, rs_ind, goal="> 1.0", detail={}),
    ]
    return rows + minatar_rows(s, repeats)


def minatar_rows(s: dict, repeats: int) -> list[BenchResult]:
    """The same ratios on MinAtar Breakout with MinAtarNet for both (issue 17's goal: opd-da / SB3 >= 2.0);
    none when the optional ``minatar`` package is missing."""
    import importlib.util

    if importlib.util.find_spec("minatar") is None:
        return []
    sb3, da, ind = [], [], []
    for r in range(repeats):
        sb3.append(_sb3_group(s, seed=r, game=MINATAR_GAME))
        da.append(_workbench_group(s, "opd-da", seed=r, game=MINATAR_GAME))
        ind.append(_workbench_group(s, "independent", seed=r, game=MINATAR_GAME))
    detail = {
        "game": MINATAR_GAME,
        "sb3_steps_per_s": [round(x, 1) for x in sb3],
        "opd_da_steps_per_s": [round(x, 1) for x in da],
        "independent_steps_per_s": [round(x, 1) for x in ind],
    }
    r_da, rs_da = median_ratio(da, sb3)
    r_ind, rs_ind = median_ratio(ind, sb3)
    return [
        BenchResult("rl-throughput minatar opd-da / SB3", r_da, rs_da, goal=">= 2.0", detail=detail),
        BenchResult("rl-throughput minatar independent / SB3", r_ind, rs_ind, goal="> 1.0", detail={}),
    ]
