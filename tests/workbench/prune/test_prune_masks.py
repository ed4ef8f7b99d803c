"""Filter mask schedules follow their formulas; GHFP's hard filters stay exactly zero through training."""

from __future__ import annotations

import io
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from workbench.callbacks import Callback
from workbench.errors import WorkbenchError
from workbench.models import build_model
from workbench.prune.channels import prune_channels
from workbench.prune.masks import (
    AsymptoticSofterFilterPruning,
    GraduallyHardFilterPruning,
    SofterFilterPruning,
    SoftFilterPruning,
)

SHAPE = (3, 8, 8)
LAYERS = ["layer1.0", "layer2.0", "layer3.0"]  # small_cnn's convs, 16/32/64 filters


def _setup(schedule, max_epochs: int, seed: int = 0):
    torch.manual_seed(seed)
    model = build_model("small_cnn", num_classes=5)
    trainer = SimpleNamespace(model=model, max_epochs=max_epochs, device=torch.device("cpu"))
    schedule.on_fit_start(trainer)
    return model, trainer


def _weights(model):
    return {p: model.get_submodule(p).weight.detach().clone() for p in LAYERS}


def _lowest(w: torch.Tensor, n: int) -> set[int]:
    return set(torch.argsort(w.flatten(1).norm(dim=1), stable=True)[:n].tolist())


def test_schedules_are_callbacks_and_find_the_independent_convs():
    sfp = SoftFilterPruning(0.3, input_shape=SHAPE)
    assert isinstance(sfp, Callback)
    _setup(sfp, 5)
    assert sfp.layers == LAYERS


def test_sfp_zeroes_the_lowest_l2_filters_each_epoch():
    sfp = SoftFilterPruning(0.3, input_shape=SHAPE)
    model, trainer = _setup(sfp, 5)
    before = _weights(model)
    logs: dict[str, float] = {}
    sfp.on_train_epoch_end(trainer, 0, logs)
    counts = {"layer1.0": 4, "layer2.0": 9, "layer3.0": 19}  # floor(0.3 * C)
    for p, w in before.items():
        now = model.get_submodule(p).weight.detach()
        chosen = _lowest(w, counts[p])
        assert set(torch.nonzero(sfp.masks[p]).flatten().tolist()) == chosen
        for c in range(w.shape[0]):
            assert torch.equal(now[c], torch.zeros_like(now[c]) if c in chosen else w[c])
    assert logs == {
        "sfp/rate": 0.3,
        "sfp/decay": 0.0,
        "sfp/hard_share": 0.0,
        "sfp/pruned_fraction": pytest.approx(32 / 112),
        "sfp/hard_fraction": 0.0,
    }
    assert sfp.pruning_plan() == {p: sorted(_lowest(w, counts[p])) for p, w in before.items()}


