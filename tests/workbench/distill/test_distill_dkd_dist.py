"""DKD (arXiv 2203.08679) and DIST (arXiv 2205.10536) against their formulas computed here independently,
in float64 numpy from hand-made logits, with non-trivial weights and temperatures."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from workbench.distill import dist_loss, dist_terms, dkd_loss, dkd_terms, dkd_warmup, kd_loss, pearson_distance
from workbench.distill._checks import ShapeError

STUDENT = [[2.0, -1.0, 0.5, 0.0], [0.3, 1.7, -0.4, 2.2], [-1.0, 0.0, 3.0, 0.5]]
TEACHER = [[3.0, 0.5, -0.5, 1.0], [-0.2, 2.5, 0.1, 0.4], [0.0, -1.5, 2.0, 1.5]]
TARGETS = [0, 1, 3]


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    return e / e.sum()


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    return float(np.sum(p * (np.log(p) - np.log(q))))


def _dkd_oracle(s, t, y, alpha: float, beta: float, T: float) -> tuple[float, float, float]:
    tckd, nckd = [], []
    for zs, zt, c in zip(np.array(s), np.array(t), y, strict=True):
        ps, pt = _softmax(zs / T), _softmax(zt / T)
        bs, bt = np.array([ps[c], 1 - ps[c]]), np.array([pt[c], 1 - pt[c]])
        rest = [k for k in range(len(zs)) if k != c]
        hs, ht = ps[rest] / (1 - ps[c]), pt[rest] / (1 - pt[c])
        tckd.append(T * T * _kl(bt, bs))
        nckd.append(T * T * _kl(ht, hs))
    a, b = float(np.mean(tckd)), float(np.mean(nckd))
    return a, b, alpha * a + beta * b


def test_dkd_matches_its_formula():
    s, t, y = (
        torch.tensor(STUDENT, dtype=torch.float64),
        torch.tensor(TEACHER, dtype=torch.float64),
        torch.tensor(TARGETS),
    )
    for alpha, beta, T in [(1.0, 8.0, 4.0), (0.7, 2.5, 1.5), (2.0, 0.3, 0.8)]:
        tckd, nckd, total = _dkd_oracle(STUDENT, TEACHER, TARGETS, alpha, beta, T)
        got_t, got_n = dkd_terms(s, t, y, T)
        assert got_t.item() == pytest.approx(tckd, rel=1e-10) and got_n.item() == pytest.approx(nckd, rel=1e-10)
        assert dkd_loss(s, t, y, alpha, beta, T).item() == pytest.approx(total, rel=1e-10)


def test_dkd_decouples_kd_row_by_row():
    """KD = TCKD + (1 − p_t^T)·NCKD for each sample (the paper's eq. 5)."""
    T = 2.0
    for zs, zt, c in zip(STUDENT, TEACHER, TARGETS, strict=True):
        s, t, y = torch.tensor([zs], dtype=torch.float64), torch.tensor([zt], dtype=torch.float64), torch.tensor([c])
        tckd, nckd = dkd_terms(s, t, y, T)
        pt = torch.softmax(t / T, dim=1)[0, c]
        assert kd_loss(s, t, T).item() == pytest.approx((tckd + (1 - pt) * nckd).item(), rel=1e-10)


def test_dkd_is_zero_for_equal_logits_and_finite_when_confident():
    s = torch.tensor(STUDENT)
    assert dkd_loss(s, s.clone(), torch.tensor(TARGETS), 0.9, 7.0, 3.0).abs().item() < 1e-6
    sharp = torch.tensor([[80.0, -80.0, 0.0], [0.0, 90.0, -90.0]], requires_grad=True)  # p_t = 1 in float32
    loss = dkd_loss(sharp, torch.tensor([[0.0, 1.0, 2.0], [3.0, 0.0, 1.0]]), torch.tensor([0, 1]), 1.0, 8.0, 1.0)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(sharp.grad).all()


def test_dkd_gradients_reach_the_student_only_through_the_given_teacher_tensor_and_one_step_lowers_it():
    s = torch.tensor(STUDENT, requires_grad=True)
    t = torch.tensor(TEACHER)
    y = torch.tensor(TARGETS)
    loss = dkd_loss(s, t, y, 1.0, 8.0, 4.0)
    loss.backward()
    assert s.grad.abs().sum() > 0
    with torch.no_grad():
        stepped = s - 0.01 * s.grad
    assert dkd_loss(stepped, t, y, 1.0, 8.0, 4.0) < loss
    # α weighs only TCKD, β only NCKD
    s.grad = None
    dkd_loss(s, t, y, 0.0, 1.0, 4.0).backward()
    only_n = s.grad.clone()
    s.grad = None
    dkd_terms(s, t, y, 4.0)[1].backward()
    assert torch.allclose(only_n, s.grad)


def test_dkd_warmup_ramps_linearly_then_holds():
    assert [dkd_warmup(e, 4) for e in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert dkd_warmup(0, 0) == 1.0


def test_dkd_refuses_bad_shapes():
    with pytest.raises(ShapeError, match="targets"):
        dkd_loss(torch.zeros(3, 4), torch.zeros(3, 4), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ShapeError, match="same shape"):
        dkd_loss(torch.zeros(3, 4), torch.zeros(3, 5), torch.zeros(3, dtype=torch.long))


def _pearson(u: np.ndarray, v: np.ndarray) -> float:
    return float(np.corrcoef(u, v)[0, 1])


def _dist_oracle(s, t, beta: float, gamma: float, T: float) -> tuple[float, float, float]:
    ys = np.stack([_softmax(np.array(r) / T) for r in s])
    yt = np.stack([_softmax(np.array(r) / T) for r in t])
    inter = T * T * np.mean([1 - _pearson(ys[i], yt[i]) for i in range(ys.shape[0])])
    intra = T * T * np.mean([1 - _pearson(ys[:, j], yt[:, j]) for j in range(ys.shape[1])])
    return float(inter), float(intra), float(beta * inter + gamma * intra)


def test_dist_matches_its_formula():
    s, t = torch.tensor(STUDENT, dtype=torch.float64), torch.tensor(TEACHER, dtype=torch.float64)
    for beta, gamma, T in [(1.0, 1.0, 1.0), (2.0, 0.5, 4.0), (0.3, 3.0, 1.7)]:
        inter, intra, total = _dist_oracle(STUDENT, TEACHER, beta, gamma, T)
        got_inter, got_intra = dist_terms(s, t, T)
        assert got_inter.item() == pytest.approx(inter, rel=1e-6) and got_intra.item() == pytest.approx(intra, rel=1e-6)
        assert dist_loss(s, t, beta, gamma, T).item() == pytest.approx(total, rel=1e-6)


def test_dist_is_zero_for_equal_logits_and_pearson_ignores_scale_and_shift():
    s = torch.tensor(STUDENT)
    assert dist_loss(s, s.clone(), 2.0, 2.0, 4.0).abs().item() < 1e-5
    a, b = torch.randn(5, 7, dtype=torch.float64), torch.randn(5, 7, dtype=torch.float64)
    assert torch.allclose(pearson_distance(a, b), pearson_distance(3.0 * a + 1.5, 0.2 * b - 4.0))
    assert torch.allclose(pearson_distance(a, -a), torch.full((5,), 2.0, dtype=torch.float64))


def test_dist_gradients_are_finite_and_one_step_lowers_it():
    s = torch.tensor(STUDENT, requires_grad=True)
    t = torch.tensor(TEACHER)
    loss = dist_loss(s, t, 2.0, 2.0, 4.0)
    loss.backward()
    assert torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0
    with torch.no_grad():
        stepped = s - 0.5 * s.grad
    assert dist_loss(stepped, t, 2.0, 2.0, 4.0) < loss


def test_a_constant_slice_has_distance_one_and_finite_gradients():
    a = torch.tensor([[1.0, 1.0, 1.0], [0.0, 1.0, 2.0]], requires_grad=True)
    d = pearson_distance(a, torch.tensor([[0.0, 1.0, 2.0], [0.0, 1.0, 2.0]]))
    d.sum().backward()
    assert d[0].item() == pytest.approx(1.0) and d[1].item() == pytest.approx(0.0, abs=1e-6)
    assert torch.isfinite(a.grad).all()
