"""Filter-pruning methods on a tiny resnet: budget reached, and the physically pruned model equals the masked one."""

from __future__ import annotations

import copy

import pytest
import torch

from compression.pruning import FILTER_METHODS
from compression.pruning import filters as fp
from workbench.errors import WorkbenchError
from workbench.flops import count_macs
from workbench.models import build_model
from workbench.trainer import Trainer, TrainerConfig, trainer_config

SHAPE = (1, 8, 8)
TARGET = 0.5


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    return torch.utils.data.TensorDataset(
        torch.randn(48, *SHAPE, generator=g), torch.randint(0, 10, (48,), generator=g)
    )


def _outputs(model, x):
    with torch.no_grad():
        return model.eval()(x)


# methods that read training data first (tp-taylor's gradients) are tested in test_tp_criteria.py
@pytest.mark.parametrize("method", [m for m in fp.ONE_SHOT_METHODS if not FILTER_METHODS[m].needs_data])
def test_one_shot_methods_reach_the_target_and_pruning_equals_masking(net, method):
    layers = fp.prunable_convs(net, SHAPE)
    assert layers == [f"layer{s}.{b}.conv1" for s in (1, 2, 3) for b in range(2)]
    knob, plan, after, before = fp.fit_budget(net, method, layers, SHAPE, TARGET)
    pruned = fp.pruned_copy(net, plan, SHAPE)
    assert count_macs(pruned, SHAPE) == after <= TARGET * before
    # the budget is tight: one step less pruning misses it
    assert after > 0.4 * before
    masked = fp.zero_channels(copy.deepcopy(net), plan, SHAPE)
    x = torch.randn(4, *SHAPE)
    assert torch.allclose(_outputs(masked, x), _outputs(pruned, x), atol=1e-5)
    assert pruned.layer1[0].conv1.out_channels == 8 - len(plan["layer1.0.conv1"])


@pytest.mark.parametrize("method", fp.MASK_METHODS)
def test_mask_schedules_reach_the_target_and_pruning_equals_the_trained_masked_model(net, data, method):
    model = copy.deepcopy(net)
    layers = fp.prunable_convs(model, SHAPE)
    rate, plan0, after, before = fp.fit_budget(model, method, layers, SHAPE, TARGET)
    schedule = fp.make_schedule(method, rate, layers, SHAPE)
    cfg = trainer_config(TrainerConfig(batch_size=16, lr=0.05, progress=False), epochs=2)
    trainer = Trainer(model, cfg, data, None, device=torch.device("cpu"), callbacks=[schedule], seed=0)
    trainer.fit()
    plan = schedule.pruning_plan()
    assert {p: len(v) for p, v in plan.items()} == {p: len(v) for p, v in plan0.items()}
    pruned = fp.pruned_copy(model, plan, SHAPE)
    assert count_macs(pruned, SHAPE) == after <= TARGET * before
    x = torch.randn(4, *SHAPE)
    assert torch.allclose(_outputs(model, x), _outputs(pruned, x), atol=1e-5)
    last = trainer.history[-1]
    assert last[f"{method}/pruned_fraction"] == pytest.approx(fp.pruned_fraction(plan, model, layers))
    if method in ("srfp", "asrfp"):
        assert last[f"{method}/decay"] == 0.0 and trainer.history[0][f"{method}/decay"] > 0.0
    if method == "ghfp":
        assert last["ghfp/hard_fraction"] == last["ghfp/pruned_fraction"]


def test_asrfp_rate_rises_to_the_budget(net):
    layers = fp.prunable_convs(net, SHAPE)
    schedule = fp.make_schedule("asrfp", 0.5, layers, SHAPE, asrfp_k=4.0)
    rates = [schedule.rate_at(e, 5) for e in range(1, 6)]
    assert rates == sorted(rates) and rates[0] < 0.5
    assert rates[-1] == pytest.approx(0.5, rel=1e-6) and fp.layer_count(rates[-1], 16) == 8


def test_channel_costs_predict_the_macs_of_any_plan(net):
    layers = fp.prunable_convs(net, SHAPE)
    costs = fp.channel_costs(net, layers, SHAPE)
    before = count_macs(net, SHAPE)
    plan = {"layer1.0.conv1": [0, 3], "layer2.1.conv1": [1], "layer3.0.conv1": list(range(20))}
    assert fp.macs_of_plan(net, plan, SHAPE) == before - sum(len(v) * costs[p] for p, v in plan.items())
    # a 3x3 conv 8->8 on 8x8 and its 3x3 consumer 8->8: 2 * 8 * 9 * 64 MACs per channel
    assert costs["layer1.0.conv1"] == 2 * 8 * 9 * 64


def test_unreachable_targets_are_refused(net):
    layers = fp.prunable_convs(net, SHAPE)
    for method in ("sfp", "pfgdf"):
        with pytest.raises(WorkbenchError, match="cannot be reached"):
            fp.fit_budget(net, method, layers, SHAPE, 0.01)
    with pytest.raises(WorkbenchError, match="unknown filter-pruning method"):
        fp.fit_budget(net, "magic", layers, SHAPE, 0.5)
    with pytest.raises(WorkbenchError, match="no convolution"):
        fp.prunable_convs(build_model("mlp", 10, 1), SHAPE)
