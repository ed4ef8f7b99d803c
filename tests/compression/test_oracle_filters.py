"""Oracle tests of the filter-pruning methods (compression/pruning/filters.py) through each method's own code path.

A small CIFAR ResNet (one block per stage, widths 8/16/32, one input channel, 8x8 images) whose prunable convs
(the first conv of every block, 8/16/32 filters) get hand-set filters ``W[c] = s_c · d_c``: unit-L2 random
directions ``d_c`` scaled by distinct norms ``s_c`` (so L2 and L1 rank the filters differently), the layers on
different scales (so a per-layer and a global normalisation rank channels differently). Every expected
selection is computed here from the paper's criterion on the weights the method sees:

- SFP (arXiv 1808.06866): after every epoch the ``⌊P·C⌋`` filters of lowest L2 norm of the current weights are
  zeroed; they keep training (their gradients are not blocked) and may leave the selection.
- SRFP / ASRFP (arXiv 2010.09498): the selected filters are multiplied by ``α_e`` (``α₀ (1 − e/T)``, or
  ``α₀^e``), 0 at the last epoch; ASRFP's rate is ``P_e = P (1 − exp(−k e / T))`` with ``P`` set so that
  ``P_T`` is the budget's rate.
- GHFP (arXiv 2011.03170, *gradually hard*): the lowest ``⌊h_e · n⌋`` of the ``n`` selected filters are hard
  (zeroed and frozen), ``h_e = e/T`` (linear) or ``1 − (1 − e/T)³`` (cubic); the rest are soft and regrow.
- CPMC (arXiv 2011.03240): ``I = w̃ · m̃ · p̃`` with the weight criterion over the filter and the next conv's
  input slice, MACs and parameters of the channel, each normalised over all channels of all layers; the
  globally lowest share goes.
- PFGDF (arXiv 2006.12963): per layer the filters whose L1 norm lies within ``kσ`` of the layer mean
  (population σ) go.

At the end the physically pruned model computes what the masked one does.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from compression.pipeline import Splits
from compression.pruning import FILTER_METHODS
from compression.pruning import filters as fp
from compression.pruning.config import PruneConfig
from workbench.callbacks import Callback
from workbench.models.resnet_cifar import CifarResNet
from workbench.trainer import Trainer, TrainerConfig, trainer_config

SHAPE = (1, 8, 8)
LAYERS = ["layer1.0.conv1", "layer2.0.conv1", "layer3.0.conv1"]
WIDTHS = {"layer1.0.conv1": 8, "layer2.0.conv1": 16, "layer3.0.conv1": 32}
SCALES = {"layer1.0.conv1": 2.0, "layer2.0.conv1": 1.0, "layer3.0.conv1": 0.3}
BNS = {p: p.replace("conv1", "bn1") for p in LAYERS}
CONSUMERS = {p: p.replace("conv1", "conv2") for p in LAYERS}


def _net() -> nn.Module:
    torch.manual_seed(0)
    model = CifarResNet((1, 1, 1), (8, 16, 32), num_classes=10, in_channels=1)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in LAYERS:
            w = model.get_submodule(p).weight
            d = torch.randn(w.shape, generator=g)
            d /= d.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
            norms = SCALES[p] * (0.2 + torch.randperm(w.shape[0], generator=g).double() / w.shape[0])
            w.copy_(norms.view(-1, 1, 1, 1).float() * d)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.uniform_(-0.2, 0.2, generator=g)
    return model


def _data(n: int = 64) -> torch.utils.data.TensorDataset:
    g = torch.Generator().manual_seed(3)
    return torch.utils.data.TensorDataset(torch.randn(n, *SHAPE, generator=g), torch.randint(0, 10, (n,), generator=g))


def _l2(w: torch.Tensor) -> torch.Tensor:
    return w.double().flatten(1).pow(2).sum(1).sqrt()


def _l1(w: torch.Tensor) -> torch.Tensor:
    return w.double().flatten(1).abs().sum(1)


def _lowest(scores: torch.Tensor, n: int) -> set[int]:
    return set(sorted(range(scores.numel()), key=lambda i: (float(scores[i]), i))[:n])


class Snapshot(Callback):
    """Records, at every epoch end, the prunable filters and their BatchNorm channels (placed before the
    schedule: the weights the schedule ranks; after it: what the schedule left)."""

    def __init__(self) -> None:
        self.epochs: list[dict[str, torch.Tensor]] = []

    def on_train_epoch_end(self, trainer, epoch, logs) -> None:
        root = trainer.model
        snap = {}
        for p in LAYERS:
            snap[p] = root.get_submodule(p).weight.detach().clone()
            bn = root.get_submodule(BNS[p])
            snap[BNS[p]] = torch.stack([bn.weight.detach().clone(), bn.bias.detach().clone()])
        self.epochs.append(snap)


class Logs(Callback):
    """Records the logged values and the schedule's selected and hard filters of every epoch."""

    def __init__(self, schedule) -> None:
        self.schedule = schedule
        self.logs: list[dict[str, float]] = []
        self.selected: list[dict[str, set[int]]] = []
        self.hard: list[dict[str, set[int]]] = []

    def on_train_epoch_end(self, trainer, epoch, logs) -> None:
        self.logs.append(dict(logs))
        self.selected.append({p: _rows(m) for p, m in self.schedule.masks.items()})
        self.hard.append({p: _rows(m) for p, m in self.schedule.hard.items()})


