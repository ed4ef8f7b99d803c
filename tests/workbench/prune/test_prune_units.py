"""Residual-unit discovery and removal: shapes, MACs accounting, refusals."""

from __future__ import annotations

import pytest
import torch

from workbench.errors import WorkbenchError
from workbench.flops import count_macs, count_params
from workbench.models import build_model
from workbench.models.features import get_module
from workbench.prune.units import remove_units, residual_units, unit_shapes

SHAPE = (3, 8, 8)


def test_residual_units_of_resnet20_are_the_shape_keeping_blocks():
    model = build_model("resnet20", num_classes=10)
    units = residual_units(model, SHAPE)
    # layer2.0 and layer3.0 downsample (stride 2, more channels): anchors.
    assert units == ["layer1.0", "layer1.1", "layer1.2", "layer2.1", "layer2.2", "layer3.1", "layer3.2"]
    assert residual_units(model, SHAPE, candidates=["layer2.0", "layer2.1", "layer1"]) == ["layer2.1", "layer1"]


def test_remove_units_keeps_output_shape_and_lowers_macs_by_the_units_macs():
    torch.manual_seed(0)
    model = build_model("resnet20", num_classes=10).eval()
    x = torch.randn(2, *SHAPE)
    macs_before, params_before = count_macs(model, SHAPE), count_params(model)
    removed = ["layer1.1", "layer3.2"]
    shapes = unit_shapes(model, removed, SHAPE)
    unit_macs = sum(count_macs(get_module(model, p), shapes[p][0][1:]) for p in removed)
    unit_params = sum(count_params(get_module(model, p)) for p in removed)
    assert unit_macs > 0

    out = remove_units(model, removed, SHAPE)
    assert out is model
    assert isinstance(model.layer1[1], torch.nn.Identity) and isinstance(model.layer3[2], torch.nn.Identity)
    assert model(x).shape == (2, 10)
    assert count_macs(model, SHAPE) == macs_before - unit_macs
    assert count_params(model) == params_before - unit_params


def test_removed_unit_passes_its_input_through():
    torch.manual_seed(0)
    model = build_model("resnet20", num_classes=10).eval()
    x = torch.randn(2, *SHAPE)
    with torch.no_grad():
        h = model.layer1(model.relu(model.bn1(model.conv1(x))))
        h = model.layer2[0](h)
        want = model.fc(model.flatten(model.avgpool(model.layer3(model.layer2[2](h)))))
        remove_units(model, ["layer2.1"], SHAPE)
        torch.testing.assert_close(model(x), want)


def test_shape_changing_or_unknown_units_are_refused_and_nothing_changes():
    model = build_model("resnet20", num_classes=10)
    before = [type(m).__name__ for m in model.modules()]
    with pytest.raises(WorkbenchError, match="changes the shape"):
        remove_units(model, ["layer1.0", "layer2.0"], SHAPE)
    assert [type(m).__name__ for m in model.modules()] == before
    with pytest.raises(WorkbenchError, match="no module 'layer9.0'"):
        remove_units(model, ["layer9.0"], SHAPE)
    with pytest.raises(WorkbenchError, match="whole model"):
        remove_units(model, [""], SHAPE)
