import math

import pytest
import torch

from workbench.distill import ShapeError, dml_loss, embedding_distance

NEW = [[1.0, 2.0, 0.0], [0.0, 1.0, 1.0]]
OLD = [[0.0, 0.0, 0.0], [3.0, 1.0, -3.0]]


def test_embedding_distance_frobenius_and_per_sample():
    # differences: (1, 2, 0) and (-3, 0, 4): squared sums 5 and 25
    new = torch.tensor(NEW, requires_grad=True)
    old = torch.tensor(OLD)
    d = embedding_distance(new, old)
    assert d.item() == pytest.approx(math.sqrt(30.0))
    assert embedding_distance(new, old, "per_sample_mean").item() == pytest.approx((math.sqrt(5) + 5) / 2)
    d.backward()
    assert torch.allclose(new.grad, (new - old).detach() / math.sqrt(30.0))


def test_embedding_distance_zero_and_finite_grad_at_zero():
    new = torch.tensor(NEW, requires_grad=True)
    d = embedding_distance(new, new.detach().clone())
    assert d.item() == 0.0
    d.backward()
    assert torch.isfinite(new.grad).all()
    with pytest.raises(ShapeError, match=r"\(2, 3\).*\(2, 4\)"):
        embedding_distance(torch.zeros(2, 3), torch.zeros(2, 4))


Z = [
    [[1.0, 0.0, -1.0], [0.5, 0.5, 0.0]],
    [[0.0, 2.0, 0.0], [1.0, -1.0, 0.5]],
    [[-1.0, 0.0, 1.0], [0.0, 0.0, 2.0]],
]


def _softmax(row, T):
    e = [math.exp(v / T) for v in row]
    return [v / sum(e) for v in e]


def _kl(p, q):
    return sum(a * math.log(a / b) for a, b in zip(p, q))


def test_dml_hand_values():
    for T in (1.0, 2.0):
        got = dml_loss(torch.tensor(Z, dtype=torch.float64), T=T)
        for i in range(3):
            want = 0.0
            for j in range(3):
                if j != i:
                    kls = [_kl(_softmax(Z[j][b], T), _softmax(Z[i][b], T)) for b in range(2)]
                    want += sum(kls) / 2 / 2
            assert got[i].item() == pytest.approx(T * T * want, rel=1e-10)


def test_dml_gradients_reach_only_own_member():
    z = torch.tensor(Z, requires_grad=True)
    dml_loss(z)[1].backward()
    assert z.grad[1].abs().sum() > 0
    assert z.grad[0].abs().sum() == 0 and z.grad[2].abs().sum() == 0
    z.grad = None
    dml_loss(z, detach_peers=False)[1].backward()
    assert z.grad[0].abs().sum() > 0 and torch.isfinite(z.grad).all()


def test_dml_zero_when_members_agree_and_errors():
    z = torch.tensor(Z[:1] * 3)
    assert dml_loss(z).abs().max().item() == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ShapeError):
        dml_loss(torch.zeros(1, 2, 3))
    with pytest.raises(ShapeError):
        dml_loss(torch.zeros(2, 3))