def _rows(mask: torch.Tensor) -> set[int]:
    return set(torch.nonzero(mask).flatten().tolist())


def _train(method: str, rate: float, epochs: int, lr: float = 0.05, **options):
    """Train the net under ``method``'s own schedule (FILTER_METHODS[method].schedule with ``options``)."""
    model = _net()
    entry = FILTER_METHODS[method]
    schedule = entry.schedule(rate, LAYERS, SHAPE, entry.options(**options))
    pre, post, logs = Snapshot(), Snapshot(), Logs(schedule)
    cfg = trainer_config(TrainerConfig(batch_size=16, lr=lr, progress=False, schedule="none"), epochs=epochs)
    trainer = Trainer(model, cfg, _data(), None, device=torch.device("cpu"), callbacks=[pre, schedule, post, logs])
    trainer.fit()
    return model, schedule, pre.epochs, post.epochs, logs


# --- SFP ---------------------------------------------------------------------------------------------------


def test_sfp_zeroes_the_lowest_l2_filters_of_the_current_weights_and_they_regrow():
    rate, epochs = 0.4, 4
    model, schedule, pre, post, rec = _train("sfp", rate, epochs, scale_bn=False)
    logs = rec.logs  # the paper: filters only
    counts = {p: math.floor(rate * c) for p, c in WIDTHS.items()}  # 3, 6, 12
    history: dict[str, list[set[int]]] = {p: [] for p in LAYERS}
    for e in range(epochs):
        for p in LAYERS:
            want = _lowest(_l2(pre[e][p]), counts[p])
            history[p].append(want)
            assert rec.selected[e][p] == want
            rows = sorted(want)
            assert torch.equal(post[e][p][rows], torch.zeros_like(post[e][p][rows]))
            rest = [c for c in range(WIDTHS[p]) if c not in want]
            assert torch.equal(post[e][p][rest], pre[e][p][rest])
            assert torch.equal(post[e][BNS[p]], pre[e][BNS[p]])  # scale_bn=False: only the filters
            if e + 1 < epochs:  # soft: the zeroed filters trained on in the next epoch
                assert bool((_l2(pre[e + 1][p])[rows] > 1e-3).all())
        assert logs[e]["sfp/rate"] == rate and logs[e]["sfp/decay"] == 0.0 and logs[e]["sfp/hard_fraction"] == 0.0
    # the selection follows the current weights: it changed at least once (a frozen first mask would not)
    assert any(len({frozenset(s) for s in history[p]}) > 1 for p in LAYERS)
    assert set(schedule.pruning_plan()["layer3.0.conv1"]) == history["layer3.0.conv1"][-1]


def test_sfp_with_scale_bn_keeps_the_batchnorm_until_the_last_epoch_then_zeroes_it():
    _, schedule, pre, post, _ = _train("sfp", 0.4, 2)  # scale_bn=True, the workbench default
    for p in LAYERS:
        # epoch 0 (soft): only the filters are zeroed; a zeroed γ would block their gradient
        assert torch.equal(post[0][BNS[p]], pre[0][BNS[p]])
        # last epoch: the selected channels' BatchNorm goes too, so the masked model equals the pruned one
        rows = sorted(_lowest(_l2(pre[1][p]), math.floor(0.4 * WIDTHS[p])))
        assert torch.equal(post[1][BNS[p]][:, rows], torch.zeros(2, len(rows)))
        rest = [c for c in range(WIDTHS[p]) if c not in rows]
        assert torch.equal(post[1][BNS[p]][:, rest], pre[1][BNS[p]][:, rest])


