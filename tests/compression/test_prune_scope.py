"""scope=all: the seed filter methods prune Torch-Pruning's coupled groups (residual streams) as a whole."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from compression.pruning import filters as fp
from workbench.errors import WorkbenchError
from workbench.flops import count_macs
from workbench.models.resnet_cifar import CifarResNet
from workbench.prune.channels import prunable_groups, round_plan, rounded_count
from workbench.prune.criteria import group_scores, l2_norm
from workbench.trainer import Trainer, TrainerConfig, trainer_config

SHAPE = (1, 8, 8)
TARGET = 0.5
SEED_METHODS = ("sfp", "srfp", "asrfp", "ghfp", "cpmc", "pfgdf")
STREAMS = {
    "conv1": ["conv1", "layer1.0.conv2", "layer1.1.conv2"],
    "layer2.0.conv2": ["layer2.0.conv2", "layer2.0.shortcut.0", "layer2.1.conv2"],
    "layer3.0.conv2": ["layer3.0.conv2", "layer3.0.shortcut.0", "layer3.1.conv2"],
}


@pytest.fixture(scope="module")
def groups(net):
    return fp.prunable_groups(net, SHAPE, "all")


def _outputs(model, x):
    with torch.no_grad():
        return model.eval()(x)


def _stream_widths_consistent(pruned: CifarResNet) -> None:
    """Every layer on a stage's residual stream has the same width, and its consumers read that width."""
    stem = pruned.conv1.out_channels
    assert pruned.bn1.num_features == stem
    width = stem
    for stage in (pruned.layer1, pruned.layer2, pruned.layer3):
        for block in stage:
            assert block.conv1.in_channels == width
            assert block.bn1.num_features == block.conv1.out_channels == block.conv2.in_channels
            if not isinstance(block.shortcut, nn.Identity):
                assert block.shortcut[0].in_channels == width
                width = block.shortcut[0].out_channels
                assert block.shortcut[1].num_features == width
            assert block.conv2.out_channels == block.bn2.num_features == width
    assert pruned.fc.in_features == width


def test_all_scope_groups_are_the_internal_convs_and_each_stages_residual_stream(net, groups):
    internal = fp.prunable_groups(net, SHAPE, "internal")
    assert set(internal) == {f"layer{s}.{b}.conv1" for s in (1, 2, 3) for b in range(2)}
    assert {h: sorted(m) for h, m in groups.items() if len(m) > 1} == {h: sorted(m) for h, m in STREAMS.items()}
    assert set(groups) == set(internal) | set(STREAMS)
    with pytest.raises(WorkbenchError, match="scope"):
        prunable_groups(net, torch.zeros(1, *SHAPE), "everything")


def test_group_importance_is_the_mean_of_the_members_criterion(net):
    members = [net.conv1, net.layer1[0].conv2, net.layer1[1].conv2]
    by_hand = sum(torch.linalg.vector_norm(m.weight.detach().flatten(1), dim=1).double() for m in members) / 3
    assert torch.allclose(group_scores(members, l2_norm), by_hand)
    assert torch.equal(group_scores([net.conv1], l2_norm), l2_norm(net.conv1))


@pytest.mark.parametrize("method", [m for m in SEED_METHODS if m in fp.ONE_SHOT_METHODS])
def test_one_shot_methods_prune_the_streams_reach_the_target_and_pruning_equals_masking(net, groups, method):
    # cpmc's default per-layer group costs keep this net's streams whole (test_cpmc_group_norm); its whole-group
    # costs prune them, which is what this test needs
    options = {"cpmc_group_norm": "total"} if method == "cpmc" else None
    knob, plan, after, before = fp.fit_budget(net, method, list(groups), SHAPE, TARGET, groups=groups,
                                              method_options=options)  # fmt: skip
    pruned = fp.pruned_copy(net, plan, SHAPE)
    assert count_macs(pruned, SHAPE) == after <= TARGET * before
    assert after > 0.45 * before  # the search stops at the first knob that meets the target
    assert any(plan[h] for h in STREAMS)  # residual-stream channels are pruned too
    _stream_widths_consistent(pruned)
    masked = fp.zero_channels(copy.deepcopy(net), plan, SHAPE)
    x = torch.randn(4, *SHAPE)
    assert torch.allclose(_outputs(masked, x), _outputs(pruned, x), atol=1e-5)


