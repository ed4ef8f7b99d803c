"""Oracle tests of SGLP's unit selection on a hand-built network whose gradient norms are known in closed form.

The network is ``fc(u_3(u_2(u_1(u_0(x)))))`` with residual units ``u_i(h) = h + g_i · h W_iᵀ``, every
``W_i = 0`` and fixed gains ``g_i``. The units compute the identity, so for a batch with CE gradient
``δ = ∂L/∂logits`` and ``D = δ · fc.weight`` (the gradient reaching every unit's output):

- ``∂L/∂W_i = g_i · Dᵀ x``, so the per-unit gradient norm is ``g_i · ‖Dᵀ x‖`` (proportional to g_i);
- with the units of S kept, the total gradient norm is ``sqrt(‖∇fc‖² + Σ_{i∈S} g_i² ‖Dᵀ x‖²)``,
  increasing in ``Σ_{i∈S} g_i²``.

So the units kept by per-unit importance and by either direction of the subset rule are known by hand.
"""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from compression.pruning import SGLP_RULES, sglp

GAINS = (3.0, 0.5, 1.0, 2.0)
UNITS = ["units.0", "units.1", "units.2", "units.3"]


class Unit(nn.Module):
    def __init__(self, width: int, gain: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(width, width))
        self.register_buffer("gain", torch.tensor(gain))
        self.shortcut = nn.Identity()  # marks a residual unit for ``residual_units``

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.shortcut(h) + self.gain * h @ self.weight.t()


class Net(nn.Module):
    def __init__(self, width: int = 4, classes: int = 3) -> None:
        super().__init__()
        self.units = nn.Sequential(*[Unit(width, g) for g in GAINS])
        self.fc = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.units(x))


@pytest.fixture
def setup():
    torch.manual_seed(0)
    net = Net()
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(64, 4, generator=g), torch.randint(0, 3, (64,), generator=g)
    batches = [(x[:32], y[:32]), (x[32:], y[32:])]
    return net, batches, TensorDataset(x, y)


def _parts(net: Net, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(‖∇fc‖², ‖Dᵀx‖) of one batch, from the closed form."""
    with torch.no_grad():
        return _closed_form(net, x, y)


def _closed_form(net: Net, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    logits = x @ net.fc.weight.t() + net.fc.bias
    delta = (torch.softmax(logits, 1) - torch.nn.functional.one_hot(y, 3)) / len(y)
    fc_sq = float((delta.t() @ x).pow(2).sum() + delta.sum(0).pow(2).sum())
    d = delta @ net.fc.weight
    return fc_sq, float((d.t() @ x).norm())


def unit_norm(net, batches, i: int) -> float:
    return float(np.mean([GAINS[i] * _parts(net, x, y)[1] for x, y in batches]))


def total_norm(net, batches, kept: list[int]) -> float:
    vals = []
    for x, y in batches:
        fc_sq, k = _parts(net, x, y)
        vals.append((fc_sq + sum((GAINS[i] * k) ** 2 for i in kept)) ** 0.5)
    return float(np.mean(vals))


def test_the_hand_built_net_has_the_four_units(setup):
    net, _, _ = setup
    assert sglp.prunable_units(net, (4,)) == UNITS


@pytest.mark.parametrize(
    ("segments", "n_keep", "keep"),
    [
        ([(0, 4)], 2, ["units.0", "units.3"]),  # the two largest gains, 3 and 2
        ([(0, 2), (2, 4)], 2, ["units.0", "units.3"]),  # one per segment: 3 > 0.5, 2 > 1
        ([(0, 2), (2, 4)], 3, ["units.0", "units.1", "units.3"]),  # 2 + 1: segment-wise, not the global top 3
    ],
)
def test_per_unit_importance_keeps_the_units_with_the_largest_gradient_norm(setup, segments, n_keep, keep):
    net, batches, _ = setup
    analysis = sglp.SGLPAnalysis(UNITS, np.eye(4), segments)
    selection = sglp.sglp_selection(net, analysis, n_keep, batches, torch.device("cpu"), importance="unit")
    for i, u in enumerate(UNITS):
        assert selection.scores[u] == pytest.approx(unit_norm(net, batches, i), rel=1e-6)
    assert selection.kept == keep
    assert selection.removed == [u for u in UNITS if u not in keep]


@pytest.mark.parametrize("direction", ["min", "max"])
def test_subset_scorer_is_the_signed_total_gradient_norm(setup, direction):
    net, batches, _ = setup
    scorer = sglp.SubsetScorer(net, batches, torch.device("cpu"), direction=direction)
    sign = -1.0 if direction == "min" else 1.0
    for removed in ([], ["units.1"], ["units.0", "units.2"]):
        kept = [i for i, u in enumerate(UNITS) if u not in removed]
        assert scorer(removed) == pytest.approx(sign * total_norm(net, batches, kept), rel=1e-6)


@pytest.mark.parametrize(("direction", "keep"), [("min", ["units.1", "units.2"]), ("max", ["units.0", "units.3"])])
def test_subset_importance_keeps_the_smallest_or_largest_gradient_norm(setup, direction, keep):
    net, batches, _ = setup
    analysis = sglp.SGLPAnalysis(UNITS, np.eye(4), [(0, 4)])
    scorer = sglp.SubsetScorer(net, batches, torch.device("cpu"), direction=direction)
    selection = sglp.sglp_selection(net, analysis, 2, batches, torch.device("cpu"), "subset", scorer=scorer)
    assert selection.kept == keep
    # greedy backward elimination (below the cap) agrees here: Σ g² is additive
    greedy = sglp.sglp_selection(net, analysis, 2, batches, torch.device("cpu"), "subset", cap=1, scorer=scorer)
    assert greedy.kept == keep


def _cfg(**kw):
    base = dict(
        seed=0, probe_samples=64, probe_batch_size=32, cka_estimator="biased", segments=1,
        segment_cost="cka_sum_squares", segment_threshold=0.05, importance="unit", importance_direction="min",
        importance_bn="train", importance_batches=2, importance_batch_size=32, subset_cap=64, keep_per_segment=[],
    )  # fmt: skip
    base.update(kw)
    return types.SimpleNamespace(**base)


def test_sglp_paper_fixes_the_papers_cost_importance_and_direction(setup):
    net, _, data = setup
    rule = SGLP_RULES["sglp-paper"]
    cfg = _cfg()
    paper = rule.settings(cfg)
    assert (paper.segment_cost, paper.importance, paper.importance_direction) == ("sum_squares", "subset", "max")
    assert cfg.segment_cost == "cka_sum_squares" and cfg.importance == "unit"  # the command's config is untouched
    job = sglp.SelectionJob(cfg, net, UNITS, data, torch.device("cpu"))
    selection = rule.selector(job)(2)
    assert selection.rule == "sglp-paper" and selection.kept == ["units.0", "units.3"]
    # the validation-chosen rule follows the command's keys: subset + min keeps the other pair
    variant = SGLP_RULES["sglp"].selector(sglp.SelectionJob(_cfg(importance="subset"), net, UNITS, data, "cpu"))(2)
    assert variant.rule == "sglp" and variant.kept == ["units.1", "units.2"]
