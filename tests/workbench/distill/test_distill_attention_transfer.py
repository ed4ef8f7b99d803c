import math

import pytest
import torch

from workbench.distill import ShapeError, attention_map, attention_transfer_loss


def _map(feat):
    """Hand attention map of one sample given as nested lists [c][h][w]."""
    h, w = len(feat[0]), len(feat[0][0])
    a = [sum(feat[c][i][j] ** 2 for c in range(len(feat))) for i in range(h) for j in range(w)]
    n = math.sqrt(sum(v * v for v in a))
    return [v / n for v in a]


FS = [[[[1.0, 2.0], [0.0, 1.0]], [[1.0, 0.0], [2.0, 1.0]]], [[[0.5, 0.0], [1.0, 1.0]], [[0.0, 3.0], [1.0, 0.0]]]]
FT = [[[[2.0, 0.0], [1.0, 1.0]]], [[[1.0, 1.0], [1.0, 2.0]]]]  # one channel: widths may differ


def test_attention_map_hand_values():
    m = attention_map(torch.tensor(FS, dtype=torch.float64))
    assert m.shape == (2, 4)
    for b in range(2):
        assert m[b].tolist() == pytest.approx(_map(FS[b]), rel=1e-12)


def test_attention_transfer_loss_hand_values():
    s = torch.tensor(FS, dtype=torch.float64, requires_grad=True)
    t = torch.tensor(FT, dtype=torch.float64)
    want = sum(sum((a - b) ** 2 for a, b in zip(_map(FS[i]), _map(FT[i]))) for i in range(2)) / 2
    loss = attention_transfer_loss(s, t)
    assert loss.item() == pytest.approx(want, rel=1e-12)
    assert attention_transfer_loss(s, t, reduction="elementmean").item() == pytest.approx(want / 4, rel=1e-12)
    loss.backward()
    assert torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0


def test_attention_transfer_zero_for_equal_maps():
    s = torch.tensor(FS)
    assert attention_transfer_loss(s, s.clone()).item() == pytest.approx(0.0, abs=1e-12)
    # scaling a feature map does not change its normalised attention map
    assert attention_transfer_loss(s, 3 * s).item() == pytest.approx(0.0, abs=1e-10)


def test_attention_transfer_sizes():
    with pytest.raises(ShapeError, match="interpolate=True"):
        attention_transfer_loss(torch.ones(2, 3, 4, 4), torch.ones(2, 3, 2, 2))
    with pytest.raises(ShapeError, match="batch"):
        attention_transfer_loss(torch.ones(2, 3, 2, 2), torch.ones(3, 3, 2, 2))
    with pytest.raises(ShapeError):
        attention_transfer_loss(torch.ones(2, 3), torch.ones(2, 3))
    # a constant map stays constant after resizing: zero loss against a constant teacher
    loss = attention_transfer_loss(torch.ones(2, 3, 4, 4), torch.ones(2, 5, 2, 2), interpolate=True)
    assert loss.item() == pytest.approx(0.0, abs=1e-12)
