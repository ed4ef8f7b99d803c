"""CPMC at scope=all: a coupled group's criteria per member conv (cpmc_group_norm=per_layer, the default)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from compression.pruning import filters as fp
from workbench.errors import WorkbenchError
from workbench.prune.criteria import cpmc_criteria, cpmc_importance

SHAPE = (1, 8, 8)
STREAMS = ("conv1", "layer2.0.conv2", "layer3.0.conv2")
# The plan cpmc@internal chose on this net before the group normalisation existed (commit 5e030b0).
INTERNAL_PLAN = {
    "layer1.0.conv1": [0, 1, 2, 3, 4, 5, 6],
    "layer1.1.conv1": [0, 1, 2, 3, 4, 6, 7],
    "layer2.0.conv1": [],
    "layer2.1.conv1": [0, 9, 10, 11, 12, 13, 14, 15],
    "layer3.0.conv1": [],
    "layer3.1.conv1": [0, 2, 5, 6, 8, 9, 10, 11, 12, 15, 17, 19, 20, 21, 22, 24, 25, 29],
}


@pytest.fixture(scope="module")
def groups(net):
    return fp.prunable_groups(net, SHAPE, "all")


def _kept(net, plan):
    return {p: net.get_submodule(p).out_channels - len(v) for p, v in plan.items()}


def _rows(m: nn.Module) -> torch.Tensor:
    return m.weight.detach().flatten(1).double().pow(2).sum(1)


def _cols(m: nn.Module) -> torch.Tensor:
    return m.weight.detach().transpose(0, 1).flatten(1).double().pow(2).sum(1)


def test_per_layer_criteria_are_the_stem_streams_totals_by_hand_divided_by_its_three_convs(net, groups):
    x = torch.zeros(1, *SHAPE)
    total = cpmc_criteria(net, x, list(groups), "total")
    per = cpmc_criteria(net, x, list(groups), "per_layer")
    # The stem stream (8x8 px, stage 1 at 8x8, stage 2 at 4x4): a channel is the stem filter (1·9 MACs/px) and
    # the filters of both blocks' conv2 (8·9), read by both blocks' conv1 (8·9 per input channel) and by
    # stage 2's first conv1 (16·9, 4x4 px) and shortcut (16·1, 4x4 px).
    macs = 9 * 64 + 2 * 72 * 64 + 2 * 72 * 64 + 144 * 16 + 16 * 16
    params = (9 + 2) + 2 * (72 + 2) + 2 * 72 + 144 + 16  # + the stem's and conv2s' BatchNorm weight and bias
    b = net.layer1
    w2 = _rows(net.conv1) + _rows(b[0].conv2) + _rows(b[1].conv2)
    w2 = w2 + _cols(b[0].conv1) + _cols(b[1].conv1) + _cols(net.layer2[0].conv1) + _cols(net.layer2[0].shortcut[0])
    w, m, p = total["conv1"]
    torch.testing.assert_close(w, w2.sqrt())
    assert m.tolist() == [macs] * 8 and p.tolist() == [params] * 8
    w, m, p = per["conv1"]
    torch.testing.assert_close(w, (w2 / 3).sqrt())
    torch.testing.assert_close(m, torch.full((8,), macs / 3, dtype=torch.float64))
    torch.testing.assert_close(p, torch.full((8,), params / 3, dtype=torch.float64))
    # every group: |G| = 3 for the streams, 1 (unchanged) for the internal convs
    for head, members in groups.items():
        size = len(members)
        assert size == (3 if head in STREAMS else 1)
        torch.testing.assert_close(per[head][0], total[head][0] / size**0.5)
        torch.testing.assert_close(per[head][1], total[head][1] / size)
        torch.testing.assert_close(per[head][2], total[head][2] / size)


def test_cpmc_importance_combines_the_per_layer_criteria_normalised_globally(net, groups):
    x = torch.zeros(1, *SHAPE)
    raw = cpmc_criteria(net, x, list(groups), "per_layer")
    w_max = max(float(r[0].max()) for r in raw.values())
    m_min = min(float(r[1].min()) for r in raw.values())
    p_min = min(float(r[2].min()) for r in raw.values())
    got = cpmc_importance(net, x, list(groups), group_norm="per_layer")
    for head, (w, m, p) in raw.items():
        torch.testing.assert_close(got[head], w / w_max * (m_min / m) * (p_min / p))
    with pytest.raises(WorkbenchError, match="unknown CPMC group normalisation 'layer'"):
        cpmc_criteria(net, x, list(groups), "layer")


def _sane(kept: dict[str, int], net, groups, round_to: int) -> bool:
    wide = all(kept[h] >= max(round_to, net.get_submodule(h).out_channels // 2) for h in STREAMS)
    return wide and any(kept[h] < net.get_submodule(h).out_channels for h in groups if h not in STREAMS)


@pytest.mark.parametrize("round_to", [1, 4])
def test_cpmc_at_scope_all_keeps_every_stream_and_prunes_internal_channels(net, groups, round_to):
    _, plan, after, before = fp.fit_budget(net, "cpmc", list(groups), SHAPE, 0.5, groups=groups, round_to=round_to)
    assert after <= 0.5 * before
    kept = _kept(net, plan)
    assert _sane(kept, net, groups, round_to), kept
    # the whole-group costs (the paper's rule applied to a group) empty the stem stream and prune no internal conv
    _, plan, _, _ = fp.fit_budget(net, "cpmc", list(groups), SHAPE, 0.5, groups=groups, round_to=round_to,
                                  method_options={"cpmc_group_norm": "total"})  # fmt: skip
    total = _kept(net, plan)
    assert not _sane(total, net, groups, round_to) and total["conv1"] == round_to, total


def test_per_layer_pruning_of_a_stream_equals_masking(net, groups):
    _, plan, _, _ = fp.fit_budget(net, "cpmc", list(groups), SHAPE, 0.5, groups=groups, round_to=4)
    assert plan["conv1"]  # with round_to=4 the stem stream is pruned (8 -> 4)
    pruned = fp.pruned_copy(net, plan, SHAPE)
    masked = fp.zero_channels(copy.deepcopy(net), plan, SHAPE)
    x = torch.randn(4, *SHAPE)
    with torch.no_grad():
        assert torch.allclose(masked(x), pruned(x), atol=1e-5)


@pytest.mark.parametrize("group_norm", ["per_layer", "total"])
def test_scope_internal_is_unchanged(net, group_norm):
    layers = fp.prunable_groups(net, SHAPE, "internal")
    _, plan, _, _ = fp.fit_budget(net, "cpmc", list(layers), SHAPE, 0.5, groups=layers,
                                  method_options={"cpmc_group_norm": group_norm})  # fmt: skip
    assert plan == INTERNAL_PLAN