@pytest.mark.parametrize("method", [m for m in SEED_METHODS if m in fp.MASK_METHODS])
def test_mask_schedules_on_streams_reach_the_target_and_pruning_equals_the_trained_masked_model(net, groups, method):
    model = copy.deepcopy(net)
    rate, plan0, after, before = fp.fit_budget(model, method, list(groups), SHAPE, TARGET, groups=groups)
    schedule = fp.make_schedule(method, rate, list(groups), SHAPE, groups=groups)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, *SHAPE, generator=g), torch.randint(0, 10, (32,), generator=g)
    data = torch.utils.data.TensorDataset(x, y)
    cfg = trainer_config(TrainerConfig(batch_size=16, lr=0.05, progress=False), epochs=2)
    trainer = Trainer(model, cfg, data, None, device=torch.device("cpu"), callbacks=[schedule], seed=0)
    trainer.fit()
    plan = schedule.pruning_plan()
    assert {p: len(v) for p, v in plan.items()} == {p: len(v) for p, v in plan0.items()}
    # every member of a stream has its selected filters zeroed, not only the head
    for head, members in STREAMS.items():
        for path in members:
            w = model.get_submodule(path).weight.detach()[plan[head]]
            assert plan[head] and float(w.abs().max()) == 0.0
    pruned = fp.pruned_copy(model, plan, SHAPE)
    assert count_macs(pruned, SHAPE) == after <= TARGET * before
    _stream_widths_consistent(pruned)
    x = torch.randn(4, *SHAPE)
    assert torch.allclose(_outputs(model, x), _outputs(pruned, x), atol=1e-5)


@pytest.mark.parametrize("method", ["sfp", "cpmc", "pfgdf"])
def test_round_to_keeps_a_multiple_of_channels_in_every_pruned_group(net, groups, method):
    _, plan, after, before = fp.fit_budget(net, method, list(groups), SHAPE, TARGET, groups=groups, round_to=4)
    assert after <= TARGET * before
    pruned = fp.pruned_copy(net, plan, SHAPE)
    for head, idxs in plan.items():
        if idxs:
            assert pruned.get_submodule(head).out_channels % 4 == 0, (head, len(idxs))
    _stream_widths_consistent(pruned)


def test_prune_fmnist_rows_list_every_seed_method_at_both_scopes_and_the_library_criteria():
    from compression.pruning.compare import prune_rows, split_row

    rows = prune_rows()
    seed = [f"{m}@{s}" for m in SEED_METHODS for s in ("internal", "all")]
    assert [r for r in rows if not r.startswith("tp-")] == seed
    assert [r for r in rows if r.startswith("tp-")] == [
        f"tp-{c}@all" for c in ("l1", "l2", "taylor", "lamp", "fpgm", "bn-scale", "random")
    ]
    assert split_row("sfp") == ("sfp", "internal") and split_row("tp-l2@all") == ("tp-l2", "all")
    with pytest.raises(WorkbenchError, match="unknown scope 'most'"):
        split_row("sfp@most")
    with pytest.raises(WorkbenchError, match="unknown filter-pruning method"):
        split_row("magic@all")


def test_rounded_counts():
    assert rounded_count(3, 16, 8) == 8  # 13 kept -> 8
    assert rounded_count(0, 16, 8) == 0 and rounded_count(5, 16, 1) == 5
    assert rounded_count(15, 16, 8) == 8  # at least round_to kept
    assert rounded_count(2, 6, 8) == 2  # a layer narrower than round_to is left alone
    scores = {"a": torch.tensor([0.5, 0.1, 0.9, 0.3, 0.7, 0.2, 0.8, 0.4])}
    assert round_plan({"a": [1]}, scores, 4) == {"a": [1, 3, 5, 7]}


class _Shuffle(nn.Module):
    def forward(self, x):
        b, c, h, w = x.shape
        return x.view(b, 2, c // 2, h, w).transpose(1, 2).reshape(b, c, h, w)


class _ShuffledNet(nn.Module):
    """A residual net whose stem channels pass a channel shuffle, which the dependency graph cannot follow."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.shuffle = _Shuffle()
        self.conv1 = nn.Conv2d(8, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        x = self.shuffle(torch.relu(self.stem(x)))
        return self.fc((self.conv2(torch.relu(self.conv1(x))) + x).mean((2, 3)))


def test_a_group_the_graph_cannot_prune_is_refused_naming_the_layer():
    model = _ShuffledNet()
    assert fp.prunable_groups(model, SHAPE, "internal") == {"conv1": ["conv1"]}
    with pytest.raises(WorkbenchError, match="cannot prune the output channels of 'stem'") as err:
        fp.prunable_groups(model, SHAPE, "all")
    assert "scope=internal" in str(err.value) and "\n" not in str(err.value)


def test_a_target_below_what_the_groups_allow_is_refused(net, groups):
    for method in ("sfp", "cpmc", "pfgdf"):
        with pytest.raises(WorkbenchError, match=r"cannot be reached by \w+ \(scope=all\)"):
            fp.fit_budget(net, method, list(groups), SHAPE, 0.001, groups=groups)
