"""The `workbench rl` commands through the CLI: bad input, eval (with GIF), compare; env backends."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from agents.envs import make_env, parse_env_id

FAST = [
    "students=2",
    "total_steps=128",
    "n_envs=2",
    "ppo.n_steps=32",
    "ppo.batch_size=32",
    "ppo.n_epochs=1",
    "eval_episodes=1",
    "eval_envs=1",
    "eval_max_steps=100",
    "progress=false",
    "log_every=64",
]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["env=ALE/Breakot-v5"], "unknown Atari game 'Breakot' (did you mean 'Breakout'?)"),
        (["--preset", "atari-dqn", "dqn.buffer_size=100000000"], "replay buffers need"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(cli, run_root, args, needle):
    res = cli("rl", "train", *args, f"run_root={run_root}")
    assert res.returncode == 2, res.stderr
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], res.stderr
    assert not run_root.exists() or not any(run_root.rglob("config.yaml"))


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["env=CartPol-v1"], "unknown env id 'CartPol-v1' (did you mean 'CartPole-v1'?)"),
        (["env=ALE/Breakout-v4"], "unknown env id"),
        (["algo=a2c"], "bad value for 'algo'"),
        (["method=opd"], "bad value for 'method'"),
        (["students=0"], "students must be >= 1"),
        (["method=dml", "students=1"], "set students >= 2"),
        (["algo=dqn", "students=3", "dqn.buffer_size=10000000000"], "replay buffers need"),
    ],
)
def test_bad_config_is_rejected_by_validate(args, needle):
    from agents.config import TrainConfig
    from workbench.config import resolve_config
    from workbench.errors import WorkbenchError

    with pytest.raises(WorkbenchError, match=None) as exc:
        resolve_config(TrainConfig, args)
    assert needle in str(exc.value) and "\n" not in str(exc.value)


def test_train_then_eval_with_gif(run_root, capsys):
    from agents.config import TrainConfig
    from agents.eval_command import main as eval_main
    from agents.train import run as train_run
    from workbench.config import resolve_config
    from workbench.errors import WorkbenchError
    from workbench.runs import create_run

    presets = Path(__file__).resolve().parents[2] / "agents" / "presets"
    cfg = resolve_config(
        TrainConfig, [*FAST, "env=ALE/Pong-v5", "threads=1", "env_threads=1", f"run_root={run_root}"], "demo", presets
    )
    run = create_run("rl", cfg, "gif")
    train_run(cfg, run)
    run.close()
    assert eval_main([str(run.dir), "episodes=2", "eval_envs=2", "gif=true", "gif_steps=20", "max_steps=50"]) == 0
    out = json.loads((run.dir / "eval.json").read_text())
    assert out["episodes"] == 2 and len(out["students"]) == 2
    assert all(len(s["returns"]) == 2 and s["human_normalized"] is not None for s in out["students"])
    assert Path(out["gif"]).is_file() and Path(out["gif"]).parent == run.dir / "plots"
    assert "group best" in capsys.readouterr().out
    with pytest.raises(WorkbenchError, match="not a run directory"):
        eval_main([str(run_root / "nope")])


def test_compare_writes_table_and_plot(cli, run_root):
    res = cli(
        "rl",
        "compare",
        "methods=independent,opd-da",
        "seeds=0,1",
        "students=2",
        "total_steps=128",
        f"run_root={run_root}",
        "overrides=n_envs=2,ppo.n_steps=32,ppo.batch_size=32,ppo.n_epochs=1,eval_episodes=1,eval_envs=1,log_every=32",
    )
    assert res.returncode == 0, res.stderr
    compare_dir = next(run_root.glob("rl/*/*/report.md")).parent
    report = (compare_dir / "report.md").read_text()
    assert "| independent |" in report and "| opd-da |" in report and "(n=2)" in report
    assert (compare_dir / "plots" / "learning_curves.png").is_file()
    summary = json.loads((compare_dir / "summary.json").read_text())
    assert len(summary["methods"]["opd-da"]["group_best"]) == 2
    assert len(list((compare_dir / "runs").rglob("summary.json"))) == 4


def test_compare_honours_jobs_and_a_resume_may_change_the_sweep_keys(cli, run_root):
    """jobs=1 reaches the compare's sweep (sweep.yaml and the driver's line); --resume with jobs=2 retries=0
    is accepted (resume-safe keys), recorded, and re-runs nothing that had finished."""
    import yaml

    tiny = "overrides=n_envs=2,ppo.n_steps=32,ppo.batch_size=32,ppo.n_epochs=1,eval_episodes=1,eval_envs=1,log_every=32"
    common = ["methods=independent", "seeds=0", "students=1", "total_steps=64", f"run_root={run_root}", tiny]
    res = cli("rl", "compare", *common, "jobs=1", "launcher=local")
    assert res.returncode == 0, res.stderr
    compare_dir = next(run_root.glob("rl/*/*/report.md")).parent
    options = yaml.safe_load((compare_dir / "sweep.yaml").read_text())["options"]
    assert (options["launcher"], options["jobs"], options["retries"]) == ("local", 1, 1)
    assert "jobs=1," in res.stdout
    first = sorted((compare_dir / "runs").rglob("summary.json"))
    assert len(first) == 1
    stamp = first[0].stat().st_mtime_ns
    res = cli("rl", "compare", "--resume", str(compare_dir), "jobs=2", "retries=0")
    assert res.returncode == 0, res.stderr
    options = yaml.safe_load((compare_dir / "sweep.yaml").read_text())["options"]
    assert (options["jobs"], options["retries"]) == (2, 0)
    assert sorted((compare_dir / "runs").rglob("summary.json")) == first
    assert first[0].stat().st_mtime_ns == stamp


def test_both_atari_backends_give_uint8_4x84x84_stacks_and_full_game_episodes():
    spec = parse_env_id("ALE/Pong-v5")
    for backend in ("ale", "sb3"):
        env = make_env(spec, 2, seed=0, backend=backend)
        obs = env.reset()
        assert obs.shape == (2, 4, 84, 84) and obs.dtype == np.uint8, backend
        obs, rew, done, infos = env.step(np.zeros(2, dtype=np.int64))
        assert obs.shape == (2, 4, 84, 84) and rew.dtype == np.float32 and len(infos) == 2
        env.close()
    # Breakout: a life loss ends the training episode, the logged episode is the whole game (5 lives)
    env = make_env(parse_env_id("BreakoutNoFrameskip-v4"), 1, seed=0, backend="ale")
    env.reset()
    dones, game = 0, None
    rng = np.random.default_rng(0)
    for _ in range(5000):
        _, _, done, infos = env.step(rng.integers(0, 4, size=1))
        dones += int(done[0])
        if "episode" in infos[0]:
            game = infos[0]["episode"]
            break
    env.close()
    assert game is not None and dones == 5 and game["l"] > 5


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["ppo.gamma=0"], "bad value for 'ppo.gamma': 0.0; must be > 0"),
        (["dqn.gamma=1.5"], "bad value for 'dqn.gamma': 1.5; must be ≤ 1"),
        (["temperature=0"], "bad value for 'temperature': 0.0; must be > 0"),
        (["dqn_tau=-1"], "bad value for 'dqn_tau': -1.0; must be > 0"),
        (["lambda_dec=-0.1"], "bad value for 'lambda_dec'"),
        (["lambda_feat=-1"], "bad value for 'lambda_feat'"),
        (["ppo.target_kl=-0.01"], "bad value for 'ppo.target_kl'"),
        (["ppo.schedule_steps=-5"], "bad value for 'ppo.schedule_steps'"),
        (["dqn.exploration_final_eps=2"], "bad value for 'dqn.exploration_final_eps'"),
        (["n_envs=0"], "bad value for 'n_envs': 0; must be ≥ 1"),
        (["total_steps=0"], "bad value for 'total_steps'"),
    ],
)
def test_declared_bounds_reject_bad_values_in_one_line(args, needle):
    from agents.config import TrainConfig
    from workbench.config import resolve_config
    from workbench.errors import WorkbenchError

    with pytest.raises(WorkbenchError) as exc:
        resolve_config(TrainConfig, args)
    assert needle in str(exc.value) and "\n" not in str(exc.value), str(exc.value)


def test_compare_over_games_normalises_and_aggregates(run_root):
    """Two games: per-game tables, normalised scores = (score − random)/(reference − random), IQM with CIs,
    P(opd-da > independent) and performance profiles from workbench.stats."""
    from agents.compare import run as compare_run
    from agents.config import CompareConfig
    from workbench import stats
    from workbench.config import resolve_config
    from workbench.runs import create_run

    cfg = resolve_config(
        CompareConfig,
        [
            "envs=CartPole-v1,Acrobot-v1",
            "methods=independent,opd-da",
            "seeds=0,1",
            "students=2",
            "total_steps=128",
            "random_episodes=2",
            "bootstrap_reps=200",
            "references=CartPole-v1=500",
            f"run_root={run_root}",
            "overrides=n_envs=2,ppo.n_steps=32,ppo.batch_size=32,ppo.n_epochs=1,eval_episodes=1,eval_envs=1,"
            "log_every=32,eval_max_steps=100",
        ],
    )
    run = create_run("rl", cfg, "games")
    summary = compare_run(cfg, run)
    run.close()
    report = (run.dir / "report.md").read_text()
    assert "## CartPole-v1" in report and "## Acrobot-v1" in report and "P(opd-da > Y)" in report
    assert (run.dir / "plots" / "profile.png").is_file()
    assert (run.dir / "plots" / "learning_curves_CartPole-v1.png").is_file()
    agg = summary["aggregate"]
    norm = agg["normalisation"]
    assert norm["CartPole-v1"]["reference"] == 500.0 and "given" in norm["CartPole-v1"]["reference_source"]
    assert norm["Acrobot-v1"]["reference_source"].startswith("best run of this compare")
    for env in ("CartPole-v1", "Acrobot-v1"):
        low, high = norm[env]["random"], norm[env]["reference"]
        raw = summary["games"][env]["opd-da"]["student_mean"]
        np.testing.assert_allclose(agg["normalised"]["opd-da"][env], [(x - low) / (high - low) for x in raw])
    iqm = stats.iqm(list(agg["normalised"]["independent"].values()))
    assert agg["methods"]["independent"]["iqm"][0] == pytest.approx(iqm)
    lo, hi = agg["methods"]["independent"]["iqm"][1:]
    assert lo <= iqm <= hi
    p = agg["probability_of_improvement"]["independent"]
    assert 0.0 <= p[1] <= p[0] <= p[2] <= 1.0
