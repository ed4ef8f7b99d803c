"""Gradient-norm importance equals its formula; per-unit norms split the total; no side effects."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from workbench.errors import WorkbenchError
from workbench.models import build_model
from workbench.prune.importance import gradient_norm, unit_gradient_norms


def _batches(n: int, size: int, dim: int, classes: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(size, dim, generator=g), torch.randint(0, classes, (size,), generator=g)) for _ in range(n)]


def test_gradient_norm_of_a_linear_model_equals_the_hand_gradient():
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    batches = _batches(3, 5, 4, 3, seed=1)
    want = 0.0
    w, b = model.weight.detach().double(), model.bias.detach().double()
    for x, y in batches:
        x = x.double()
        dz = (torch.softmax(x @ w.T + b, dim=1) - nn.functional.one_hot(y, 3).double()) / len(x)
        dw, db = dz.T @ x, dz.sum(0)
        want += float(torch.sqrt((dw**2).sum() + (db**2).sum())) / len(batches)
    # Only the first num_batches batches are read.
    got = gradient_norm(model, batches + _batches(2, 5, 4, 3, seed=9), "cpu", num_batches=3)
    assert got == pytest.approx(want, rel=1e-6)
    assert model.weight.grad is None and model.bias.grad is None


def test_unit_gradient_norms_equal_backward_norms_per_unit():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    batches = _batches(2, 8, 4, 3, seed=2)
    want = {"0": 0.0, "2": 0.0}
    for x, y in batches:
        model.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        for u in want:
            sq = sum(float((p.grad.double() ** 2).sum()) for p in model.get_submodule(u).parameters())
            want[u] += sq**0.5 / 2
    model.zero_grad(set_to_none=True)
    got = unit_gradient_norms(model, ["0", "2"], batches, "cpu", num_batches=2)
    assert got == pytest.approx(want, rel=1e-6)
    # Units cover all parameters here, so per batch the total norm is the root of the summed squares.
    total = gradient_norm(model, batches[:1], "cpu", num_batches=1)
    per_unit = unit_gradient_norms(model, ["0", "2"], batches[:1], "cpu", num_batches=1)
    assert total == pytest.approx((per_unit["0"] ** 2 + per_unit["2"] ** 2) ** 0.5, rel=1e-9)


def test_eval_mode_by_default_leaves_batchnorm_untouched():
    torch.manual_seed(0)
    model = build_model("small_cnn", num_classes=4).train()
    stats = [b.clone() for b in model.buffers()]
    g = torch.Generator().manual_seed(3)
    batches = [(torch.randn(4, 3, 8, 8, generator=g), torch.randint(0, 4, (4,), generator=g))]
    assert gradient_norm(model, batches, "cpu", num_batches=1) > 0
    assert model.training
    assert all(torch.equal(a, b) for a, b in zip(stats, model.buffers()))
    gradient_norm(model, batches, "cpu", num_batches=1, train_mode=True)
    assert not torch.equal(stats[0], model.layer1[1].running_mean)


def test_errors():
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU())
    batches = _batches(1, 4, 4, 3, seed=4)
    with pytest.raises(WorkbenchError, match="needs 2"):
        gradient_norm(model, batches, "cpu", num_batches=2)
    with pytest.raises(WorkbenchError, match="without trainable parameters"):
        unit_gradient_norms(model, ["1"], batches, "cpu", num_batches=1)
    with pytest.raises(WorkbenchError, match="num_batches >= 1"):
        gradient_norm(model, batches, "cpu", num_batches=0)
