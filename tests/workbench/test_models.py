"""Model zoo: shapes, module layout, parameter counts, feature hooks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from workbench.errors import WorkbenchError
from workbench.models import MODELS, build_model, model_options
from workbench.models.features import FeatureHooks, features, frozen_bn_stats, get_module, recalibrated_bn
from workbench.models.resnet_cifar import BasicBlock
from workbench.models.wrn import WideBlock

NAMES = sorted(MODELS)
EXPECTED_NAMES = {
    "resnet20",
    "resnet32",
    "resnet44",
    "resnet56",
    "resnet110",
    "resnet8x4",
    "resnet32x4",
    "wrn_16_2",
    "wrn_40_2",
    "resnet18",
    "small_cnn",
    "mlp",
}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_registry_has_exactly_the_documented_names():
    assert set(MODELS) == EXPECTED_NAMES


CASES = [
    *[(name, 1, 10, 28, 2) for name in NAMES],
    *[(name, 3, 100, 32, 2) for name in NAMES],
    *[(name, 1, 10, 8, 2) for name in NAMES],
    *[(name, 3, 7, 64, 1) for name in ("small_cnn", "mlp", "resnet20", "resnet8x4", "wrn_16_2")],
]


@pytest.mark.parametrize(("name", "in_channels", "num_classes", "size", "batch"), CASES)
def test_logits_shape_and_layout(name, in_channels, num_classes, size, batch):
    torch.manual_seed(0)
    model = build_model(name, num_classes=num_classes, in_channels=in_channels)
    if batch == 1:
        model.eval()  # BatchNorm in train mode needs more than one value per channel
    x = torch.randn(batch, in_channels, size, size)
    paths = [*model.stage_names, model.feature_path]
    with torch.no_grad(), FeatureHooks(model, paths) as feats:
        logits = model(x)
        assert logits.shape == (batch, num_classes)
        assert feats[model.feature_path].shape == (batch, model.feature_dim)
        for stage in model.stage_names:
            assert feats[stage].shape[0] == batch
        head = get_module(model, model.head_path)
        assert isinstance(head, nn.Linear)
        assert (head.in_features, head.out_features) == (model.feature_dim, num_classes)
        # the feature module's output is exactly what the head consumes
        torch.testing.assert_close(head(feats[model.feature_path]), logits)


@pytest.mark.parametrize(
    ("name", "num_classes", "published"),
    [
        # He et al. 2016 (arXiv 1512.03385) Table 6, CIFAR-10
        ("resnet20", 10, 0.27e6),
        ("resnet56", 10, 0.85e6),
        ("resnet110", 10, 1.7e6),
        # KD papers on CIFAR-100 (RepDistiller models, arXiv 1910.10699)
        ("resnet8x4", 100, 1.23e6),
        ("resnet32x4", 100, 7.43e6),
        ("wrn_40_2", 100, 2.25e6),
        # Zagoruyko & Komodakis (arXiv 1605.07146), CIFAR-10
        ("wrn_40_2", 10, 2.2e6),
        # CIFAR ResNet-18, CIFAR-100
        ("resnet18", 100, 11.22e6),
    ],
)
def test_param_counts_match_published(name, num_classes, published):
    count = n_params(build_model(name, num_classes))
    assert abs(count - published) / published < 0.02, count


def test_resnet20_exact_param_count():
    # Option-A ResNet-20 for 10 classes has 269,722 parameters; option B adds two 1x1 conv + BN
    # shortcuts: 16*32 + 2*32 and 32*64 + 2*64.
    assert n_params(build_model("resnet20", 10)) == 269_722 + (16 * 32 + 64) + (32 * 64 + 128)


def test_resnet_blocks_by_path_and_shortcuts():
    model = build_model("resnet56", 10)
    modules = dict(model.named_modules())
    assert model.stage_names == ("layer1", "layer2", "layer3")
    assert [k for k in modules if k.startswith("layer2.") and k.count(".") == 1] == [f"layer2.{i}" for i in range(9)]
    block = modules["layer2.3"]
    assert isinstance(block, BasicBlock) and isinstance(block.shortcut, nn.Identity)
    down = modules["layer2.0"].shortcut
    assert isinstance(down, nn.Sequential)
    assert isinstance(down[0], nn.Conv2d) and isinstance(down[1], nn.BatchNorm2d)
    assert (down[0].in_channels, down[0].out_channels, down[0].kernel_size, down[0].stride) == (16, 32, (1, 1), (2, 2))
    assert isinstance(modules["layer1.0"].shortcut, nn.Identity)
    # resnet8x4: 32-channel stem, first block widens to 64 with a stride-1 projection
    first = dict(build_model("resnet8x4", 100).named_modules())["layer1.0"].shortcut
    assert (first[0].in_channels, first[0].out_channels, first[0].stride) == (32, 64, (1, 1))


def test_resnet18_layout():
    model = build_model("resnet18", 100)
    assert model.stage_names == ("layer1", "layer2", "layer3", "layer4")
    assert model.feature_dim == 512
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    out = features(model.eval(), torch.randn(1, 3, 32, 32), model.stage_names)
    assert [tuple(out[s].shape[1:]) for s in model.stage_names] == [
        (64, 32, 32),
        (128, 16, 16),
        (256, 8, 8),
        (512, 4, 4),
    ]


def test_basic_block_with_silenced_branch_is_relu_of_input():
    block = BasicBlock(4, 4)
    nn.init.zeros_(block.bn2.weight)  # residual branch outputs bn2.bias = 0
    x = torch.randn(2, 4, 5, 5)
    torch.testing.assert_close(block(x), torch.relu(x))


def test_wide_block_is_preactivation():
    torch.manual_seed(0)
    same = WideBlock(4, 4).eval()
    nn.init.zeros_(same.conv2.weight)
    x = torch.randn(2, 4, 5, 5)
    torch.testing.assert_close(same(x), x)  # identity shortcut on the raw input, no final ReLU
    down = WideBlock(4, 8, stride=2).eval()
    nn.init.zeros_(down.conv2.weight)
    assert isinstance(down.shortcut, nn.Conv2d)
    torch.testing.assert_close(down(x), down.shortcut(torch.relu(down.bn1(x))))  # shortcut on relu(bn1(x))


def test_wrn_widths_and_dropout_option():
    model = build_model("wrn_16_2", 10, dropout=0.3)
    assert model.feature_dim == 128
    assert len(model.layer1) == 2
    assert all(m.p == 0.3 for m in model.modules() if isinstance(m, nn.Dropout))
    assert all(m.p == 0.0 for m in build_model("wrn_40_2", 10).modules() if isinstance(m, nn.Dropout))


def test_feature_dim_follows_the_head_after_channel_removal():
    model = build_model("resnet20", 10)
    assert model.feature_dim == 64
    model.fc = nn.Linear(40, 10)  # what physical channel pruning of layer3's output does to the head
    assert model.feature_dim == 40


def test_mlp_options():
    model = build_model("mlp", 10, in_channels=1, hidden=(32,), input_size=28)
    assert model.stage_names == ("layer1",) and model.feature_dim == 32
    assert model.layer1[0].in_features == 28 * 28
    assert model(torch.randn(3, 1, 28, 28)).shape == (3, 10)
    linear = build_model("mlp", 10, in_channels=1, hidden=())
    assert linear.stage_names == () and linear.feature_dim == 64


def test_conv_weights_are_kaiming_fan_out():
    torch.manual_seed(0)
    conv = build_model("resnet32x4", 100).layer3[0].conv1  # 128 -> 256, 3x3: fan_out 256*9, fan_in 128*9
    expected = (2.0 / (256 * 9)) ** 0.5
    assert abs(conv.weight.std().item() / expected - 1) < 0.02
    assert abs(conv.weight.mean().item()) < 0.05 * expected


def test_unknown_model_and_option_errors():
    with pytest.raises(WorkbenchError, match="unknown model 'resnet_20'.*did you mean 'resnet20'"):
        build_model("resnet_20", 10)
    with pytest.raises(WorkbenchError, match="model 'resnet20' has no option 'dropout'; valid options: none"):
        build_model("resnet20", 10, dropout=0.1)
    with pytest.raises(WorkbenchError, match="valid options: dropout"):
        build_model("wrn_16_2", 10, drop=0.1)
    with pytest.raises(WorkbenchError, match="model 'small_cnn': SmallCNN takes 3 widths"):
        build_model("small_cnn", 10, widths=(8, 8))
    with pytest.raises(WorkbenchError, match="num_classes >= 1"):
        build_model("mlp", 0)
    assert model_options("mlp") == ("hidden", "input_size", "dropout")


# --- feature hooks ---------------------------------------------------------------------------


def resnet20_by_hand(model, x):
    out = {}
    h = model.relu(model.bn1(model.conv1(x)))
    for stage in model.stage_names:
        h = out[stage] = getattr(model, stage)(h)
    out["flatten"] = torch.flatten(h.mean(dim=(2, 3)), 1)
    return out


def test_hooks_equal_stages_run_by_hand():
    torch.manual_seed(0)
    model = build_model("resnet20", 10).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad(), FeatureHooks(model, ["layer1", "layer2", "layer3", "flatten", "layer2.1"]) as feats:
        logits = model(x)
        expected = resnet20_by_hand(model, x)
        assert feats["layer1"].shape == (2, 16, 32, 32)
        assert feats["layer2"].shape == (2, 32, 16, 16)
        assert feats["layer3"].shape == (2, 64, 8, 8)
        assert feats["flatten"].shape == (2, 64)
        for key, value in expected.items():
            torch.testing.assert_close(feats[key], value)
        torch.testing.assert_close(feats["layer2.1"], model.layer2[1](model.layer2[0](expected["layer1"])))
        torch.testing.assert_close(model.fc(expected["flatten"]), logits)


def test_wrn_feature_is_after_final_bn_relu():
    torch.manual_seed(0)
    model = build_model("wrn_16_2", 10).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        got = features(model, x, ["layer3", "flatten"])
        pooled = torch.relu(model.bn_final(got["layer3"])).mean(dim=(2, 3))
    torch.testing.assert_close(got["flatten"], pooled)
    assert got["layer3"].min() < 0  # stage outputs of a pre-activation net are not activated


def test_hooks_reset_per_forward_keep_grad_and_are_removed():
    torch.manual_seed(0)
    model = build_model("small_cnn", 10, in_channels=1)
    hooks = FeatureHooks(model, ["layer1", "flatten"])
    with hooks as feats:
        with pytest.raises(KeyError, match="run the model inside"):
            feats["layer1"]
        model(torch.randn(2, 1, 8, 8))
        assert feats["layer1"].shape == (2, 16, 4, 4)
        model(torch.randn(3, 1, 28, 28))
        assert feats["layer1"].shape == (3, 16, 14, 14)
        assert set(feats) == {"layer1", "flatten"}
        feats["flatten"].sum().backward()
        assert model.layer1[0].weight.grad is not None
        with pytest.raises(KeyError, match="not hooked"):
            feats["layer2"]
    assert not model.layer1._forward_hooks and not model.flatten._forward_hooks
    assert not model._forward_pre_hooks
    with FeatureHooks(model, ["flatten"], detach=True) as feats:
        model(torch.randn(2, 1, 8, 8))
        assert not feats["flatten"].requires_grad


def test_features_helper_root_path_is_logits():
    model = build_model("mlp", 10, in_channels=1).eval()
    x = torch.randn(2, 1, 8, 8)
    out = features(model, x, ["", "layer1"])
    torch.testing.assert_close(out[""], model(x))
    assert out["layer1"].shape == (2, 256)
    assert not model.layer1._forward_hooks


def test_unknown_path_lists_valid_paths():
    model = build_model("resnet20", 10)
    with pytest.raises(WorkbenchError, match=r"no module 'layer_2'; did you mean 'layer2'.*layer1, layer2, layer3"):
        FeatureHooks(model, ["layer_2"])


def test_get_module_matches_named_modules():
    model = build_model("resnet32", 10)
    assert get_module(model, "layer3.4.shortcut") is dict(model.named_modules())["layer3.4.shortcut"]
    assert get_module(model, "") is model


def test_hooks_through_dataparallel_wrapper():
    model = build_model("small_cnn", 10, in_channels=1).eval()
    wrapped = nn.DataParallel(model)  # no GPU: calls the module directly, like DDP's .module
    x = torch.randn(2, 1, 8, 8)
    with FeatureHooks(wrapped, ["flatten"]) as feats:
        logits = wrapped(x)
        torch.testing.assert_close(model.fc(feats["flatten"]), logits)
    with pytest.raises(WorkbenchError, match="no module 'module.flatten'"):
        FeatureHooks(wrapped, ["module.flatten"])


class _TinyNet(nn.Module):
    """A model class of its own, so no other test's compiled graph is reused for it."""

    def __init__(self) -> None:
        super().__init__()
        self.layer1 = nn.Linear(4, 3)
        self.fc = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.layer1(x)))