@pytest.mark.parametrize(
    ("decay", "alpha0", "epoch", "want"),
    [("linear", 1.0, 1, 0.5), ("linear", 0.8, 3, 0.0), ("power", 0.8, 2, 0.512), ("constant", 0.3, 2, 0.3)],
)
def test_srfp_scales_selected_filters_by_the_decay(decay, alpha0, epoch, want):
    srfp = SofterFilterPruning(0.25, alpha0=alpha0, decay=decay, input_shape=SHAPE)
    model, trainer = _setup(srfp, 4)
    assert srfp.decay_at(epoch + 1, 4) == pytest.approx(want)
    before = _weights(model)
    logs: dict[str, float] = {}
    srfp.on_train_epoch_end(trainer, epoch, logs)
    assert logs["srfp/decay"] == pytest.approx(want)
    assert logs["srfp/pruned_fraction"] == pytest.approx((4 + 8 + 16) / 112)
    for p, w in before.items():
        now = model.get_submodule(p).weight.detach()
        chosen = torch.tensor(sorted(_lowest(w, w.shape[0] // 4)))
        torch.testing.assert_close(now[chosen], want * w[chosen], atol=1e-7, rtol=0)
        rest = torch.ones(w.shape[0], dtype=torch.bool)
        rest[chosen] = False
        assert torch.equal(now[rest], w[rest])


def test_asrfp_rate_rises_asymptotically():
    asrfp = AsymptoticSofterFilterPruning(0.5, k=4.0, input_shape=SHAPE)
    model, trainer = _setup(asrfp, 10)
    for epoch in (0, 4, 9):
        e = epoch + 1
        rate = 0.5 * (1 - math.exp(-4.0 * e / 10))
        logs: dict[str, float] = {}
        asrfp.on_train_epoch_end(trainer, epoch, logs)
        assert logs["asrfp/rate"] == pytest.approx(rate)
        assert logs["asrfp/decay"] == pytest.approx(1 - e / 10)
        counts = [math.floor(rate * c) for c in (16, 32, 64)]
        assert [int(asrfp.masks[p].sum()) for p in LAYERS] == counts
        assert logs["asrfp/pruned_fraction"] == pytest.approx(sum(counts) / 112)


def test_ghfp_hard_share_rises_and_ends_fully_hard():
    ghfp = GraduallyHardFilterPruning(0.5, input_shape=SHAPE)
    model, trainer = _setup(ghfp, 4)
    previous = {p: torch.zeros(c, dtype=torch.bool) for p, c in zip(LAYERS, (16, 32, 64))}
    for epoch in range(4):
        h = (epoch + 1) / 4
        logs: dict[str, float] = {}
        ghfp.on_train_epoch_end(trainer, epoch, logs)
        assert logs["ghfp/hard_share"] == pytest.approx(h)
        hard = [math.floor(h * (c // 2)) for c in (16, 32, 64)]
        assert [int(ghfp.hard[p].sum()) for p in LAYERS] == hard
        assert logs["ghfp/hard_fraction"] == pytest.approx(sum(hard) / 112)
        for p in LAYERS:
            assert bool((ghfp.hard[p] <= ghfp.masks[p]).all())  # hard filters are among the selected
            assert bool((previous[p] <= ghfp.hard[p]).all())  # and stay hard
            previous[p] = ghfp.hard[p].clone()
    assert all(torch.equal(ghfp.hard[p], ghfp.masks[p]) for p in LAYERS)
    cubic = GraduallyHardFilterPruning(0.5, schedule="cubic")
    assert cubic.hard_share_at(1, 4) == pytest.approx(1 - 0.75**3)
    assert cubic.hard_share_at(4, 4) == 1.0


def test_ghfp_hard_filters_stay_exactly_zero_after_optimizer_steps():
    ghfp = GraduallyHardFilterPruning(0.5, input_shape=SHAPE)
    model, trainer = _setup(ghfp, 4)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(8, *SHAPE, generator=g), torch.randint(0, 5, (8,), generator=g)

    def step(callbacks: bool) -> None:
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        if callbacks:
            ghfp.on_after_backward(trainer)
        opt.step()
        if callbacks:
            ghfp.on_step_end(trainer, 1)

    for _ in range(2):
        step(callbacks=False)  # builds momentum for every filter
    ghfp.on_train_epoch_end(trainer, 1, {})
    conv = model.get_submodule("layer2.0")
    rows = ghfp.hard["layer2.0"]
    assert int(rows.sum()) == 8
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    ghfp.on_after_backward(trainer)
    assert torch.equal(conv.weight.grad[rows], torch.zeros_like(conv.weight.grad[rows]))
    opt.step()
    assert conv.weight[rows].abs().sum() > 0  # momentum alone would revive them ...
    ghfp.on_step_end(trainer, 1)
    for _ in range(3):
        step(callbacks=True)
        for p in LAYERS:
            w = model.get_submodule(p).weight
            assert torch.equal(w[ghfp.hard[p]], torch.zeros_like(w[ghfp.hard[p]]))  # ... the callback keeps them 0


def test_scale_bn_makes_masked_model_equal_the_physically_pruned_one():
    torch.manual_seed(0)
    model = build_model("resnet20", num_classes=10)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.bias.data.uniform_(-0.2, 0.2)
    trainer = SimpleNamespace(model=model, max_epochs=3, device=torch.device("cpu"))
    sfp = SoftFilterPruning(0.4, input_shape=SHAPE, scale_bn=True)
    sfp.on_fit_start(trainer)
    assert sfp.layers == [f"layer{s}.{b}.conv1" for s in (1, 2, 3) for b in range(3)]
    sfp.on_train_epoch_end(trainer, 2, {})  # the last epoch: the BatchNorm channels are zeroed with the filters
    model.eval()
    x = torch.randn(2, *SHAPE)
    with torch.no_grad():
        masked = model(x)
        prune_channels(model, torch.zeros(1, *SHAPE), sfp.pruning_plan())
        assert model.layer1[0].conv1.out_channels == 16 - 6
        torch.testing.assert_close(model(x), masked, atol=1e-5, rtol=0)


def test_state_dict_round_trip_with_weights_only():
    ghfp = GraduallyHardFilterPruning(0.5, input_shape=SHAPE)
    model, trainer = _setup(ghfp, 4)
    ghfp.on_train_epoch_end(trainer, 1, {})
    buffer = io.BytesIO()
    torch.save(ghfp.state_dict(), buffer)
    buffer.seek(0)
    other = GraduallyHardFilterPruning(0.5, input_shape=SHAPE)
    other.load_state_dict(torch.load(buffer, weights_only=True))
    other.on_fit_start(trainer)
    assert other.layers == LAYERS
    assert all(torch.equal(other.hard[p], ghfp.hard[p]) and torch.equal(other.masks[p], ghfp.masks[p]) for p in LAYERS)


def test_bad_arguments():
    with pytest.raises(WorkbenchError, match="rate"):
        SoftFilterPruning(1.0)
    with pytest.raises(WorkbenchError, match="unknown decay"):
        SofterFilterPruning(0.3, decay="cosine")
    with pytest.raises(WorkbenchError, match="unknown hard-share"):
        GraduallyHardFilterPruning(0.3, schedule="step")
    with pytest.raises(WorkbenchError, match="unknown pruning criterion"):
        SoftFilterPruning(0.3, criterion="l3")
    sfp = SoftFilterPruning(0.3, layers=["layer1.1"], input_shape=SHAPE)
    with pytest.raises(WorkbenchError, match="BatchNorm2d"):
        _setup(sfp, 3)
