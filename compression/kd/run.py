"""The body of ``workbench compress kd``: build the method's model and objective, train with the one
Trainer, evaluate, save and summarise."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from compression.kd.cohort import Cohort, MemberAccuracy, member_accuracies
from compression.kd.ctsl_mkt import CTSLObjective
from compression.kd.ddnn_ekd import (
    DDNNObjective,
    DepthAccuracy,
    calibration_batches,
    depth_report,
    make_depth_selectable,
)
from compression.kd.hsakd import HSAKDObjective, branch_trainer_config, check_rotatable, teacher_branches
from compression.kd.kd import KDObjective, StudentObjective
from compression.kd.mcl import MCLObjective
from compression.kd.mixskd import MixSKDObjective
from compression.kd.teacher import load_teacher
from compression.kd_commands import COHORT_METHODS, TEACHER_METHODS, KDConfig, student_spec
from workbench.callbacks import Callback
from workbench.checkpoint import save_model
from workbench.commands.train import load_splits
from workbench.device import choose_device
from workbench.errors import WorkbenchError
from workbench.flops import model_cost
from workbench.models import build_model
from workbench.plots import plot_history
from workbench.runs import Run, load_summary
from workbench.seeding import derive_seed, seed_everything
from workbench.trainer import Objective, Trainer, evaluate_classifier


def build_student(cfg: KDConfig, info: Any, key: str = "student") -> nn.Module:
    """The student network, initialised from a seed derived from ``(cfg.seed, key)``."""
    seed_everything(derive_seed(cfg.seed, "model-init", key))
    kwargs = {"widths": list(cfg.student_widths)} if cfg.student_widths else {}
    return build_model(cfg.student, num_classes=info.num_classes, in_channels=info.in_channels, **kwargs)


def _check_teacher_fits(spec: dict, cfg: KDConfig, info: Any) -> None:
    if spec.get("dataset") and spec["dataset"] != cfg.dataset:
        raise WorkbenchError(
            f"the teacher was trained on '{spec['dataset']}' but dataset={cfg.dataset}; set dataset={spec['dataset']}"
        )
    if spec["num_classes"] != info.num_classes or spec["in_channels"] != info.in_channels:
        raise WorkbenchError(
            f"the teacher has {spec['num_classes']} classes / {spec['in_channels']} input channels, the data "
            f"{info.num_classes} / {info.in_channels}; train a teacher on this dataset"
        )


def run_method(cfg: KDConfig, run: Run) -> dict:
    device = choose_device(cfg.device)
    train, test = load_splits(cfg, cfg.seed)
    info = train.info
    input_shape = (info.in_channels, *info.image_size)
    summary: dict[str, Any] = {
        "command": "kd",
        "method": cfg.method,
        "dataset": cfg.dataset,
        "student": cfg.student,
        "seed": cfg.seed,
    }
    teacher = None
    if cfg.method in TEACHER_METHODS:
        teacher, tspec = load_teacher(cfg.teacher)
        _check_teacher_fits(tspec, cfg, info)
        teacher = teacher.to(device)
        summary["teacher"] = tspec["name"]
        summary["teacher_dir"] = str(cfg.teacher)
        summary["teacher_acc"] = evaluate_classifier(teacher, test, device, cfg.eval_batch_size)["acc"]
        tcost = model_cost(teacher, input_shape)
        summary["teacher_macs"], summary["teacher_params"] = tcost["macs"], tcost["params"]

    callbacks: list[Callback] = []
    objective: Objective
    model: nn.Module
    if cfg.method in COHORT_METHODS:
        model = Cohort([build_student(cfg, info, f"member{i}") for i in range(cfg.cohort)])
        callbacks.append(MemberAccuracy())
        seed_everything(derive_seed(cfg.seed, "objective-init"))
        if cfg.method == "mcl":
            w = cfg.mcl
            objective = MCLObjective(model, w.tau, w.T, w.vcl, w.icl, w.soft_vcl, w.soft_icl, w.embed_dim)
        else:
            w = cfg.ctsl
            objective = CTSLObjective(model, w.T, w.self_distill, w.relation, w.angle, w.mutual, w.ema)
    else:
        model = build_student(cfg, info)
        seed_everything(derive_seed(cfg.seed, "objective-init"))
        if cfg.method == "student":
            objective = StudentObjective()
        elif cfg.method == "kd":
            objective = KDObjective(teacher, cfg.kd.T, cfg.kd.gamma, cfg.kd.alpha)
        elif cfg.method == "hsakd":
            check_rotatable(info.image_size)
            if len(teacher.stage_names) != len(model.stage_names):
                raise WorkbenchError(
                    f"hsakd pairs branches stage by stage: student '{cfg.student}' has {len(model.stage_names)} "
                    f"stages, teacher '{tspec['name']}' {len(teacher.stage_names)}; pick a student with as many"
                )
            branches, binfo = teacher_branches(
                teacher,
                cfg.teacher,
                info.num_classes,
                branch_trainer_config(cfg, cfg.hsakd.aux_epochs, cfg.hsakd.aux_lr),
                train,
                test,
                {"dataset": cfg.dataset, "subset": cfg.subset, "augment": cfg.augment},
                device,
                # The branches belong to the teacher: seeded by the teacher run's seed, shared by every student.
                derive_seed(int((load_summary(cfg.teacher) or {}).get("seed", 0)), "hsakd-teacher-branches"),
            )
            summary["teacher_aux_acc"] = binfo.get("acc", [])
            summary["teacher_aux_cached"] = binfo["cached"]
            w = cfg.hsakd
            objective = HSAKDObjective(teacher, branches, model, info.num_classes, w.T, w.ce, w.aux, w.main)
        elif cfg.method == "mixskd":
            w = cfg.mixskd
            objective = MixSKDObjective(
                model, info.num_classes, input_shape, w.alpha, w.T, w.logit, w.feature, w.self_teacher
            )
        elif cfg.method == "ddnn-ekd":
            make_depth_selectable(model, cfg.student)
            objective = DDNNObjective(
                model, cfg.ddnn.depths, cfg.ddnn.T, cfg.ddnn.kl, cfg.ddnn.at, cfg.ddnn.sub_bn_stats
            )
            callbacks.append(DepthAccuracy(objective.depths, cfg.ddnn.calib_batches))
        else:  # pragma: no cover - choices are checked by the config
            raise WorkbenchError(f"unknown method {cfg.method}")

    trainer = Trainer(
        model, cfg, train, test, device=device, run=run, objective=objective, callbacks=callbacks, seed=cfg.seed
    )
    logs = trainer.fit(resume=run.resumed)
    model.eval()
    summary["epochs"] = trainer.epoch
    summary["train_loss"] = logs.get("train/loss")
    spec = student_spec(cfg, info)
    with torch.no_grad():
        if isinstance(model, Cohort):
            accs = member_accuracies(model, test, trainer.device, cfg.eval_batch_size, cfg.precision)
            summary["member_acc"] = accs
            summary["student_acc"] = sum(accs) / len(accs)
            summary["best_member_acc"] = max(accs)
            summary["ensemble_acc"] = logs.get("test/acc")
            cost = model_cost(model.members[0], input_shape)
        elif cfg.method == "ddnn-ekd":
            depths = [*cfg.ddnn.depths, None]
            report = depth_report(
                model,
                sorted(set(depths), key=lambda d: 10**9 if d is None else d),
                test,
                trainer.device,
                cfg.eval_batch_size,
                input_shape,
                cfg.precision,
                calibration_batches(train, trainer.device, cfg.batch_size, cfg.ddnn.calib_batches),
            )
            summary["depths"] = report
            full = report[max(report, key=lambda k: report[k]["macs"])]
            summary["student_acc"] = full["acc"]
            cost = {"macs": full["macs"], "params": full["params"]}
        else:
            summary["student_acc"] = logs.get("test/acc")
            cost = model_cost(model, input_shape)
    summary["macs"], summary["params"] = cost["macs"], cost["params"]
    summary["device"] = str(trainer.device)
    if run.is_main:
        members = model.members if isinstance(model, Cohort) else [model]
        for i, member in enumerate(members):
            name = "model.pt" if len(members) == 1 else f"member{i}.pt"
            save_model(run.checkpoints / name, member, spec)
        plot_history(trainer.history, run.plots / "learning_curve.png", title=f"{cfg.method}: {cfg.student}")
        acc = summary["student_acc"]
        extra = f" (teacher {summary['teacher_acc']:.2f}%)" if "teacher_acc" in summary else ""
        print(f"{cfg.method}: student accuracy {acc:.2f}%{extra} after {trainer.epoch} epochs")
    return summary
