"""Evaluation of students on separate env copies: unclipped full-game returns over N episodes.

PPO acts by sampling (or greedily with ``deterministic``); DQN acts ε-greedily with a small ε (0.001 by
default). Episodes are spread evenly over the parallel envs (each env plays its own quota, so short
episodes are not over-represented). An episode that reaches ``max_steps`` counts with its partial return.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from workbench.io import atomic_write


def make_actor(
    student, algo: str, deterministic: bool, epsilon: float, seed: int
) -> Callable[[np.ndarray], np.ndarray]:
    """A function from an observation batch to actions for one student (its algorithm's evaluation policy)."""
    from agents.registry import ALGORITHMS

    rng = np.random.default_rng(seed)
    algorithm = ALGORITHMS[algo]

    def act(obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            actions = algorithm.act(student, obs, deterministic, epsilon, rng)
        return np.asarray(actions)

    return act


def run_episodes(
    act: Callable[[np.ndarray], np.ndarray],
    env,
    episodes: int,
    max_steps: int = 27_000,
    frames: list | None = None,
    frame_limit: int = 0,
) -> tuple[list[float], list[int]]:
    """Play ``episodes`` episodes; returns their (unclipped) returns and lengths.

    ``env`` must end an episode only at the end of the game and give raw rewards (an evaluation env).
    ``frames`` collects up to ``frame_limit`` frames of env 0 for a GIF.
    """
    n = env.num_envs
    quota = [(episodes + i) // n for i in range(n)]
    done_count = [0] * n
    ret = np.zeros(n)
    length = np.zeros(n, dtype=np.int64)
    returns: list[float] = []
    lengths: list[int] = []
    obs = env.reset()
    while any(c < q for c, q in zip(done_count, quota)):
        if frames is not None and len(frames) < frame_limit:
            frames.append(_frame(env, obs))
        obs, rewards, dones, _ = env.step(act(obs))
        ret += rewards
        length += 1
        for i in range(n):
            if dones[i] or length[i] >= max_steps:
                if done_count[i] < quota[i]:
                    returns.append(float(ret[i]))
                    lengths.append(int(length[i]))
                    done_count[i] += 1
                ret[i] = 0.0
                length[i] = 0
    return returns, lengths


def _frame(env, obs: np.ndarray) -> np.ndarray:
    """An RGB uint8 frame of env 0: the last Atari frame of the stack, or the env's render."""
    if obs.ndim == 4:
        grey = obs[0, -1]
        return np.repeat(np.kron(grey, np.ones((2, 2), dtype=np.uint8))[..., None], 3, axis=-1)
    images = env.get_images()
    return images[0] if images and images[0] is not None else np.zeros((64, 64, 3), np.uint8)


def save_gif(frames: list[np.ndarray], path: str | Path, fps: int = 15) -> Path:
    """Write frames as an animated GIF (atomically)."""
    from PIL import Image

    images = [Image.fromarray(f) for f in frames]
    return atomic_write(
        path,
        lambda f: images[0].save(
            f, format="GIF", save_all=True, append_images=images[1:], duration=1000 // fps, loop=0
        ),
    )
