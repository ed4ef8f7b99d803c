import math

import pytest
import torch

from workbench.distill import (
    ShapeError,
    contrastive_loss,
    kd_loss,
    off_diagonal,
    similarity_logits,
    soft_contrastive_loss,
)


def test_similarity_logits_are_cosines_over_tau():
    a = torch.tensor([[3.0, 0.0], [0.0, 2.0]])
    k = torch.tensor([[1.0, 1.0], [-2.0, 0.0]])
    s = similarity_logits(a, k, tau=0.5)
    c = 1 / math.sqrt(2)
    assert torch.allclose(s, torch.tensor([[c, -1.0], [c, 0.0]]) / 0.5)
    with pytest.raises(ShapeError):
        similarity_logits(a, torch.zeros(2, 3))


def test_off_diagonal_drops_the_diagonal_in_order():
    m = torch.arange(9.0).view(3, 3)
    assert off_diagonal(m).tolist() == [[1.0, 2.0], [3.0, 5.0], [6.0, 7.0]]


def test_contrastive_loss_matches_hand_formula():
    logits = torch.tensor([[0.0, 1.0, 2.0], [1.0, 0.0, 0.5], [2.0, 0.5, 0.0]], dtype=torch.float64)
    y = torch.tensor([0, 0, 1])
    # exclude_self: anchor 0 keys {1, 2}, positive 1; anchor 1 keys {0, 2}, positive 0; anchor 2 has none.
    l0 = -(1.0 - math.log(math.exp(1.0) + math.exp(2.0)))
    l1 = -(1.0 - math.log(math.exp(1.0) + math.exp(0.5)))
    got = contrastive_loss(logits, y, y, exclude_self=True)
    assert got.item() == pytest.approx((l0 + l1) / 2, rel=1e-12)
    # Without exclusion anchor 0 has positives {0, 1}; anchor 2 has positive {2}.
    lse = [math.log(sum(math.exp(v) for v in row)) for row in logits.tolist()]
    full = [-((0.0 + 1.0) / 2 - lse[0]), -((1.0 + 0.0) / 2 - lse[1]), -(0.0 - lse[2])]
    assert contrastive_loss(logits, y, y, exclude_self=False).item() == pytest.approx(sum(full) / 3, rel=1e-12)


def test_soft_contrastive_is_kd_on_similarities_and_zero_for_equal_inputs():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(5, 5, generator=g), torch.randn(5, 5, generator=g)
    assert soft_contrastive_loss(s, t, 3.0).item() == pytest.approx(kd_loss(s, t, 3.0).item())
    assert soft_contrastive_loss(s, t, 3.0, exclude_self=True).item() == pytest.approx(
        kd_loss(off_diagonal(s), off_diagonal(t), 3.0).item()
    )
    assert soft_contrastive_loss(s, s.clone(), 3.0, exclude_self=True).abs().item() < 1e-7
