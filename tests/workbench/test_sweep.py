"""``workbench sweep``: grid expansion, bad input (exit 2, nothing written), a local sweep of tiny digits runs,
SIGTERM of one run then ``--resume`` (exact resume, finished runs untouched), retries of a failing run, and the
real single-node SLURM path (marked ``slurm``, skipped without ``sbatch``)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from workbench.cli import find_command, main
from workbench.errors import WorkbenchError
from workbench.sweep.grid import expand_value, parse_grid

ROOT = Path(__file__).resolve().parents[2]
TINY = ["dataset=digits", "model=mlp", "batch_size=64", "progress=false"]


def sweep_cli(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "workbench.cli", "sweep", *args],
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=timeout,
        cwd=ROOT,
    )


def child_env() -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}


def the_sweep(run_root: Path) -> Path:
    (d,) = [p for p in (run_root / "sweep").glob("*/*") if (p / "sweep.yaml").is_file()]
    return d


def status_of(sweep_dir: Path) -> list[dict]:
    return json.loads((sweep_dir / "status.json").read_text())["runs"]


# ---------------------------------------------------------------- grid


def test_grid_lists_ranges_and_several_keys():
    cmd = find_command(["train"])[0]
    spec = parse_grid(cmd, ["train"], ["dataset=digits", "lr=0.05,0.1", "seed=0:3", "milestones=3,6;4,8"], None)
    assert spec.fixed == ["dataset=digits"]
    assert spec.grid == {"lr": ["0.05", "0.1"], "seed": ["0", "1", "2"], "milestones": ["3,6", "4,8"]}
    points = spec.points()
    assert len(points) == 2 * 3 * 2
    assert points[0].overrides == ["dataset=digits", "lr=0.05", "seed=0", "milestones=3,6"]
    assert points[-1].values == {"lr": "0.1", "seed": "2", "milestones": "4,8"}
    assert len({p.name for p in points}) == len(points)
    assert points[5].name.startswith("005_lr-0.05_seed-2")
    # a list-typed key with commas and no ';' is one value; a colon in a string key is not a range
    assert expand_value("milestones", "3,6", "list[int]") == ["3,6"]
    assert expand_value("device", "cuda:0", "str") == ["cuda:0"]
    assert expand_value("seed", "-1:2", "int") == ["-1", "0", "1"]


def test_grid_nested_dotted_keys():
    pytest.importorskip("compression")
    cmd = find_command(["compress", "kd"])[0]
    spec = parse_grid(cmd, ["compress", "kd"], ["kd.T=2,4", "seed=0:2"], None)
    assert [p.values for p in spec.points()][:2] == [{"kd.T": "2", "seed": "0"}, {"kd.T": "2", "seed": "1"}]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["train", *TINY, "launcher=pbs"], "unknown launcher 'pbs'"),
        (["train", *TINY, "jobs=0"], "'jobs'"),
        (["train", *TINY, "seed=1", "seed=0:2"], "given twice"),
        (["train", "dataset=digits", "lernrate=0.1,0.2"], "unknown key 'lernrate'"),
        (["train", "dataset=digits", "lr=0.1,"], "empty value"),
        (["train", "dataset=digits", "seed=3:3"], "empty range"),
        (["train", "dataset=digits", "optimizer=sgd,adamm"], "adamm"),
        (["train", "dataset=digits", "epochs=2,0"], "epochs"),
        (["trian", "dataset=digits"], "did you mean 'train'"),
        (["cil", "--preset", "split-fmnist-5", "seed=0,1"], "'cil' needs one of its commands first: run, compare"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, args, needle):
    root = tmp_path / "root"
    assert main(["sweep", *args, f"run_root={root}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error:") and needle in err, err
    assert not root.exists()


def test_resume_of_a_folder_that_is_not_a_sweep(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("x")
    before = sorted(os.listdir(tmp_path))
    assert main(["sweep", "--resume", str(tmp_path)]) == 2
    assert "is not a sweep directory" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == before
    with pytest.raises(WorkbenchError):
        parse_grid(find_command(["train"])[0], ["train"], ["name=a,b"], None)


# ---------------------------------------------------------------- local sweeps (child processes)


def test_local_sweep_runs_each_point_in_its_own_run_dir_and_reports(tmp_path):
    res = sweep_cli(
        "train",
        *TINY,
        "epochs=1",
        "subset=256",
        "lr=0.05,0.1",
        "seed=0:2",
        f"run_root={tmp_path}",
        "jobs=2",
        "report_reps=200",
    )
    assert res.returncode == 0, res.stderr[-2000:]
    sweep = the_sweep(tmp_path)
    status = status_of(sweep)
    assert [e["status"] for e in status] == ["done"] * 4
    dirs = [Path(e["run_dir"]) for e in status]
    assert len(set(dirs)) == 4 and all((d / "summary.json").is_file() for d in dirs)
    assert all(sweep / "runs" in d.parents for d in dirs)
    cfgs = [json.loads((d / "summary.json").read_text()) for d in dirs]
    assert [c["seed"] for c in cfgs] == [0, 1, 0, 1]
    assert all(e["exit_code"] == 0 and e["attempts"] == 1 for e in status)
    md = (sweep / "status.md").read_text()
    assert "4 done" in md and str(dirs[0]) in md
    for name in ("report.md", "stats.md", "stats.csv", "profile.png", "sweep.yaml"):
        assert (sweep / name).is_file(), name
    stats_md = (sweep / "stats.md").read_text()
    assert (
        "| lr=0.05 | 1 | 2 |" in stats_md and "stratified percentile bootstrap" in stats_md and "P(X > Y)" in stats_md
    )
    # the same sweep again: nothing re-runs
    mtimes = [(d / "summary.json").stat().st_mtime_ns for d in dirs]
    again = sweep_cli(
        "train",
        *TINY,
        "epochs=1",
        "subset=256",
        "lr=0.05,0.1",
        "seed=0:2",
        f"run_root={tmp_path}",
        "jobs=2",
        "report_reps=200",
    )
    assert again.returncode == 0 and "continuing sweep" in again.stderr
    assert the_sweep(tmp_path) == sweep
    assert [(d / "summary.json").stat().st_mtime_ns for d in dirs] == mtimes


def _epoch_losses(run_dir: Path) -> list[float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["train/loss"] for r in rows if "train/loss" in r]


def test_sigterm_one_run_then_resume_finishes_it_exactly_and_reruns_nothing(tmp_path):
    # the two points differ only in eval_batch_size, which does not change training: identical curves
    args = [
        "train",
        *TINY,
        "epochs=12",
        "lr=0.1",
        "eval_batch_size=500,501",
        f"run_root={tmp_path}",
        "jobs=2",
        "retries=0",
        "report_reps=200",
    ]
    env = child_env()
    driver = subprocess.Popen(
        [sys.executable, "-m", "workbench.cli", "sweep", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline, killed = time.time() + 180, None
    while time.time() < deadline and killed is None and driver.poll() is None:
        time.sleep(0.05)
        try:
            run0 = status_of(the_sweep(tmp_path))[0]
        except (ValueError, OSError):
            continue
        ckpts = list((the_sweep(tmp_path) / "runs" / "train" / run0["name"]).glob("*/checkpoints/last.pt"))
        if run0["status"] == "running" and run0["pid"] and ckpts:
            os.kill(run0["pid"], signal.SIGTERM)
            killed = run0["name"]
    out, err = driver.communicate(timeout=180)
    assert killed is not None, err[-2000:]
    assert driver.returncode == 1 and killed in err
    sweep = the_sweep(tmp_path)
    first = status_of(sweep)
    assert first[0]["status"] == "failed" and first[0]["exit_code"] == 130
    assert first[1]["status"] == "done"
    run0, run1 = Path(first[0]["run_dir"]), Path(first[1]["run_dir"])
    assert not (run0 / "summary.json").exists()
    done_mtime = (run1 / "summary.json").stat().st_mtime_ns

    res = sweep_cli("--resume", str(sweep))
    assert res.returncode == 0, res.stderr[-2000:]
    second = status_of(sweep)
    assert [e["status"] for e in second] == ["done", "done"]
    assert Path(second[0]["run_dir"]) == run0  # continued in place with --resume
    assert second[0]["attempts"] == 2 and second[1]["attempts"] == 1
    assert (run1 / "summary.json").stat().st_mtime_ns == done_mtime  # not re-run
    assert "--resume" in (sweep / "logs" / f"{killed}.log").read_text()
    # exact resume: the interrupted run's curve equals the uninterrupted twin's, the epoch it was stopped in too
    # (the trainer checkpoints that epoch's running sums)
    a, b = _epoch_losses(run0), _epoch_losses(run1)
    assert len(a) == len(b) == 12
    assert a == pytest.approx(b, rel=1e-9) and a[-1] == b[-1]
    s0, s1 = (json.loads((d / "summary.json").read_text()) for d in (run0, run1))
    assert s0["test_acc"] == s1["test_acc"] and s0["train_loss"] == s1["train_loss"]


def test_failing_run_is_retried_and_reported_while_the_other_finishes(tmp_path):
    # device=cuda:99 passes config validation but fails when the run starts, on every machine
    res = sweep_cli(
        "train",
        *TINY,
        "epochs=1",
        "subset=128",
        "device=cpu,cuda:99",
        "lr=0.1",
        f"run_root={tmp_path}",
        "jobs=2",
        "retries=1",
        "report_reps=200",
    )
    assert res.returncode == 1
    sweep = the_sweep(tmp_path)
    ok, bad = status_of(sweep)
    assert ok["status"] == "done" and ok["attempts"] == 1
    assert bad["status"] == "failed" and bad["attempts"] == 2 and bad["exit_code"] == 2
    assert bad["name"] in res.stderr and "1 of 2 runs failed" in res.stderr
    assert (sweep / "logs" / f"{bad['name']}.log").read_text().count("$ workbench train") == 2
    assert (sweep / "stats.md").is_file()


def _slurm_up() -> bool:
    """sbatch on PATH and a controller that answers (the packages may be installed with the daemons stopped)."""
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
        return False
    try:
        return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=15).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.slurm
@pytest.mark.skipif(not _slurm_up(), reason="needs SLURM (scripts/slurm-setup.sh starts a one-node cluster)")
def test_real_slurm_sweep_of_four_runs(tmp_path):
    pytest.importorskip("submitit")
    root = Path(os.environ.get("WORKBENCH_SLURM_TMP", tmp_path))  # a folder the slurmd user can write
    res = sweep_cli(
        "train",
        *TINY,
        "epochs=1",
        "subset=128",
        "seed=0:4",
        f"run_root={root}",
        "launcher=slurm",
        "slurm.time=10",
        "slurm.cpus=1",
        "report_reps=200",
        timeout=900,
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    sweep = the_sweep(root)
    status = status_of(sweep)
    assert [e["status"] for e in status] == ["done"] * 4
    assert all(str(e["job_id"]).split("_")[0].isdigit() for e in status)
    assert len({e["job_id"] for e in status}) == 4
    assert (sweep / "stats.md").is_file() and (sweep / "report.md").is_file()


def test_preempted_slurm_task_saves_and_its_requeue_resumes_the_run(tmp_path, monkeypatch):
    """submitit calls RunTask.checkpoint() on SLURM's pre-emption/time-out signal; the requeued task continues
    the same run with --resume (checked here without SLURM, calling what submitit calls)."""
    submitit = pytest.importorskip("submitit")
    import threading

    from workbench.sweep.runner import RunTask

    folder = tmp_path / "runs" / "train" / "000_seed-0"
    fresh = ["train", *TINY, "epochs=12", "lr=0.1", f"run_root={tmp_path / 'runs'}", "name=000_seed-0"]
    monkeypatch.setenv("PYTHONPATH", child_env()["PYTHONPATH"])
    task = RunTask(["train"], fresh, str(folder), 0, 1, 0, str(tmp_path / "run.log"))
    out: dict = {}
    worker = threading.Thread(target=lambda: out.update(first=task()))
    worker.start()
    deadline = time.time() + 120
    while not list(folder.glob("*/checkpoints/last.pt")) and time.time() < deadline:
        time.sleep(0.05)
    requeue = task.checkpoint()
    worker.join(60)
    assert isinstance(requeue, submitit.helpers.DelayedSubmission)
    assert out["first"]["exit_code"] == 130 and not list(folder.glob("*/summary.json"))
    second = requeue.function(*requeue.args, **requeue.kwargs)
    assert second["exit_code"] == 0
    (run_dir,) = folder.iterdir()
    assert (run_dir / "summary.json").is_file() and second["run_dir"] == str(run_dir)
    assert "--resume" in (tmp_path / "run.log").read_text()


def test_next_attempt_skips_finished_resumes_partial_and_starts_fresh(tmp_path):
    import yaml

    from workbench.commands.train import TrainCommandConfig
    from workbench.config import resolve_config, to_dict
    from workbench.sweep.runner import next_attempt

    cfg = resolve_config(TrainCommandConfig, ["dataset=digits", "model=mlp", "seed=3"])
    fresh = ["train", "seed=3"]

    def make(folder: str, summary: dict | None, ckpt: bool, **changes) -> Path:
        d = tmp_path / "point" / folder
        (d / "checkpoints").mkdir(parents=True)
        (d / "config.yaml").write_text(yaml.safe_dump({**to_dict(cfg), **changes}))
        if ckpt:
            (d / "checkpoints" / "last.pt").write_bytes(b"x")
        if summary is not None:
            (d / "summary.json").write_text(json.dumps(summary))
        return d

    assert next_attempt(["train"], fresh, tmp_path / "point", 3, cfg) == ("fresh", None, fresh)
    make("a-no-ckpt", None, False)
    assert next_attempt(["train"], fresh, tmp_path / "point", 3, cfg)[0] == "fresh"
    partial = make("b-partial", {"seed": 3, "complete": False}, True)
    assert next_attempt(["train"], fresh, tmp_path / "point", 3, cfg) == (
        "resume",
        partial,
        ["train", "--resume", str(partial)],
    )
    make("c-other-config", {"seed": 3}, True, lr=0.5)
    assert next_attempt(["train"], fresh, tmp_path / "point", 3, cfg)[0] == "resume"
    done = make("d-done-no-seed", {"acc": 1.0}, True, run_root="elsewhere", name="x")  # bookkeeping keys differ
    assert next_attempt(["train"], fresh, tmp_path / "point", 3, cfg) == ("done", done, [])


def test_a_run_made_before_a_key_existed_is_reused_only_while_the_key_is_at_its_default(tmp_path):
    import yaml

    from workbench.commands.train import TrainCommandConfig
    from workbench.config import resolve_config, to_dict
    from workbench.runs import same_config

    cfg = resolve_config(TrainCommandConfig, ["dataset=digits", "model=mlp", "seed=3"])
    old = to_dict(cfg)
    del old["lr"]  # the run was made before `lr` was a key
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old))
    assert same_config(tmp_path, cfg)
    assert not same_config(tmp_path, resolve_config(TrainCommandConfig, ["dataset=digits", "model=mlp", "lr=0.5"]))
    old["lr"] = 0.5  # a key the run had, at another value: never the same
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old))
    assert not same_config(tmp_path, cfg)


def test_refuse_split_refuses_exactly_what_the_grid_would_expand():
    from workbench.sweep.grid import refuse_split

    for key, raw, typ in (("name", "a,b", "str"), ("milestones", "3;6", "list[int]"), ("seed", "0:3", "int"),
                          ("tags", "a;a", "list[str]"), ("name", "a,", "str")):  # fmt: skip
        with pytest.raises(WorkbenchError, match=f"'{key}' holds a") as err:
            refuse_split(key, raw, typ)
        assert "\n" not in str(err.value)
    # one value each: a list with commas, a colon in a string, a ';' in a string, a plain value
    for key, raw, typ in (("milestones", "[3,6]", "list[int]"), ("device", "cuda:0", "str"),
                          ("name", "a;b", "str"), ("lr", "0.1", "float")):  # fmt: skip
        assert expand_value(key, raw, typ) == [raw]
        refuse_split(key, raw, typ)
