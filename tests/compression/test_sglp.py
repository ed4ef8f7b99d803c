"""SGLP method logic on hand-made cases and a small resnet (no training, no files)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from compression.pruning import sglp
from workbench.errors import WorkbenchError
from workbench.flops import count_macs
from workbench.models import build_model

SHAPE = (1, 8, 8)


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return build_model("resnet20", num_classes=10, in_channels=1).eval()


def test_allocate_is_proportional_with_one_per_segment():
    assert sglp.allocate([2, 3, 2], 4) == [1, 2, 1]
    assert sglp.allocate([5, 5], 5) == [3, 2] or sglp.allocate([5, 5], 5) == [2, 3]
    assert sum(sglp.allocate([1, 6, 2], 5)) == 5
    assert sglp.allocate([1, 6, 2], 5)[0] == 1  # a one-unit segment still keeps its unit
    assert sglp.allocate([3, 3, 3], 2) in ([1, 1, 0], [1, 0, 1], [0, 1, 1])  # fewer units than segments
    for sizes, keep in [([4, 1, 7], 6), ([2, 2, 2, 2], 7), ([9], 3)]:
        alloc = sglp.allocate(sizes, keep)
        assert sum(alloc) == keep and all(0 <= a <= s for a, s in zip(alloc, sizes))


def test_unit_macs_equal_the_saving_of_removing_them(net):
    units = sglp.prunable_units(net, SHAPE)
    assert units == ["layer1.0", "layer1.1", "layer1.2", "layer2.1", "layer2.2", "layer3.1", "layer3.2"]
    macs = sglp.unit_macs(net, units, SHAPE)
    before = count_macs(net, SHAPE)
    removed = ["layer1.1", "layer3.2"]
    after = count_macs(sglp.pruned_copy(net, removed, SHAPE), SHAPE)
    assert before - after == macs["layer1.1"] + macs["layer3.2"]
    # a 16-channel 3x3 block on 8x8 inputs: 2 convs of 16*16*9 MACs per pixel
    assert macs["layer1.0"] == 2 * 16 * 16 * 9 * 64


def test_units_for_target_and_its_refusal(net):
    units = sglp.prunable_units(net, SHAPE)
    macs = sglp.unit_macs(net, units, SHAPE)
    total = count_macs(net, SHAPE)
    r, floor = sglp.units_for_target(total, macs, 0.6, units)
    assert 0 < floor < 0.6
    mean = sum(macs.values()) / len(units)
    assert total - r * mean <= 0.6 * total < total - (r - 1) * mean
    with pytest.raises(WorkbenchError, match="cannot be reached"):
        sglp.units_for_target(total, macs, floor / 2, units)


def test_no_prunable_units_is_refused():
    mlp = build_model("mlp", num_classes=10, in_channels=1)
    with pytest.raises(WorkbenchError, match="no prunable residual units"):
        sglp.prunable_units(mlp, SHAPE)


def test_best_subset_exhaustive_finds_the_maximum_and_greedy_agrees_on_additive_scores():
    weight = {"a": 0.1, "b": 3.0, "c": 0.5, "d": 2.0, "e": 1.0}

    class FakeScorer:
        cache: dict = {}

        def __call__(self, removed):
            return sum(w for u, w in weight.items() if u not in removed)

    seg = list(weight)
    exhaustive = sglp.best_subset(seg, 2, FakeScorer(), cap=100)
    assert sorted(exhaustive) == ["b", "d"]
    greedy = sglp.best_subset(seg, 2, FakeScorer(), cap=1)
    assert sorted(greedy) == ["b", "d"]
    assert sglp.best_subset(seg, 5, FakeScorer(), cap=1) == seg


def test_subset_scorer_matches_a_copy_with_the_units_removed(net):
    from workbench.prune import gradient_norm

    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(8, *SHAPE, generator=g), torch.randint(0, 10, (8,), generator=g)) for _ in range(2)]
    scorer = sglp.SubsetScorer(net, batches, torch.device("cpu"), direction="max", bn="eval")
    value = scorer(["layer1.2", "layer2.1"])
    reference = gradient_norm(sglp.pruned_copy(net, ["layer1.2", "layer2.1"], SHAPE), batches, "cpu", 2)
    assert value == pytest.approx(reference, rel=1e-6)
    assert sglp.SubsetScorer(net, batches, torch.device("cpu"), bn="eval")(["layer1.2", "layer2.1"]) == pytest.approx(
        -value
    )
    # the model is restored after scoring
    assert not isinstance(net.layer1[2], torch.nn.Identity)


def test_subset_scorer_with_batch_statistics_leaves_the_running_statistics_alone(net):
    from workbench.prune import gradient_norm

    g = torch.Generator().manual_seed(2)
    batches = [(torch.randn(8, *SHAPE, generator=g), torch.randint(0, 10, (8,), generator=g))]
    before = {k: v.clone() for k, v in net.state_dict().items() if "running" in k}
    value = sglp.SubsetScorer(net, batches, torch.device("cpu"), direction="max", bn="train")(["layer1.1"])
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())
    reference = gradient_norm(sglp.pruned_copy(net, ["layer1.1"], SHAPE), batches, "cpu", 1, train_mode=True)
    assert value == pytest.approx(reference, rel=1e-6)
    eval_value = sglp.SubsetScorer(net, batches, torch.device("cpu"), direction="max", bn="eval")(["layer1.1"])
    assert value != pytest.approx(eval_value)
    assert not net.training
    with pytest.raises(WorkbenchError, match="BatchNorm mode"):
        sglp.SubsetScorer(net, batches, torch.device("cpu"), bn="frozen")


def test_segmentation_from_a_block_cka_matrix():
    # two clear blocks of similar units: units 0-2 and 3-6
    cka = np.full((7, 7), 0.2)
    cka[:3, :3] = 0.9
    cka[3:, 3:] = 0.8
    np.fill_diagonal(cka, 1.0)
    assert sglp.segment_units(cka, 2, "neg_mean_cka") == [(0, 3), (3, 7)]
    assert sglp.segment_units(cka, 2, "sum_squares") == [(0, 3), (3, 7)]
    assert sglp.segment_units(cka, 2, "cka_sum_squares") == [(0, 3), (3, 7)]
    auto = sglp.segment_units(cka, 0)
    assert auto[0] == (0, 3) or len(auto) >= 2
    with pytest.raises(WorkbenchError, match="exceeds"):
        sglp.segment_units(cka, 8)


def test_baselines_remove_the_asked_number_by_their_rule(net):
    units = sglp.prunable_units(net, SHAPE)
    last = sglp.baseline_selection(net, units, 3, "last", seed=0)
    assert last.removed == units[-3:] and last.kept == units[:-3]
    rnd = sglp.baseline_selection(net, units, 3, "random", seed=0)
    assert len(rnd.removed) == 3 and rnd.removed == sglp.baseline_selection(net, units, 3, "random", 0).removed
    wn = sglp.baseline_selection(net, units, 2, "weight-norm", seed=0)
    norms = sglp.weight_norms(net, units)
    assert sorted(norms[u] for u in wn.removed) == sorted(norms.values())[:2]


def test_sglp_selection_keeps_the_budget_per_segment(net):
    g = torch.Generator().manual_seed(2)
    data = torch.utils.data.TensorDataset(
        torch.randn(64, *SHAPE, generator=g), torch.randint(0, 10, (64,), generator=g)
    )
    units = sglp.prunable_units(net, SHAPE)
    probe = sglp.probe_loader(data, 48, 16, seed=0)
    analysis = sglp.analyse(net, units, probe, torch.device("cpu"), segments=3)
    assert analysis.cka.shape == (7, 7)
    assert np.allclose(np.diag(analysis.cka), 1.0)
    assert len(analysis.segments) == 3
    batches = sglp.fixed_batches(data, 16, 1, seed=0)
    sel = sglp.sglp_selection(net, analysis, 4, batches, torch.device("cpu"))
    assert len(sel.kept) == 4 and len(sel.removed) == 3
    for (a, b), m in zip(sel.segments, sel.keep_per_segment):
        assert sum(u in sel.kept for u in units[a:b]) == m
    # exhaustive search: every subset of each segment was scored (cache holds one entry per candidate)
    expected = sum(
        len(list(itertools.combinations(range(b - a), m))) if m < b - a else 0
        for (a, b), m in zip(sel.segments, sel.keep_per_segment)
    )
    assert sel.evaluations == expected
    unit_sel = sglp.sglp_selection(net, analysis, 4, batches, torch.device("cpu"), importance="unit")
    assert len(unit_sel.kept) == 4
    pruned = sglp.pruned_copy(net, sel.removed, SHAPE)
    assert pruned(torch.randn(2, *SHAPE)).shape == (2, 10)
