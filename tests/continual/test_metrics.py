"""CIL metrics against hand computations on a fixed accuracy matrix."""

from __future__ import annotations

import pytest

from continual.metrics import (
    average_forgetting,
    average_incremental_accuracy,
    backward_transfer,
    last_accuracy,
    old_new_accuracy,
    seen_accuracy,
    summarize,
)

# a[i][j]: accuracy on task j after training task i (None above the diagonal)
MATRIX = [
    [90.0, None, None],
    [60.0, 80.0, None],
    [40.0, 50.0, 70.0],
]


def test_seen_accuracy_equal_sizes() -> None:
    assert seen_accuracy(MATRIX) == pytest.approx([90.0, 70.0, 160.0 / 3])


def test_seen_accuracy_weighted_by_test_sizes() -> None:
    # task 0 has 3x the test images of the others (a B50-style first task)
    seen = seen_accuracy(MATRIX, sizes=[300, 100, 100])
    assert seen[1] == pytest.approx((300 * 60 + 100 * 80) / 400)
    assert seen[2] == pytest.approx((300 * 40 + 100 * 50 + 100 * 70) / 500)


def test_average_incremental_and_last() -> None:
    assert average_incremental_accuracy(MATRIX) == pytest.approx((90 + 70 + 160 / 3) / 3)
    assert last_accuracy(MATRIX) == pytest.approx(160 / 3)


def test_average_forgetting() -> None:
    # task 0: best 90 before the last task, 40 after → 50; task 1: best 80, then 50 → 30
    assert average_forgetting(MATRIX) == pytest.approx(40.0)
    # forgetting uses the best earlier value, not the first one
    rising = [[10.0, None, None], [30.0, 50.0, None], [20.0, 50.0, 60.0]]
    assert average_forgetting(rising) == pytest.approx((10.0 + 0.0) / 2)
    assert average_forgetting([[75.0]]) == 0.0


def test_summarize_keys_and_partial_matrix() -> None:
    s = summarize([[90.0], [60.0, 80.0]])
    assert s["seen_acc"] == pytest.approx([90.0, 70.0])
    assert s["avg_incremental_acc"] == pytest.approx(80.0)
    assert s["last_acc"] == pytest.approx(70.0)
    assert s["avg_forgetting"] == pytest.approx(30.0)


def test_missing_entry_is_rejected() -> None:
    with pytest.raises(ValueError, match="row 1"):
        seen_accuracy([[90.0], [None, 80.0]])


def test_backward_transfer_by_hand() -> None:
    a = [[90.0, None, None], [70.0, 80.0, None], [50.0, 60.0, 85.0]]
    # BWT = ((50 − 90) + (60 − 80)) / 2
    assert backward_transfer(a) == pytest.approx(-30.0)
    assert backward_transfer([[42.0]]) == 0.0
    assert backward_transfer([[40.0, None], [55.0, 70.0]]) == pytest.approx(15.0)  # positive transfer


def test_old_and_new_class_accuracy_weighted_by_test_sizes() -> None:
    a = [[90.0, None, None], [70.0, 80.0, None], [50.0, 60.0, 85.0]]
    old, new = old_new_accuracy(a, [400, 200, 200])
    assert old[0] is None
    assert old[1] == pytest.approx(70.0)
    assert old[2] == pytest.approx((400 * 50.0 + 200 * 60.0) / 600)
    assert new == [90.0, 80.0, 85.0]
    s = summarize(a, [400, 200, 200])
    assert s["bwt"] == pytest.approx(-30.0) and s["old_acc"] == old and s["new_acc"] == new
