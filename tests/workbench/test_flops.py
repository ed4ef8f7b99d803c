"""MACs and parameter counting."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from workbench.errors import WorkbenchError
from workbench.flops import count_macs, count_params, model_cost, module_macs
from workbench.models import build_model


def test_conv_linear_macs_equal_hand_count():
    model = nn.Sequential(
        nn.Conv2d(3, 8, kernel_size=3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 8 * 8, 10),
    )
    # conv: C_out * C_in * k^2 * H * W; linear: in * out; BN, ReLU and biases are not counted
    assert count_macs(model, (3, 8, 8)) == 8 * 3 * 9 * 64 + 512 * 10


def test_strided_grouped_conv_macs():
    model = nn.Conv2d(8, 4, kernel_size=3, stride=2, padding=1, groups=2, bias=False)
    # output 4 x 4 x 4, each output sums (8 / 2) * 3 * 3 products
    assert count_macs(model, (8, 8, 8)) == 4 * 16 * 4 * 9


def test_resnet20_macs_about_41m():
    macs = count_macs(build_model("resnet20", 10), (3, 32, 32))
    assert abs(macs - 41e6) / 41e6 < 0.05, macs


def test_macs_scale_with_image_area_for_fully_convolutional_part():
    model = build_model("small_cnn", 10, in_channels=1)
    head = model.fc.in_features * model.fc.out_features
    small, large = count_macs(model, (1, 8, 8)), count_macs(model, (1, 16, 16))
    assert large - head == 4 * (small - head)


class _Probe(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(3)
        self.fc = nn.Linear(3, 2)
        self.seen: list[tuple[bool, bool]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append((self.training, torch.is_grad_enabled()))
        return self.fc(self.bn(x))


def test_eval_no_grad_during_count_and_modes_restored():
    model = _Probe()
    model.train()
    model.fc.eval()  # a submodule frozen on purpose keeps its own mode
    stats = model.bn.running_mean.clone()
    assert count_macs(model, (3,)) == 3 * 2
    assert model.seen == [(False, False)]
    assert model.training and model.bn.training and not model.fc.training
    torch.testing.assert_close(model.bn.running_mean, stats)


def test_probe_follows_model_dtype():
    model = nn.Linear(5, 4).double()
    assert count_macs(model, (5,)) == 20


def test_count_params_counts_frozen_and_shared_once():
    shared = nn.Linear(4, 4)
    model = nn.Sequential(shared, nn.ReLU(), shared, nn.Linear(4, 2, bias=False))
    model[3].weight.requires_grad_(False)
    assert count_params(model) == (16 + 4) + 8


def test_model_cost_keys_and_values():
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    assert model_cost(model, (3, 2, 2)) == {"macs": 36, "params": 39}


@pytest.mark.parametrize("shape", [(), (3, 0, 8)])
def test_bad_input_shape(shape):
    with pytest.raises(WorkbenchError, match="input_shape"):
        count_macs(nn.Linear(3, 2), shape)


def test_module_macs_splits_the_total_by_module_path():
    model = build_model("resnet20", num_classes=10, in_channels=1)
    model.train()
    macs = module_macs(model, (1, 8, 8))
    assert macs["conv1"] == 16 * 1 * 3 * 3 * 8 * 8  # C_out · C_in · k² · H · W
    assert macs["fc"] == 64 * 10
    top = ("conv1", "layer1", "layer2", "layer3", "fc")
    assert sum(macs[k] for k in top) == count_macs(model, (1, 8, 8))
    assert macs["layer1"] == sum(macs[f"layer1.{i}"] for i in range(3))
    assert model.training and all(m.training for m in model.modules())  # modes restored