def test_sfp_default_scale_bn_lets_the_zeroed_filters_regrow():
    _, _, pre, post, rec = _train("sfp", 0.4, 3)
    for p in LAYERS:
        rows = sorted(rec.selected[0][p])
        assert bool((_l2(pre[1][p])[rows] > 0.1 * _l2(pre[0][p])[rows]).all())


# --- SRFP / ASRFP ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("decay", "alpha0", "alphas"),
    [("linear", 0.9, [0.9 * (1 - e / 5) for e in range(1, 6)]), ("power", 0.7, [0.7**e for e in range(1, 6)])],
)
def test_srfp_scales_the_lowest_filters_by_alpha_of_each_epoch(decay, alpha0, alphas):
    rate, epochs = 0.3, 5
    _, _, pre, post, rec = _train("srfp", rate, epochs, alpha0=alpha0, decay=decay)
    logs = rec.logs
    if decay == "linear":
        assert alphas[-1] == 0.0 and alphas[0] == pytest.approx(0.72)
    for e in range(epochs):
        assert logs[e]["srfp/decay"] == pytest.approx(alphas[e], abs=1e-12)
        for p in LAYERS:
            want = sorted(_lowest(_l2(pre[e][p]), math.floor(rate * WIDTHS[p])))
            rest = [c for c in range(WIDTHS[p]) if c not in want]
            torch.testing.assert_close(post[e][p][want], alphas[e] * pre[e][p][want], rtol=1e-6, atol=0)
            assert torch.equal(post[e][p][rest], pre[e][p][rest])
            # scale_bn (default): the BatchNorm channel gets the same factor
            torch.testing.assert_close(post[e][BNS[p]][:, want], alphas[e] * pre[e][BNS[p]][:, want], rtol=1e-6, atol=0)


def test_asrfp_rate_rises_as_p_one_minus_exp_and_its_last_rate_meets_the_budget():
    target, k, epochs = 0.55, 3.0, 5
    net = _net()
    rate, plan, after, before = fp.fit_budget(net, "asrfp", LAYERS, SHAPE, target)
    assert after <= target * before
    P = rate / (1 - math.exp(-k))
    rates = [P * (1 - math.exp(-k * e / epochs)) for e in range(1, epochs + 1)]
    assert rates[-1] == pytest.approx(rate) and rates[0] < 0.5 * rate
    _, schedule, pre, post, rec = _train("asrfp", rate, epochs, asrfp_k=k, alpha0=1.0, decay="linear")
    logs = rec.logs
    for e in range(epochs):
        alpha = 1 - (e + 1) / epochs
        assert logs[e]["asrfp/rate"] == pytest.approx(rates[e], rel=1e-6)
        assert logs[e]["asrfp/decay"] == pytest.approx(alpha)
        for p in LAYERS:
            n = math.floor(rates[e] * WIDTHS[p] + 1e-6)
            want = sorted(_lowest(_l2(pre[e][p]), n))
            assert rec.selected[e][p] == set(want)
            torch.testing.assert_close(post[e][p][want], alpha * pre[e][p][want], rtol=1e-6, atol=0)
            rest = [c for c in range(WIDTHS[p]) if c not in want]
            assert torch.equal(post[e][p][rest], pre[e][p][rest])
    # the last epoch's selection is the budget's: the same count per layer as the plan fit_budget measured
    assert {p: len(v) for p, v in schedule.pruning_plan().items()} == {p: len(v) for p, v in plan.items()}
    assert fp.macs_of_plan(net, schedule.pruning_plan(), SHAPE) == after


