"""DDNN with embedded knowledge distillation (Zhao, Lyu et al., arXiv 2103.00793).

One residual network whose sub-networks of smaller depth share its weights: depth ``k`` runs only the
first ``k`` blocks of every stage (capped at the stage's length) and then the shared pooling and head.
Trailing blocks of a stage keep the shape of their input, so every depth is a valid network; the
depth is selected at run time with ``set_depth(model, k)`` (``None`` = the full network).

Every iteration trains the full network with CE and each sub-network ``k`` with

    CE(z_k, y) + w_kl·T²·KL(sg p_full ‖ p_k) + w_at·Σ_s ‖a(F_k^s) − sg a(F_full^s)‖²

where ``a(F) = normalize(Σ_c F_c²)`` is the attention map (``attention_transfer_loss``, element-mean form
as in the authors' AT code; weight 10 here: their 1000 made training diverge on digits) and ``s``
runs over the stage outputs, which have the same
resolution in every sub-network.

BatchNorm layers are shared too. Sub-network activations have other statistics than the full network's,
so by default the sub-network forwards leave the running statistics alone (``frozen_bn_stats``; letting
them mix cost the full resnet20 7.5 points on digits), and a sub-network is evaluated with statistics
re-estimated on a few training batches (``recalibrated_bn``; ``ddnn.calib_batches``).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from compression.kd.registry import KD_METHODS, Built, KDContext, KDMethod, new_student
from workbench.callbacks import Callback
from workbench.config import opt
from workbench.distill import attention_transfer_loss, kd_loss
from workbench.errors import WorkbenchError
from workbench.flops import model_cost
from workbench.models import FeatureHooks, frozen_bn_stats, get_module, recalibrated_bn
from workbench.models.saved import unwrap_model
from workbench.trainer import Objective, ObjectiveOutput, evaluate_classifier


@dataclasses.dataclass
class DDNNWeights:
    """DDNN with embedded KD (arXiv 2103.00793)."""

    depths: list[int] = opt([1, 2], "blocks per stage of the sub-networks (the full network is always trained)")
    T: float = opt(4.0, "temperature of KL(p_full ‖ p_sub)", gt=0)
    kl: float = opt(1.0, "weight of T²·KL(p_full ‖ p_sub)")
    at: float = opt(10.0, "weight of the attention-map loss (element mean; 1000, the AT code's, diverged on digits)")
    sub_bn_stats: bool = opt(
        False, "let sub-network forwards update the shared BatchNorm running statistics (off: the full net's only)"
    )
    calib_batches: int = opt(20, "training batches that re-estimate BN statistics before a sub-network is evaluated")


class TruncatedStage(nn.Sequential):
    """A stage (sequence of residual blocks) that runs only its first ``keep`` blocks (``None``: all)."""

    keep: int | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, block in enumerate(self):
            if self.keep is not None and i >= self.keep:
                break
            x = block(x)
        return x


def make_depth_selectable(model: nn.Module, model_name: str = "") -> nn.Module:
    """Turn ``model``'s stages into ``TruncatedStage``s in place (same parameters, same state_dict keys).

    Needs stages that are sequences of residual blocks (CIFAR ResNets, WRNs, ResNet-18); other models raise
    a one-line ``WorkbenchError``.
    """
    name = model_name or type(model).__name__
    names = getattr(model, "stage_names", ())
    for stage_name in names:
        stage = get_module(model, stage_name)
        if not isinstance(stage, nn.Sequential) or not all(hasattr(b, "shortcut") for b in stage):
            raise WorkbenchError(
                f"ddnn-ekd needs a residual network whose stages are sequences of blocks (resnet20/32/44/56/110, "
                f"resnet8x4, resnet32x4, wrn_16_2, wrn_40_2, resnet18); '{name}' is not one"
            )
        if not isinstance(stage, TruncatedStage):
            stage.__class__ = TruncatedStage
    if not names:
        raise WorkbenchError(f"ddnn-ekd needs a model with stages; '{name}' has none")
    return model


def stage_lengths(model: nn.Module) -> list[int]:
    """Blocks per stage of the full network."""
    return [len(get_module(model, n)) for n in model.stage_names]


def set_depth(model: nn.Module, depth: int | None) -> None:
    """Select the sub-network with ``depth`` blocks per stage (``None``: the full network)."""
    for name in unwrap_model(model).stage_names:
        get_module(model, name).keep = depth


def check_depths(model: nn.Module, depths: Sequence[int]) -> list[int]:
    """Sorted distinct sub-network depths below the full depth; one-line error for bad values."""
    full = max(stage_lengths(model))
    bad = [d for d in depths if d < 1 or d >= full]
    if bad or not depths:
        raise WorkbenchError(
            f"ddnn.depths must be blocks per stage between 1 and {full - 1} for this model "
            f"(stages of {stage_lengths(model)} blocks), got {list(depths)}"
        )
    return sorted(set(depths))


def depth_name(depth: int | None, model: nn.Module) -> str:
    return f"d{max(stage_lengths(model)) if depth is None else depth}"


class DDNNObjective(Objective):
    """The embedded-KD loss (module docstring); terms ``ce_full`` and per depth ``ce_d{k}``, ``kd_d{k}``,
    ``at_d{k}``."""

    def __init__(
        self,
        model: nn.Module,
        depths: Sequence[int],
        T: float = DDNNWeights.T,
        kl: float = DDNNWeights.kl,
        at: float = DDNNWeights.at,
        sub_bn_stats: bool = DDNNWeights.sub_bn_stats,
    ):
        super().__init__()
        self.depths = check_depths(model, depths)
        self.paths = tuple(model.stage_names)
        self.T, self.w_kl, self.w_at = T, kl, at
        self.sub_bn_stats = sub_bn_stats

    def forward(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> ObjectiveOutput:
        set_depth(model, None)
        with FeatureHooks(model, self.paths) as hooks:
            full = model(inputs)
            full_feats = [hooks[p] for p in self.paths]
        loss = ce_full = F.cross_entropy(full, targets)
        terms = {"ce_full": ce_full.detach()}
        try:
            for k in self.depths:
                set_depth(model, k)
                stats = contextlib.nullcontext() if self.sub_bn_stats else frozen_bn_stats(model)
                with stats, FeatureHooks(model, self.paths) as hooks:
                    sub = model(inputs)
                    sub_feats = [hooks[p] for p in self.paths]
                ce = F.cross_entropy(sub, targets)
                kd = kd_loss(sub, full.detach(), self.T)
                at = sum(
                    attention_transfer_loss(s, f.detach(), reduction="elementmean")
                    for s, f in zip(sub_feats, full_feats, strict=True)
                )
                loss = loss + ce + self.w_kl * kd + self.w_at * at
                terms.update({f"ce_d{k}": ce.detach(), f"kd_d{k}": kd.detach(), f"at_d{k}": at.detach()})
        finally:
            set_depth(model, None)
        return ObjectiveOutput(loss, full, terms)


def calibration_batches(
    dataset: Dataset | None, device: torch.device, batch_size: int, n: int, seed: int = 0
) -> list[torch.Tensor]:
    """``n`` fixed training batches (inputs on ``device``) for sub-network BN calibration; [] when off."""
    if dataset is None or n <= 0:
        return []
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed)
    )
    out = []
    for inputs, _ in loader:
        out.append(inputs.to(device))
        if len(out) == n:
            break
    return out


def evaluate_depth(
    model: nn.Module,
    depth: int | None,
    dataset: Dataset,
    device: torch.device,
    batch_size: int,
    precision: str = "fp32",
    calibration: Sequence[torch.Tensor] = (),
) -> float:
    """Test accuracy (%) of the depth-``depth`` sub-network; a sub-network (``depth`` not None) is evaluated
    with BatchNorm statistics re-estimated on ``calibration`` batches when given (the full network keeps the
    running statistics it was trained with, which sub-network forwards do not touch by default)."""
    set_depth(model, depth)
    try:
        if depth is None or not calibration:
            return evaluate_classifier(model, dataset, device, batch_size, precision)["acc"]
        with recalibrated_bn(model, calibration):
            return evaluate_classifier(model, dataset, device, batch_size, precision)["acc"]
    finally:
        set_depth(model, None)


def depth_report(
    model: nn.Module,
    depths: Sequence[int | None],
    dataset: Dataset,
    device: torch.device,
    batch_size: int,
    input_shape: tuple[int, ...],
    precision: str = "fp32",
    calibration: Sequence[torch.Tensor] = (),
) -> dict[str, dict[str, float]]:
    """``{"d{k}": {"acc", "macs", "params"}}`` for every depth (``None`` = full); params counted as used."""
    out = {}
    try:
        for d in depths:
            acc = evaluate_depth(model, d, dataset, device, batch_size, precision, calibration)
            set_depth(model, d)
            macs = model_cost(model, input_shape)["macs"]
            out[depth_name(d, model)] = {"acc": acc, "macs": macs, "params": used_params(model, d)}
    finally:
        set_depth(model, None)
    return out


def used_params(model: nn.Module, depth: int | None) -> int:
    """Parameters the depth-``depth`` sub-network uses (skipped blocks excluded)."""
    total = sum(p.numel() for p in model.parameters())
    if depth is None:
        return total
    for name in model.stage_names:
        for block in list(get_module(model, name))[depth:]:
            total -= sum(p.numel() for p in block.parameters())
    return total


class DepthAccuracy(Callback):
    """After every evaluation, log ``test/acc_d{k}`` for every sub-network depth."""

    def __init__(self, depths: Sequence[int], calib_batches: int = 0) -> None:
        self.depths = list(depths)
        self.calib_batches = calib_batches

    def on_epoch_end(self, trainer: Any, epoch: int, logs: dict[str, float]) -> None:
        if "test/acc" not in logs or trainer.eval_data is None or not trainer.is_main:
            return
        model = unwrap_model(trainer.model)
        cfg = trainer.cfg
        calib = calibration_batches(trainer.train_data, trainer.device, cfg.batch_size, self.calib_batches)
        values = {
            f"test/acc_d{k}": evaluate_depth(
                model, k, trainer.eval_data, trainer.device, cfg.eval_batch_size, cfg.precision, calib
            )
            for k in self.depths
        }
        trainer.log(values)


class DDNNEKD(KDMethod):
    """DDNN-EKD: one depth-selectable network; every depth is evaluated and reported."""

    section = "ddnn"
    weights = DDNNWeights
    tiny_overrides = ("student=resnet20", "student_widths=[]")  # stages that can be cut short

    def validate(self, cfg: Any) -> None:
        from workbench.models import build_model

        probe = make_depth_selectable(build_model(cfg.student, num_classes=2, in_channels=1), cfg.student)
        check_depths(probe, cfg.ddnn.depths)

    def build(self, ctx: KDContext) -> Built:
        model, w = new_student(ctx), ctx.weights
        make_depth_selectable(model, ctx.cfg.student)
        objective = DDNNObjective(model, w.depths, w.T, w.kl, w.at, w.sub_bn_stats)
        return Built(model, objective, [DepthAccuracy(objective.depths, w.calib_batches)])

    def report(self, ctx: KDContext, built: Built, trainer: Any, logs: dict[str, float]) -> dict[str, Any]:
        cfg, w = ctx.cfg, ctx.weights
        depths = [*w.depths, None]
        with torch.no_grad():
            report = depth_report(
                built.model,
                sorted(set(depths), key=lambda d: 10**9 if d is None else d),
                ctx.test,
                trainer.device,
                cfg.eval_batch_size,
                ctx.input_shape,
                cfg.precision,
                calibration_batches(ctx.train, trainer.device, cfg.batch_size, w.calib_batches),
            )
        full = report[max(report, key=lambda k: report[k]["macs"])]
        return {"depths": report, "student_acc": full["acc"], "macs": full["macs"], "params": full["params"]}


KD_METHODS.register("ddnn-ekd", DDNNEKD())
