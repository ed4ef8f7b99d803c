import math

from workbench.report import build_table, format_mean_std, mean_std


def test_mean_std_is_the_sample_std():
    assert mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0)
    assert mean_std([5.0]) == (5.0, 0.0)
    assert format_mean_std([90.0, 92.0]) == f"91.00 ± {math.sqrt(2):.2f}"


def test_table_shows_varying_keys_and_seed_counts():
    rows = [
        {"config": {"method": "kd", "epochs": 2}, "seeds": [0, 1], "summaries": [{"acc": 90.0}, {"acc": 92.0}]},
        {"config": {"method": "dml", "epochs": 2}, "seeds": [0], "summaries": [{"acc": 80.0, "note": "x"}]},
    ]
    header, cells = build_table(rows)
    assert header == ["method", "n", "acc"]
    assert cells[0][:2] == ["kd", "2"] and cells[1] == ["dml", "1", "80.00 ± 0.00"]


def _fake_run(root, i, method, env, seed, score):
    import json

    import yaml

    d = root / f"run{i}"
    d.mkdir(parents=True)
    (d / "config.yaml").write_text(yaml.safe_dump({"method": method, "env": env, "seed": seed, "name": f"r{i}"}))
    (d / "summary.json").write_text(json.dumps({"seed": seed, "score": score, "steps": 100}))


def test_stats_tables_stratify_by_env_and_match_workbench_stats(tmp_path, capsys):
    import csv

    import pytest

    from workbench import stats
    from workbench.report import main

    scores = {
        ("a", "pong"): [0.9, 0.7, 0.8],
        ("a", "breakout"): [0.2, 0.4, 0.3],
        ("b", "pong"): [0.5, 0.6, 0.9],
        ("b", "breakout"): [0.1, 0.3, 0.3],
    }
    i = 0
    for (method, env), vals in scores.items():
        for seed, v in enumerate(vals):
            _fake_run(tmp_path / "runs", i, method, env, seed, v)
            i += 1
    assert main([str(tmp_path / "runs"), f"out={tmp_path / 'out'}", "reps=500"]) == 0
    md = (tmp_path / "out" / "stats.md").read_text()
    assert "Statistics of `score`" in md and "strata: env (2 values)" in md and "n: runs per cell" in md
    assert "| method=a | 2 | 3 |" in md
    rows = list(csv.DictReader((tmp_path / "out" / "stats.csv").open()))
    iqm_a = next(r for r in rows if r["method"] == "method=a" and r["statistic"] == "iqm")
    a_tasks = [scores[("a", "pong")], scores[("a", "breakout")]]
    want = stats.bootstrap_ci("iqm", a_tasks, reps=500)
    assert float(iqm_a["value"]) == pytest.approx(want.value)
    assert float(iqm_a["ci_low"]) <= want.value <= float(iqm_a["ci_high"])
    poi = next(r for r in rows if r["statistic"] == "probability_of_improvement")
    # pong, a vs b: 0.9 beats 0.5, 0.6 and ties 0.9 (2.5); 0.7 and 0.8 beat 0.5, 0.6 (2 each) -> 6.5/9;
    # breakout: 0.2 beats 0.1 (1); 0.4 beats all (3); 0.3 beats 0.1 and ties two 0.3 (2) -> 6/9
    assert float(poi["value"]) == pytest.approx((6.5 / 9 + 6 / 9) / 2)
    assert (tmp_path / "out" / "profile.png").stat().st_size > 1000
