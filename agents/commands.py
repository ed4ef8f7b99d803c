"""The ``workbench rl`` command group (light: no torch or SB3 import here)."""

from __future__ import annotations

from workbench.command import Command, CommandGroup
from workbench.sweep import COMPARE_SWEEP_KEYS


def _eval_raw(argv: list[str]) -> int:
    from agents.eval_command import main

    return main(argv)


GROUP = CommandGroup(
    name="rl",
    help="online policy distillation with decision-attention (OPD-DA) on Atari with SB3 PPO/DQN students",
    commands=[
        Command(
            name="train",
            help="train a group of students: workbench rl train env=ALE/Breakout-v5 algo=ppo method=opd-da",
            config="agents.config:TrainConfig",
            run="agents.train:run",
            presets="presets",
            default_preset="cartpole",
            name_keys=("env", "algo", "method"),
            resume_keys=(
                "total_steps",
                "eval_every",
                "eval_episodes",
                "eval_envs",
                "eval_max_steps",
                "log_every",
                "checkpoint_every",
                "threads",
                "env_threads",
            ),
        ),
        Command(
            name="compare",
            help="games x methods x seeds through the core sweep, then tables and curves: workbench rl compare env=...",
            config="agents.config:CompareConfig",
            run="agents.compare:run",
            name_keys=("env", "algo"),
            resume_keys=COMPARE_SWEEP_KEYS,
        ),
    ],
    raw={"eval": _eval_raw},
)