# --- GHFP --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("shape", "h"), [("linear", lambda x: x), ("cubic", lambda x: 1 - (1 - x) ** 3)])
def test_ghfp_hardens_the_lowest_selected_filters_on_its_schedule(shape, h):
    rate, epochs = 0.5, 4
    _, schedule, pre, post, rec = _train("ghfp", rate, epochs, ghfp_schedule=shape, scale_bn=False)
    logs = rec.logs
    hard_before: dict[str, set[int]] = {p: set() for p in LAYERS}
    for e in range(epochs):
        share = h((e + 1) / epochs)
        assert logs[e]["ghfp/hard_share"] == pytest.approx(share)
        for p in LAYERS:
            c = WIDTHS[p]
            n = math.floor(rate * c)
            scores = _l2(pre[e][p])
            scores[sorted(hard_before[p])] = -math.inf  # the hard filters stay selected (and hard)
            order = sorted(range(c), key=lambda i: (float(scores[i]), i))
            selected, hard = set(order[:n]), set(order[: max(len(hard_before[p]), math.floor(share * n + 1e-9))])
            assert hard_before[p] <= hard
            assert rec.selected[e][p] == selected and rec.hard[e][p] == hard
            rows = sorted(selected)
            assert torch.equal(post[e][p][rows], torch.zeros_like(post[e][p][rows]))
            if e + 1 < epochs:
                nxt = _l2(pre[e + 1][p])
                assert bool((nxt[sorted(hard)] == 0).all())  # hard: frozen at 0 through the next epoch's steps
                soft = sorted(selected - hard)
                assert bool((nxt[soft] > 1e-3).all())  # soft: trained on
            hard_before[p] = hard
    assert logs[-1]["ghfp/hard_fraction"] == logs[-1]["ghfp/pruned_fraction"] == pytest.approx(28 / 56)
    assert logs[0]["ghfp/hard_fraction"] < logs[1]["ghfp/hard_fraction"] < logs[-1]["ghfp/hard_fraction"]


# --- the masked model at the end is the physically pruned one (MaskScheduleMethod.compress) ------------------


@pytest.mark.parametrize("method", ["sfp", "srfp", "asrfp", "ghfp"])
def test_compress_removes_exactly_the_masked_filters_and_computes_what_the_masked_model_does(method):
    cfg = PruneConfig(method=method, epochs=3, lr=0.05, batch_size=16, progress=False, eval_batch_size=64)
    model = _net()
    rate = 0.4
    job = fp.FilterJob(
        cfg=cfg, run=None, device=torch.device("cpu"), source=None, model=model, shape=SHAPE, layers=LAYERS,
        knob=rate, plan={}, data=Splits(_data(), _data(), _data(32)),
    )  # fmt: skip
    out = FILTER_METHODS[method].compress(job)
    assert out.extra["max_abs_diff_masked_vs_pruned"] < 1e-5
    x = torch.randn(8, *SHAPE)
    with torch.no_grad():
        torch.testing.assert_close(out.pruned.eval()(x), model.eval()(x), atol=1e-5, rtol=0)
    for p in LAYERS:
        removed = out.plan[p]
        w = model.get_submodule(p).weight
        # the removed filters are the ones the masked model has at 0, and exactly the last epoch's count
        assert len(removed) == math.floor(rate * WIDTHS[p] + 1e-6)
        assert torch.equal(w[removed], torch.zeros_like(w[removed]))
        kept = [c for c in range(WIDTHS[p]) if c not in removed]
        assert bool((_l2(w[kept]) > 0).all())
        assert torch.equal(out.pruned.get_submodule(p).weight, w[kept])
        assert out.pruned.get_submodule(CONSUMERS[p]).in_channels == len(kept)


# --- CPMC --------------------------------------------------------------------------------------------------


def _cpmc_expected(model: nn.Module) -> dict[str, torch.Tensor]:
    """``I = w̃ · m̃ · p̃`` by hand: 8x8 input; stage 1 at 8x8, stage 2 at 4x4, stage 3 at 2x2."""
    # (in channels, consumer out channels, output pixels) of each prunable conv; 3x3 kernels; one BN channel
    geometry = {"layer1.0.conv1": (8, 8, 64), "layer2.0.conv1": (8, 16, 16), "layer3.0.conv1": (16, 32, 4)}
    w, macs, params = {}, {}, {}
    for p, (cin, cout2, pixels) in geometry.items():
        filt = model.get_submodule(p).weight.detach().double()
        consumer = model.get_submodule(CONSUMERS[p]).weight.detach().double()
        w[p] = (filt.flatten(1).pow(2).sum(1) + consumer.transpose(0, 1).flatten(1).pow(2).sum(1)).sqrt()
        macs[p] = cin * 9 * pixels + cout2 * 9 * pixels
        params[p] = cin * 9 + 2 + cout2 * 9
    assert macs == {"layer1.0.conv1": 9216, "layer2.0.conv1": 3456, "layer3.0.conv1": 1728}
    w_max = max(float(v.max()) for v in w.values())
    m_min, p_min = min(macs.values()), min(params.values())
    return {p: w[p] / w_max * (m_min / macs[p]) * (p_min / params[p]) for p in LAYERS}


