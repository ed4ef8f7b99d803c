"""``speed_fold_bn``: the CPU speed measurement can fold BatchNorm into the convolutions (both models)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from compression.pipeline import cpu_images_per_second, fold_bn
from compression.pruning import filters as fp
from compression.pruning.config import PruneConfig
from workbench.models.resnet_cifar import CifarResNet

SHAPE = (1, 8, 8)


@pytest.fixture(scope="module")
def net(net: CifarResNet) -> CifarResNet:
    """The shared small resnet with live BatchNorms (conftest), in train mode: folding works on an eval copy
    whatever the model's mode."""
    return net.train()


def _bns(model: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def test_folded_model_computes_what_the_unfolded_one_does_and_the_model_is_left_alone(net):
    state = copy.deepcopy(net.state_dict())
    groups = fp.prunable_groups(net, SHAPE, "all")
    _, plan, _, _ = fp.fit_budget(net, "sfp", list(groups), SHAPE, 0.5, groups=groups, round_to=4)
    pruned = fp.pruned_copy(net, plan, SHAPE)
    x = torch.randn(16, *SHAPE)
    for model in (net, pruned):
        folded = fold_bn(model)
        assert _bns(model) > 0 and _bns(folded) == 0  # every BatchNorm follows a conv here
        with torch.no_grad():
            want = copy.deepcopy(model).eval()(x)
            torch.testing.assert_close(folded(x), want, atol=1e-4, rtol=0)
    assert net.training and all(torch.equal(v, state[k]) for k, v in net.state_dict().items())


def test_the_speed_measurement_takes_the_fold_and_the_prune_config_defaults_to_off(net):
    speed = cpu_images_per_second({"a": net, "b": net}, SHAPE, batch_size=4, repeats=1, fold_batchnorm=True)
    assert set(speed) == {"a", "b"} and all(v > 0 for v in speed.values())
    assert PruneConfig().speed_fold_bn is False


@pytest.mark.parametrize("fold", [False, True])
def test_the_speed_measurement_runs_without_autograd(net, fold):
    grad_enabled: list[bool] = []
    model = copy.deepcopy(net)
    model.fc.register_forward_hook(lambda *_: grad_enabled.append(torch.is_grad_enabled()))
    cpu_images_per_second({"a": model}, SHAPE, batch_size=4, repeats=2, fold_batchnorm=fold)
    assert grad_enabled and not any(grad_enabled)  # inference speed, not the cost of recording a graph
