"""The kd-fmnist table from sub-run summaries (the sub-runs themselves are tested in test_kd_methods)."""

from __future__ import annotations

import pytest

from compression.kd.compare import _rows, _table


def _s(method, seed, acc, **extra):
    return {"method": method, "seed": seed, "student_acc": acc, "macs": 100, "params": 10, **extra}


def test_rows_hold_teacher_student_alone_cohort_and_every_depth():
    teacher = {"teacher_dir": "/t", "teacher": "small_cnn", "teacher_macs": 1000, "teacher_params": 50}
    results = {
        "student": [_s("student", 0, 50.0), _s("student", 1, 52.0)],
        "kd": [_s("kd", 0, 54.0, teacher_acc=80.0, **teacher), _s("kd", 1, 56.0, teacher_acc=78.0, **teacher)],
        "mcl": [
            _s("mcl", 0, 51.0, member_acc=[50.0, 52.0], best_member_acc=52.0, ensemble_acc=55.0),
            _s("mcl", 1, 53.0, member_acc=[53.0, 53.0], best_member_acc=53.0, ensemble_acc=57.0),
        ],
        "ddnn-ekd": [
            _s(
                "ddnn-ekd",
                s,
                60.0 + s,
                depths={
                    "d1": {"acc": 40.0 + s, "macs": 10, "params": 3},
                    "d2": {"acc": 60.0 + s, "macs": 20, "params": 6},
                },
            )
            for s in (0, 1)
        ],  # fmt: skip
    }
    rows = {r["row"]: r for r in _rows(results, [])}
    assert list(rows) == ["teacher (small_cnn)", "student alone", "kd", "mcl", "ddnn-ekd d1", "ddnn-ekd d2"]
    assert rows["teacher (small_cnn)"]["acc"] == [80.0, 78.0] and rows["teacher (small_cnn)"]["macs"] == 1000
    assert rows["kd"]["acc_mean"] == pytest.approx(55.0) and rows["kd"]["acc_std"] == pytest.approx(2**0.5)
    assert rows["ddnn-ekd d1"]["acc"] == [40.0, 41.0] and rows["ddnn-ekd d2"]["macs"] == 20
    header, cells = _table(list(rows.values()))
    by_method = {c[0]: dict(zip(header, c)) for c in cells}
    assert by_method["kd"]["Δ vs student alone"] == "+4.00"
    assert by_method["teacher (small_cnn)"]["Δ vs student alone"] == ""
    assert by_method["mcl"]["test acc (%)"] == "52.00 ± 1.41"
    assert "ensemble 56.00 ± 1.41" in by_method["mcl"]["notes"]


def test_compare_runs_teachers_then_methods_through_the_sweep_and_a_resume_reuses_them(cli, tmp_path):
    """Teachers first (one sweep over the seeds), then per seed the methods with ``teacher=`` that seed's
    teacher; jobs=1 reaches every sweep; a resumed compare (with another jobs=) re-runs nothing."""
    from pathlib import Path

    import yaml

    root = tmp_path / "runs"
    tiny = "overrides=dataset=digits,epochs=1,subset=60,test_subset=30,batch_size=30,progress=false"
    res = cli(
        "compress", "compare", "protocol=kd-fmnist", "methods=student,kd", "seeds=0,1", "jobs=1", tiny,
        f"run_root={root}",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    (out,) = (p.parent for p in root.glob("compress/kd-fmnist/*/report.md"))
    report = (out / "report.md").read_text()
    assert "| teacher (small_cnn) | 2 |" in report and "| kd | 2 |" in report and "| student alone | 2 |" in report
    sweeps = sorted(p.parent.name for p in (out / "runs").glob("*/sweep.yaml"))
    assert sweeps == ["seed-0", "seed-1", "teachers"]
    for name in sweeps:
        assert yaml.safe_load((out / "runs" / name / "sweep.yaml").read_text())["options"]["jobs"] == 1
    teachers = {p.parent for p in (out / "runs" / "teachers").rglob("summary.json")}
    assert len(teachers) == 2
    for seed in (0, 1):
        (kd,) = [p.parent for p in (out / "runs" / f"seed-{seed}").rglob("*method-kd/*/summary.json")]
        cfg = yaml.safe_load((kd / "config.yaml").read_text())
        teacher = Path(cfg["teacher"])
        assert cfg["seed"] == seed and teacher in teachers
        assert yaml.safe_load((teacher / "config.yaml").read_text())["seed"] == seed
    subs = sorted((out / "runs").rglob("summary.json"))
    res = cli("compress", "compare", "--resume", str(out), "jobs=2")
    assert res.returncode == 0, res.stderr
    assert res.stdout.count("reusing") == 6
    assert sorted((out / "runs").rglob("summary.json")) == subs