def _global_lowest(scores: dict[str, torch.Tensor], share: float) -> dict[str, list[int]]:
    """The ``⌊share · N⌋`` lowest channels over all layers, every layer keeping at least one channel."""
    entries = sorted((float(s[i]), p, i) for p, s in scores.items() for i in range(s.numel()))
    budget = int(share * len(entries))
    plan: dict[str, list[int]] = {p: [] for p in scores}
    for _, p, i in entries:
        if budget and len(plan[p]) < scores[p].numel() - 1:
            plan[p].append(i)
            budget -= 1
    return {p: sorted(v) for p, v in plan.items()}


@pytest.mark.parametrize("share", [0.3, 0.55])
def test_cpmc_prunes_the_globally_lowest_combined_importance(share):
    model = _net()
    expected = _cpmc_expected(model)
    entry = FILTER_METHODS["cpmc"]
    plan_at, knobs = entry.knobs(model, LAYERS, SHAPE, entry.options())
    want = _global_lowest(expected, share)
    # the global ranking is not the per-layer one: layers lose different shares of their channels
    assert len({round(len(v) / WIDTHS[p], 3) for p, v in want.items()}) > 1
    assert plan_at(share) == want
    # the budget's plan is such a global cut too
    _, plan, _, _ = fp.fit_budget(model, "cpmc", LAYERS, SHAPE, 0.6)
    assert plan == _global_lowest(expected, sum(map(len, plan.values())) / 56)


def test_cpmc_weighted_sum_uses_the_same_normalised_criteria():
    model = _net()
    entry = FILTER_METHODS["cpmc"]
    plan_at, _ = entry.knobs(model, LAYERS, SHAPE, entry.options(cpmc_combine="sum", cpmc_weights=[3.0, 1.0, 0.5]))
    product = _cpmc_expected(model)
    # recover the three normalised terms: w̃ from the weights, m̃ and p̃ are per-layer constants
    m = {"layer1.0.conv1": 1728 / 9216, "layer2.0.conv1": 1728 / 3456, "layer3.0.conv1": 1.0}
    params = {"layer1.0.conv1": 146, "layer2.0.conv1": 218, "layer3.0.conv1": 434}
    scores = {}
    for p in LAYERS:
        pt = 146 / params[p]
        wt = product[p] / (m[p] * pt)
        scores[p] = (3.0 * wt + 1.0 * m[p] + 0.5 * pt) / 4.5
    assert plan_at(0.4) == _global_lowest(scores, 0.4)


# --- PFGDF -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [0.6, 1.1])
def test_pfgdf_prunes_the_central_band_of_the_l1_distribution(k):
    model = _net()
    entry = FILTER_METHODS["pfgdf"]
    plan_at, _ = entry.knobs(model, LAYERS, SHAPE, entry.options())
    want = {}
    for p in LAYERS:
        s = _l1(model.get_submodule(p).weight.detach())
        mu, sigma = s.mean(), ((s - s.mean()) ** 2).mean().sqrt()  # the Gaussian fit: population σ
        want[p] = [c for c in range(s.numel()) if abs(float(s[c] - mu)) < k * float(sigma)]
    assert 0 < sum(map(len, want.values())) < 56
    assert plan_at(k) == want
    # L1, not L2: the band of the L2 norms is another set of filters
    l2_band = {}
    for p in LAYERS:
        s = _l2(model.get_submodule(p).weight.detach())
        l2_band[p] = [c for c in range(s.numel()) if abs(float(s[c] - s.mean())) < k * float(s.std(unbiased=False))]
    assert l2_band != want


def test_pfgdf_budget_plan_is_the_band_at_its_chosen_k():
    model = _net()
    k, plan, after, before = fp.fit_budget(model, "pfgdf", LAYERS, SHAPE, 0.6)
    assert after <= 0.6 * before
    entry = FILTER_METHODS["pfgdf"]
    plan_at, _ = entry.knobs(copy.deepcopy(model), LAYERS, SHAPE, entry.options())
    assert plan == plan_at(k)
    for p in LAYERS:
        s = _l1(model.get_submodule(p).weight.detach())
        dist = (s - s.mean()).abs() / ((s - s.mean()) ** 2).mean().sqrt()
        # pruned filters are exactly those nearer the mean than any kept filter
        if plan[p]:
            assert float(dist[plan[p]].max()) < float(dist[[c for c in range(s.numel()) if c not in plan[p]]].min())
