import pytest
import torch
import torch.nn.functional as F

from workbench.distill import (
    ShapeError,
    interpolate,
    kd_loss,
    mixup_consistency_loss,
    mixup_cross_entropy,
    mixup_feature_loss,
    sample_lambda,
)


def test_interpolate_pairs_rows_with_the_permutation():
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0], [4.0, 4.0]])
    perm = torch.tensor([2, 0, 1])
    out = interpolate(x, 0.25, perm)
    assert torch.allclose(out[0], 0.25 * x[0] + 0.75 * x[2])
    assert torch.allclose(out[1], 0.25 * x[1] + 0.75 * x[0])
    with pytest.raises(ShapeError):
        interpolate(x, 0.5, torch.tensor([0, 1]))


def test_mixup_cross_entropy_weights_both_labels():
    z = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    y = torch.tensor([0, 2])
    perm = torch.tensor([1, 0])
    want = 0.3 * F.cross_entropy(z, y) + 0.7 * F.cross_entropy(z, y[perm])
    assert mixup_cross_entropy(z, y, 0.3, perm).item() == pytest.approx(want.item())


def test_consistency_is_both_directions_and_zero_when_equal():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(4, 5, generator=g, requires_grad=True)
    b = torch.randn(4, 5, generator=g, requires_grad=True)
    loss = mixup_consistency_loss(a, b, 3.0)
    assert loss.item() == pytest.approx((kd_loss(a, b, 3.0) + kd_loss(b, a, 3.0)).item(), rel=1e-6)
    loss.backward()
    assert a.grad is not None and b.grad is not None and a.grad.abs().sum() > 0 and b.grad.abs().sum() > 0
    assert mixup_consistency_loss(a.detach(), a.detach().clone(), 3.0).abs().item() < 1e-7
    assert mixup_feature_loss(a.detach(), a.detach().clone()).item() == 0.0


def test_sample_lambda_follows_the_global_seed_and_stays_in_unit_interval():
    torch.manual_seed(3)
    first = [sample_lambda(0.4) for _ in range(20)]
    torch.manual_seed(3)
    assert [sample_lambda(0.4) for _ in range(20)] == first
    assert all(0.0 <= v <= 1.0 for v in first)
    # Beta(α, α) with small α puts most mass near 0 and 1.
    torch.manual_seed(0)
    draws = torch.tensor([sample_lambda(0.1) for _ in range(400)])
    assert ((draws < 0.1) | (draws > 0.9)).float().mean() > 0.6
