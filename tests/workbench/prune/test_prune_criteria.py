"""Filter criteria: norms, PFGDF's Gaussian band, CPMC's multi-criteria importance by hand."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from workbench.errors import WorkbenchError
from workbench.models import build_model
from workbench.prune.criteria import cpmc_importance, get_criterion, l1_norm, l2_norm, pfgdf_mask, pfgdf_scores


def _conv_with_filter_l1(norms: list[float]) -> nn.Conv2d:
    """A 1x1 conv with one input channel whose filter c is the single weight norms[c] (so L1 = norms[c])."""
    conv = nn.Conv2d(1, len(norms), 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor(norms).view(-1, 1, 1, 1))
    return conv


def test_norms_equal_their_definitions():
    conv = nn.Conv2d(2, 3, 2, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.arange(24, dtype=torch.float32).view(3, 2, 2, 2) - 10)
    w = conv.weight.detach().view(3, -1)
    torch.testing.assert_close(l1_norm(conv), w.abs().sum(1))
    torch.testing.assert_close(l2_norm(conv), (w**2).sum(1).sqrt())
    assert get_criterion("l1") is l1_norm
    with pytest.raises(WorkbenchError, match="did you mean 'l2'"):
        get_criterion("l22")


def test_pfgdf_selects_the_central_band():
    norms = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]  # mean 5, population std sqrt(60/9)
    conv = _conv_with_filter_l1(norms)
    sigma = (60 / 9) ** 0.5
    torch.testing.assert_close(pfgdf_scores(conv), torch.tensor([abs(v - 5) / sigma for v in norms]))
    want = [abs(v - 5) < 0.8 * sigma for v in norms]  # 0.8 sigma = 2.07: the filters 3..7
    assert pfgdf_mask(conv, 0.8).tolist() == want == [False, False, True, True, True, True, True, False, False]
    # A band holding everything keeps the filter farthest from the mean (the first of the two extremes).
    assert pfgdf_mask(conv, 10.0).tolist() == [False] + [True] * 8


def test_cpmc_importance_equals_hand_computation():
    torch.manual_seed(0)
    model = build_model("small_cnn", num_classes=5)
    x = torch.zeros(1, 3, 8, 8)
    layers = ["layer1.0", "layer2.0"]
    got = cpmc_importance(model, x, layers)
    c1, c2, c3 = model.layer1[0], model.layer2[0], model.layer3[0]
    # Weight criterion: the filter together with the next layer's input slice that consumes the channel.
    w1 = (c1.weight.flatten(1).pow(2).sum(1) + c2.weight.transpose(0, 1).flatten(1).pow(2).sum(1)).sqrt()
    w2 = (c2.weight.flatten(1).pow(2).sum(1) + c3.weight.transpose(0, 1).flatten(1).pow(2).sum(1)).sqrt()
    # 8x8 input; layer1 (stride 2) -> 4x4, layer2 (stride 2) -> 2x2, layer3 -> 2x2.
    macs1, macs2 = 3 * 9 * 16 + 32 * 9 * 4, 16 * 9 * 4 + 64 * 9 * 4
    params1, params2 = 3 * 9 + 2 + 32 * 9, 16 * 9 + 2 + 64 * 9
    w_max = max(w1.max(), w2.max()).double()
    m_min, p_min = min(macs1, macs2), min(params1, params2)
    want1 = w1.double() / w_max * (m_min / macs1) * (p_min / params1)
    want2 = w2.double() / w_max * (m_min / macs2) * (p_min / params2)
    torch.testing.assert_close(got["layer1.0"], want1, rtol=1e-5, atol=0)
    torch.testing.assert_close(got["layer2.0"], want2, rtol=1e-5, atol=0)
    summed = cpmc_importance(model, x, layers, combine="sum", weights=(2.0, 1.0, 1.0))
    want_sum = (2 * w1.double() / w_max + m_min / macs1 + p_min / params1) / 4
    torch.testing.assert_close(summed["layer1.0"], want_sum, rtol=1e-5, atol=0)
    with pytest.raises(WorkbenchError, match="combination"):
        cpmc_importance(model, x, layers, combine="max")
