"""Physical channel removal equals masking; pruned models reload from a plain state_dict."""

from __future__ import annotations

import copy
import io

import pytest
import torch
from torch import nn

from workbench.errors import WorkbenchError
from workbench.flops import count_macs, count_params
from workbench.models import build_model
from workbench.prune.channels import (
    channel_group,
    coupled_layers,
    dependency_graph,
    independent_convs,
    plan_from_masks,
    plan_from_scores,
    prune_channels,
)
from workbench.prune.reshape import fit_modules_to_state_dict

SHAPE = (3, 8, 8)


def _randomised_resnet20(seed: int = 0) -> nn.Module:
    """resnet20 in eval mode with non-trivial BatchNorm affine parameters and running statistics."""
    torch.manual_seed(seed)
    model = build_model("resnet20", num_classes=10)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def _masked(model: nn.Module, plan: dict[str, list[int]]) -> nn.Module:
    """Copy of ``model`` where every removed channel is zeroed at its source (conv filter, and the BN's
    weight AND bias, so that the normalised channel is exactly 0 as if it did not exist)."""
    masked = copy.deepcopy(model)
    dg = dependency_graph(masked, torch.zeros(1, *SHAPE))
    for path, idxs in plan.items():
        for dep, ids in channel_group(dg, masked.get_submodule(path), idxs):
            target = dep.target.module
            if not dg.is_out_channel_pruning_fn(dep.handler):
                continue
            if isinstance(target, nn.Conv2d):
                target.weight.data[ids] = 0.0
                if target.bias is not None:
                    target.bias.data[ids] = 0.0
            elif isinstance(target, nn.BatchNorm2d):
                target.weight.data[ids] = 0.0
                target.bias.data[ids] = 0.0
    return masked


def test_independent_convs_are_the_block_internal_convs():
    model = build_model("resnet20", num_classes=10)
    x = torch.zeros(1, *SHAPE)
    assert independent_convs(model, x) == [f"layer{s}.{b}.conv1" for s in (1, 2, 3) for b in range(3)]
    assert independent_convs(build_model("small_cnn", num_classes=10), x) == ["layer1.0", "layer2.0", "layer3.0"]
    dg = dependency_graph(model, x)
    coupled = {model.get_submodule(p) for p in ("conv1", "layer1.0.conv2", "layer1.1.conv2", "layer1.2.conv2")}
    assert set(coupled_layers(dg, model.conv1)) == coupled


def test_pruned_model_equals_masked_model_and_is_smaller():
    model = _randomised_resnet20()
    plan = {"layer1.0.conv1": [0, 3, 5], "layer2.1.conv1": [1, 2, 30], "layer3.2.conv1": list(range(0, 64, 2))}
    masked = _masked(model, plan)
    x = torch.randn(4, *SHAPE)
    with torch.no_grad():
        want = masked(x)
        assert not torch.allclose(want, model(x), atol=1e-3)  # the masks do change the function
    macs, params = count_macs(model, SHAPE), count_params(model)
    out = prune_channels(model, torch.zeros(1, *SHAPE), plan)
    assert out is model
    assert model.layer1[0].conv1.out_channels == 13 and model.layer1[0].bn1.num_features == 13
    assert model.layer1[0].conv2.in_channels == 13 and model.layer3[2].conv1.out_channels == 32
    with torch.no_grad():
        torch.testing.assert_close(model(x), want, atol=1e-5, rtol=0)
    # Each removed internal channel costs: its 3x3 filter (in x 9), its BN (2) and its column in conv2 (out x 9).
    assert count_params(model) == params - (
        3 * (16 * 9 + 2 + 16 * 9) + 3 * (32 * 9 + 2 + 32 * 9) + 32 * (64 * 9 + 2 + 64 * 9)
    )
    assert count_macs(model, SHAPE) < macs


def test_coupled_plan_entries_are_merged_and_match_masking():
    model = _randomised_resnet20(1)
    plan = {"conv1": [4], "layer1.1.conv2": [2, 4]}
    masked = _masked(model, {"conv1": [2, 4]})
    x = torch.randn(3, *SHAPE)
    prune_channels(model, torch.zeros(1, *SHAPE), plan)
    assert model.conv1.out_channels == 14
    assert all(b.conv2.out_channels == 14 for b in model.layer1)
    assert model.layer2[0].shortcut[0].in_channels == 14
    with torch.no_grad():
        torch.testing.assert_close(model(x), masked(x), atol=1e-5, rtol=0)


def test_pruned_state_dict_loads_into_a_fresh_model_with_identical_outputs():
    model = _randomised_resnet20(2)
    prune_channels(model, torch.zeros(1, *SHAPE), {"layer1.2.conv1": [1, 7], "conv1": [0], "layer3.0.conv1": [5]})
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    fresh = build_model("resnet20", num_classes=10)
    with pytest.raises(RuntimeError, match="size mismatch"):
        fresh.load_state_dict(state)
    fit_modules_to_state_dict(fresh, state)
    fresh.load_state_dict(state)
    fresh.eval()
    assert count_params(fresh) == count_params(model)
    assert fresh.layer1[2].conv1.out_channels == 14 and fresh.layer3[0].conv1.out_channels == 63
    x = torch.randn(2, *SHAPE)
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))


def test_fit_modules_handles_linear_and_depthwise():
    net = nn.Sequential(nn.Conv2d(4, 4, 3, groups=4), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 3))
    small = nn.Sequential(nn.Conv2d(2, 2, 3, groups=2), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(2, 3))
    fit_modules_to_state_dict(net, small.state_dict())
    net.load_state_dict(small.state_dict())
    assert net[0].groups == 2 and net[0].in_channels == 2 and net[1].num_features == 2 and net[3].in_features == 2
    x = torch.randn(1, 2, 3, 3)
    torch.testing.assert_close(net.eval()(x), small.eval()(x))


def test_plan_errors():
    model = build_model("resnet20", num_classes=10)
    x = torch.zeros(1, *SHAPE)
    with pytest.raises(WorkbenchError, match="all 16 output channels"):
        prune_channels(model, x, {"layer1.0.conv1": list(range(16))})
    with pytest.raises(WorkbenchError, match="must be in 0..15"):
        prune_channels(model, x, {"layer1.0.conv1": [16]})
    with pytest.raises(WorkbenchError, match="BatchNorm2d"):
        prune_channels(model, x, {"layer1.0.bn1": [0]})
    with pytest.raises(WorkbenchError, match="no module"):
        prune_channels(model, x, {"layer1.0.conv9": [0]})
    assert model.layer1[0].conv1.out_channels == 16


def test_plans_from_masks_and_scores():
    masks = {"a": torch.tensor([False, True, False, True]), "b": torch.tensor([True, False])}
    assert plan_from_masks(masks) == {"a": [1, 3], "b": [0]}
    scores = {"a": torch.tensor([0.5, 0.1, 0.9, 0.2]), "b": torch.tensor([0.05, 0.3])}
    assert plan_from_scores(scores, 0.5) == {"a": [1, 3], "b": [0]}
    # Global: the 3 lowest of 6 are b0 (0.05), a1 (0.1), a3 (0.2); a layer always keeps one channel.
    assert plan_from_scores(scores, 0.5, scope="global") == {"a": [1, 3], "b": [0]}
    assert plan_from_scores({"c": torch.tensor([0.1, 0.2])}, 0.9, scope="global") == {"c": [0]}
    with pytest.raises(WorkbenchError, match="scope"):
        plan_from_scores(scores, 0.5, scope="model")