def test_hooks_through_torch_compile():
    model = _TinyNet()
    compiled = torch.compile(model, backend="eager")
    x = torch.randn(5, 4)
    with FeatureHooks(compiled, ["layer1"]) as feats:
        compiled(x)
        torch.testing.assert_close(feats["layer1"], model.layer1(x))


def test_frozen_bn_stats_normalises_by_batch_but_keeps_running_stats():
    torch.manual_seed(0)
    bn = torch.nn.BatchNorm1d(3).train()
    x = torch.randn(16, 3) * 5 + 2
    before = bn.running_mean.clone(), bn.running_var.clone()
    with frozen_bn_stats(bn):
        out = bn(x)
    assert torch.equal(bn.running_mean, before[0]) and torch.equal(bn.running_var, before[1])
    assert out.mean(0).abs().max() < 1e-5  # still batch statistics in train mode
    assert bn.momentum == 0.1
    bn(x)
    assert not torch.equal(bn.running_mean, before[0])


def test_recalibrated_bn_is_the_exact_average_and_restores():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.BatchNorm1d(3)).eval()
    batches = [torch.randn(8, 2) for _ in range(3)]
    original = model[1].running_mean.clone()
    with recalibrated_bn(model, batches):
        with torch.no_grad():
            h = torch.cat([model[0](b) for b in batches])
        expected = torch.stack([model[0](b).mean(0) for b in batches]).mean(0).detach()
        assert torch.allclose(model[1].running_mean, expected, atol=1e-6)
        assert not model.training  # the caller's mode is kept
        assert h.shape == (24, 3)
    assert torch.equal(model[1].running_mean, original) and model[1].momentum == 0.1
