"""Torch-Pruning's criteria as baselines: target MACs reached, and the plan is the library's own global ranking."""

from __future__ import annotations

import copy

import pytest
import torch
import torch_pruning as tp
from torch import nn

from compression.pruning import FILTER_METHODS
from compression.pruning import filters as fp
from compression.pruning import tp as tpm
from workbench.errors import WorkbenchError
from workbench.flops import count_macs
from workbench.models.resnet_cifar import CifarResNet

SHAPE = (1, 8, 8)
CRITERIA = ("l1", "l2", "taylor", "lamp", "fpgm", "bn-scale", "random")
# the library's classes, named here independently of compression.pruning.tp
LIBRARY = {
    "l1": lambda: tp.importance.MagnitudeImportance(p=1),
    "l2": lambda: tp.importance.MagnitudeImportance(p=2),
    "taylor": lambda: tp.importance.TaylorImportance(),
    "lamp": lambda: tp.importance.LAMPImportance(p=2),
    "fpgm": lambda: tp.importance.FPGMImportance(p=2),
    "bn-scale": lambda: tp.importance.BNScaleImportance(),
}


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    model = CifarResNet((1, 1, 1), (8, 16, 16), num_classes=10, in_channels=1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.2, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    model.eval()
    x, y = torch.randn(16, *SHAPE), torch.randint(0, 10, (16,))
    nn.functional.cross_entropy(model(x), y).backward()  # gradients for the Taylor criterion
    return model


def test_every_criterion_is_registered_and_an_unknown_one_is_refused():
    assert {f"tp-{c}" for c in CRITERIA} <= set(FILTER_METHODS.names())
    with pytest.raises(WorkbenchError, match="unknown Torch-Pruning criterion 'magic'"):
        tpm.importance("magic")
    with pytest.raises(WorkbenchError, match="unknown filter-pruning method"):
        FILTER_METHODS["tp-magic"]


def _library_global_plan(model: nn.Module, criterion: str, ratio: float, heads: dict[str, str]) -> dict[str, list]:
    """Global ranking done here by hand from the library's importance: all groups but the classifier's,
    the scores of all groups concatenated, the ``n`` lowest removed (n as the library counts it)."""
    dg = tp.DependencyGraph().build_dependency(model, example_inputs=torch.zeros(1, *SHAPE))
    names = {m: n for n, m in model.named_modules()}
    imp = LIBRARY[criterion]()
    scored = []
    for group in dg.get_all_groups(ignored_layers=[model.fc], root_module_types=[nn.Conv2d, nn.Linear]):
        scored.append((names[group[0].dep.target.module], imp(group)))
    flat = torch.cat([s for _, s in scored])
    n = len(flat) - int(len(flat) * (1 - ratio))
    threshold = torch.topk(flat, n, largest=False).values[-1]
    return {heads[root]: sorted((s <= threshold).nonzero().flatten().tolist()) for root, s in scored}


@pytest.mark.parametrize("criterion", sorted(LIBRARY))
def test_the_plan_is_the_librarys_own_global_ranking(net, criterion):
    groups = fp.prunable_groups(net, SHAPE, "all")
    heads = {q: h for h, ms in groups.items() for q in ms}
    ours = tpm.library_plan(net, torch.zeros(1, *SHAPE), criterion, 0.3, list(groups), groups)
    expected = _library_global_plan(net, criterion, 0.3, heads)
    assert {h: v for h, v in ours.items() if v} == {h: v for h, v in expected.items() if v}
    assert sum(len(v) for v in ours.values()) > 0


def test_random_is_seeded_and_the_model_is_not_changed(net):
    groups = fp.prunable_groups(net, SHAPE, "all")
    before = copy.deepcopy(net.state_dict())
    a = tpm.library_plan(net, torch.zeros(1, *SHAPE), "random", 0.3, list(groups), groups, seed=1)
    assert a == tpm.library_plan(net, torch.zeros(1, *SHAPE), "random", 0.3, list(groups), groups, seed=1)
    assert a != tpm.library_plan(net, torch.zeros(1, *SHAPE), "random", 0.3, list(groups), groups, seed=2)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


@pytest.mark.parametrize("scope", ["all", "internal"])
@pytest.mark.parametrize("criterion", CRITERIA)
def test_the_baselines_reach_the_target_macs_and_pruning_equals_masking(net, criterion, scope):
    groups = fp.prunable_groups(net, SHAPE, scope)
    ratio, plan, after, before = fp.fit_budget(net, f"tp-{criterion}", list(groups), SHAPE, 0.5, groups=groups)
    pruned = fp.pruned_copy(net, plan, SHAPE)
    assert count_macs(pruned, SHAPE) == after <= 0.5 * before
    assert after > 0.4 * before
    if scope == "internal":
        assert set(p for p, v in plan.items() if v) <= {"layer1.0.conv1", "layer2.0.conv1", "layer3.0.conv1"}
    masked = fp.zero_channels(copy.deepcopy(net), plan, SHAPE)
    x = torch.randn(4, *SHAPE)
    with torch.no_grad():
        assert torch.allclose(masked(x), pruned.eval()(x), atol=1e-5)
