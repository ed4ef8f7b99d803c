"""``workbench rl eval RUN_DIR [episodes=10] [gif=true] [key=value ...]``: evaluate every student of a run.

Loads the run's ``config.yaml`` and ``checkpoints/last.pt`` (a finished or an interrupted run), plays
``episodes`` full games per student on fresh evaluation envs, prints a table and writes
``eval.json`` into the run directory (and ``plots/student<i>.gif`` with ``gif=true``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from workbench.config import resolve_config
from workbench.errors import WorkbenchError

USAGE = "usage: workbench rl eval RUN_DIR [episodes=10] [deterministic=false] [epsilon=0.001] [gif=true] [device=cpu]"


def evaluate_run(cfg) -> dict[str, Any]:
    """Evaluate the students of ``cfg.run_dir``; returns the result written to ``eval.json``."""
    import numpy as np

    from agents.config import TrainConfig
    from agents.envs import make_env
    from agents.evaluate import make_actor, run_episodes, save_gif
    from agents.group import Group
    from agents.scores import human_normalized
    from agents.train import CHECKPOINT
    from workbench.checkpoint import load_checkpoint
    from workbench.device import choose_device
    from workbench.io import atomic_write_json
    from workbench.runs import load_config_dict
    from workbench.seeding import derive_seed

    run_dir = Path(cfg.run_dir)
    saved = load_config_dict(run_dir)
    if "algo" not in saved or "students" not in saved:
        raise WorkbenchError(f"{run_dir} is not a `workbench rl train` run; pass the folder that command printed")
    train_cfg = resolve_config(TrainConfig, [f"device={cfg.device}", "progress=false"], base=saved)
    state = load_checkpoint(run_dir / "checkpoints" / CHECKPOINT, fmt="workbench-rl-group/1")
    group = Group(train_cfg, choose_device(cfg.device))
    students = [{k: v for k, v in s.items() if k != "replay"} for s in state["students"]]
    group.load_state_dict({**state, "students": students})
    results = []
    for i, student in enumerate(group.students):
        env = make_env(
            group.spec,
            min(cfg.eval_envs, cfg.episodes),
            derive_seed(cfg.seed, "rl-eval", i),
            train_cfg.env_backend,
            evaluation=True,
            sticky_actions=train_cfg.sticky_actions,
            frame_stack=train_cfg.frame_stack,
        )
        act = make_actor(student, train_cfg.algo, cfg.deterministic, cfg.epsilon, derive_seed(cfg.seed, "rl-act", i))
        returns, lengths = run_episodes(act, env, cfg.episodes, cfg.max_steps)
        env.close()
        mean = float(np.mean(returns))
        results.append(
            {
                "student": i,
                "mean_return": mean,
                "std_return": float(np.std(returns)),
                "human_normalized": human_normalized(train_cfg.env, mean),
                "returns": returns,
                "lengths": lengths,
            }
        )
    best = max(range(len(results)), key=lambda k: results[k]["mean_return"])
    out: dict[str, Any] = {
        "env": train_cfg.env,
        "method": train_cfg.method,
        "algo": train_cfg.algo,
        "steps": group.steps,
        "episodes": cfg.episodes,
        "students": results,
        "group_best_return": results[best]["mean_return"],
        "group_mean_return": float(np.mean([r["mean_return"] for r in results])),
    }
    if cfg.gif:
        gif_env = make_env(
            group.spec, 1, derive_seed(cfg.seed, "gif"), train_cfg.env_backend, evaluation=True, render=True
        )
        frames: list = []
        act = make_actor(group.students[best], train_cfg.algo, cfg.deterministic, cfg.epsilon, cfg.seed)
        run_episodes(act, gif_env, 1, min(cfg.max_steps, cfg.gif_steps), frames=frames, frame_limit=cfg.gif_steps)
        gif_env.close()
        out["gif"] = str(save_gif(frames, run_dir / "plots" / f"student{best}.gif"))
    atomic_write_json(run_dir / "eval.json", out)
    for s in group.students:
        s.env.close()
    return out


def _check_gif(run_dir: str) -> None:
    import importlib.util

    from agents.envs import parse_env_id
    from workbench.runs import load_config_dict

    env_id = load_config_dict(run_dir).get("env", "")
    spec = parse_env_id(env_id)
    if not (spec.atari or spec.minatar) and importlib.util.find_spec("pygame") is None:
        raise WorkbenchError(
            f"gif=true for {env_id} needs pygame to render (pip install 'gymnasium[classic-control]'); "
            "Atari and MinAtar runs need nothing extra"
        )


def main(argv: list[str]) -> int:
    from agents.config import EvalConfig

    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    args = [f"run_dir={a}" if "=" not in a else a for a in argv]
    cfg = resolve_config(EvalConfig, args)
    if not (Path(cfg.run_dir) / "config.yaml").is_file():
        raise WorkbenchError(f"{cfg.run_dir} is not a run directory (no config.yaml); pass the folder train printed")
    if cfg.gif:
        _check_gif(cfg.run_dir)
    out = evaluate_run(cfg)
    print(f"{out['method']} {out['algo']} on {out['env']} at {out['steps']} steps, {out['episodes']} episodes each:")
    for r in out["students"]:
        hn = "" if r["human_normalized"] is None else f"  (human-normalised {r['human_normalized']:.3f})"
        print(f"  student {r['student']}: {r['mean_return']:.1f} ± {r['std_return']:.1f}{hn}")
    print(f"  group best {out['group_best_return']:.1f}, group mean {out['group_mean_return']:.1f}")
    if "gif" in out:
        print(f"  gif: {out['gif']}")
    print(f"wrote {Path(cfg.run_dir) / 'eval.json'}", file=sys.stdout)
    return 0
