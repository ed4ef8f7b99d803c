import pytest
import torch
from torch import nn

from workbench.distill import FeatureMimicry, FeatureProjector, ShapeError, feature_mse


def test_feature_mse_hand_values():
    s = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    t = torch.tensor([[0.0, 2.0], [5.0, 1.0]])
    # squared errors 1, 0, 4, 9 -> mean 3.5
    assert feature_mse(s, t).item() == pytest.approx(3.5)
    assert feature_mse(s, s.clone()).item() == 0.0


def test_mimicry_without_projector_when_widths_match():
    m = FeatureMimicry(2, 2, spatial=False)
    assert isinstance(m.projector, nn.Identity)
    assert len(list(m.parameters())) == 0
    s = torch.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    t = torch.tensor([[0.0, 2.0], [5.0, 1.0]])
    loss = m(s, t)
    assert loss.item() == pytest.approx(3.5)
    loss.backward()
    # d/ds mean((s - t)^2) = 2 (s - t) / 4
    assert torch.allclose(s.grad, (s - t).detach() / 2)


def test_mimicry_conv_projector_hand_values():
    m = FeatureMimicry(2, 1, spatial=True)
    conv = m.projector.proj
    assert isinstance(conv, nn.Conv2d) and conv.kernel_size == (1, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([2.0, -1.0]).view(1, 2, 1, 1))
    s = torch.tensor([[[[1.0, 0.0]], [[3.0, 1.0]]]], requires_grad=True)  # (1, 2, 1, 2)
    t = torch.tensor([[[[0.0, 0.0]]]])  # (1, 1, 1, 2)
    # projected: [2*1 - 3, 2*0 - 1] = [-1, -1] -> mse 1
    loss = m(s, t)
    assert loss.item() == pytest.approx(1.0)
    loss.backward()
    assert torch.isfinite(conv.weight.grad).all() and conv.weight.grad.abs().sum() > 0


def test_linear_projector_and_always_mode():
    p = FeatureProjector(3, 2, spatial=False)
    assert isinstance(p.proj, nn.Linear) and p(torch.zeros(4, 3)).shape == (4, 2)
    assert not isinstance(FeatureMimicry(2, 2, spatial=False, projector="always").projector, nn.Identity)


def test_feature_shape_errors():
    with pytest.raises(ShapeError):
        feature_mse(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ShapeError):
        FeatureMimicry(3, 4, projector="never")
    with pytest.raises(ShapeError):
        FeatureMimicry(2, 2, spatial=True)(torch.zeros(2, 2), torch.zeros(2, 2))
    with pytest.raises(ShapeError, match=r"\(1, 2, 2, 2\).*\(1, 2, 3, 3\)"):
        FeatureMimicry(2, 2)(torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 3, 3))
