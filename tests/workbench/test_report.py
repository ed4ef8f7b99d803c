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
