import math

import pytest
import torch

from workbench.distill import ShapeError, hinton_objective, kd_loss


def _softmax(row, T):
    e = [math.exp(v / T) for v in row]
    return [v / sum(e) for v in e]


def _kl_T2(s_rows, t_rows, T):
    total = 0.0
    for s, t in zip(s_rows, t_rows):
        ps, pt = _softmax(s, T), _softmax(t, T)
        total += sum(a * (math.log(a) - math.log(b)) for a, b in zip(pt, ps)) * T * T
    return total / len(s_rows)


S = [[1.0, 2.0, 0.0], [0.5, -1.0, 2.0]]
TE = [[0.0, 1.0, 3.0], [2.0, 0.0, -1.0]]


def test_kd_loss_equals_hand_formula():
    s, t = torch.tensor(S, dtype=torch.float64), torch.tensor(TE, dtype=torch.float64)
    for T in (1.0, 2.0, 4.0):
        assert kd_loss(s, t, T).item() == pytest.approx(_kl_T2(S, TE, T), rel=1e-10)
    per_row = kd_loss(s, t, 2.0, reduction="none")
    assert per_row.shape == (2,)
    assert per_row[1].item() == pytest.approx(_kl_T2(S[1:], TE[1:], 2.0), rel=1e-10)
    assert kd_loss(s, t, 2.0, reduction="sum").item() == pytest.approx(2 * _kl_T2(S, TE, 2.0), rel=1e-10)


def test_kd_loss_leading_axes_are_rows():
    s = torch.tensor([S, TE], dtype=torch.float64)  # (2, 2, 3)
    t = torch.tensor([TE, S], dtype=torch.float64)
    want = (_kl_T2(S, TE, 3.0) + _kl_T2(TE, S, 3.0)) / 2
    assert kd_loss(s, t, 3.0).item() == pytest.approx(want, rel=1e-10)


def test_kd_loss_zero_when_equal_and_finite_grad():
    s = torch.tensor(S, requires_grad=True)
    assert kd_loss(s, s.detach().clone()).item() == pytest.approx(0.0, abs=1e-7)
    kd_loss(s, torch.tensor(TE)).backward()
    assert torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0


def test_hinton_objective_weights():
    s = torch.tensor(S, dtype=torch.float64, requires_grad=True)
    t = torch.tensor(TE, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([1, 2])
    total, parts = hinton_objective(s, t, y)
    ce = -sum(math.log(_softmax(row, 1.0)[c]) for row, c in zip(S, [1, 2])) / 2
    kd = _kl_T2(S, TE, 4.0)
    assert parts["ce"].item() == pytest.approx(ce, rel=1e-10)
    assert parts["kd"].item() == pytest.approx(kd, rel=1e-10)
    assert total.item() == pytest.approx(0.1 * ce + 0.9 * kd, rel=1e-10)
    total.backward()
    assert t.grad is None  # teacher frozen
    assert torch.isfinite(s.grad).all()
    total2, _ = hinton_objective(s, t, y, T=2.0, gamma=1.0, alpha=0.5)
    assert total2.item() == pytest.approx(ce + 0.5 * _kl_T2(S, TE, 2.0), rel=1e-10)


def test_kd_shape_errors():
    with pytest.raises(ShapeError, match=r"\(2, 3\).*\(2, 4\)"):
        kd_loss(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ShapeError, match="targets"):
        hinton_objective(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError):
        hinton_objective(torch.zeros(2, 3, 1), torch.zeros(2, 3, 1), torch.zeros(2, dtype=torch.long))
