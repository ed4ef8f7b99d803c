import math

import pytest
import torch

from workbench.distill import (
    ShapeError,
    pairwise_distances,
    rkd_angle_loss,
    rkd_distance_loss,
    similarity_preserving_loss,
)

XS = [[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [3.0, 1.0]]
XT = [[1.0, 0.0, 0.0], [0.0, 1.0, 1.0], [2.0, 2.0, 0.0], [0.0, 0.0, -1.0]]


def _huber(x, delta=1.0):
    return 0.5 * x * x / delta if abs(x) < delta else abs(x) - 0.5 * delta


def _dist(a, b):
    return math.sqrt(sum((u - v) ** 2 for u, v in zip(a, b)))


def _norm_dists(x):
    pairs = [(i, j) for i in range(len(x)) for j in range(len(x)) if i != j]
    d = {p: _dist(x[p[0]], x[p[1]]) for p in pairs}
    mu = sum(d.values()) / len(d)
    return {p: v / mu for p, v in d.items()}


def _cos_at(x, i, j, k):
    u = [a - b for a, b in zip(x[i], x[j])]
    v = [a - b for a, b in zip(x[k], x[j])]
    return sum(a * b for a, b in zip(u, v)) / (math.sqrt(sum(a * a for a in u)) * math.sqrt(sum(b * b for b in v)))


def _t(x, grad=False):
    return torch.tensor(x, dtype=torch.float64, requires_grad=grad)


def test_pairwise_distances():
    d = pairwise_distances(_t(XS))
    for i in range(4):
        for j in range(4):
            assert d[i, j].item() == pytest.approx(_dist(XS[i], XS[j]), abs=1e-12)


def test_rkd_distance_hand_values_and_grad():
    ds, dt = _norm_dists(XS), _norm_dists(XT)
    want = sum(_huber(ds[p] - dt[p]) for p in ds) / len(ds)
    s = _t(XS, grad=True)
    loss = rkd_distance_loss(s, _t(XT))
    assert loss.item() == pytest.approx(want, rel=1e-10)
    loss.backward()
    assert torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0


def test_rkd_angle_hand_values_and_grad():
    trip = [(i, j, k) for i in range(4) for j in range(4) for k in range(4) if len({i, j, k}) == 3]
    assert len(trip) == 24
    want = sum(_huber(_cos_at(XS, *t) - _cos_at(XT, *t)) for t in trip) / len(trip)
    s = _t(XS, grad=True)
    loss = rkd_angle_loss(s, _t(XT))
    assert loss.item() == pytest.approx(want, rel=1e-10)
    loss.backward()
    assert torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0


def test_rkd_zero_for_equal_and_scaled_embeddings():
    t = _t(XT)
    assert rkd_distance_loss(2.5 * t, t).item() == pytest.approx(0.0, abs=1e-12)
    assert rkd_angle_loss(2.5 * t, t).item() == pytest.approx(0.0, abs=1e-12)


def test_similarity_preserving_hand_values():
    def g(x):
        rows = [[sum(a * b for a, b in zip(x[i], x[j])) for j in range(len(x))] for i in range(len(x))]
        return [[v / math.sqrt(sum(w * w for w in r)) for v in r] for r in rows]

    xs, xt = XS[1:], XT[1:]  # avoid the zero vector (its similarity row is all zeros)
    gs, gt = g(xs), g(xt)
    want = sum((gs[i][j] - gt[i][j]) ** 2 for i in range(3) for j in range(3)) / 9
    s = _t(xs, grad=True)
    loss = similarity_preserving_loss(s, _t(xt))
    assert loss.item() == pytest.approx(want, rel=1e-10)
    loss.backward()
    assert torch.isfinite(s.grad).all()
    assert similarity_preserving_loss(_t(xt), _t(xt)).item() == pytest.approx(0.0, abs=1e-14)
    # (B, C, H, W) inputs are flattened per sample
    f = torch.randn(3, 2, 2, 2, dtype=torch.float64)
    assert similarity_preserving_loss(f, f.flatten(1) * 2).item() == pytest.approx(0.0, abs=1e-12)


def test_relational_shape_errors():
    with pytest.raises(ShapeError, match="batch"):
        rkd_distance_loss(torch.zeros(3, 2), torch.zeros(4, 2))
    with pytest.raises(ShapeError, match="at least 3"):
        rkd_angle_loss(torch.zeros(2, 2), torch.zeros(2, 2))
    with pytest.raises(ShapeError):
        similarity_preserving_loss(torch.zeros(3), torch.zeros(3))
