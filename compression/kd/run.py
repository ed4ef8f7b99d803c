"""The body of ``workbench compress kd``, prepare → method → report on the shared pipeline
(``compression.pipeline``): the teacher run is the source, the registered method (``KD_METHODS[cfg.method]``)
builds the student(s) and the objective, the one Trainer trains them, and they are saved and summarised."""

from __future__ import annotations

import time
from typing import Any

from compression.kd.config import KDConfig, student_spec
from compression.kd.registry import KD_METHODS, Built, KDContext
from compression.kd.teacher import load_teacher
from compression.pipeline import save_outputs
from workbench.data.config import load_splits
from workbench.device import choose_device
from workbench.errors import WorkbenchError
from workbench.flops import model_cost
from workbench.runs import Run
from workbench.trainer import Trainer, evaluate_classifier


def run_kd(cfg: KDConfig, run: Run) -> dict:
    start = time.perf_counter()
    summary = run_method(cfg, run)
    summary["wall_time_s"] = round(time.perf_counter() - start, 2)
    run.write_summary(summary)
    return summary


def run_method(cfg: KDConfig, run: Run) -> dict:
    """Prepare (data, teacher) → method (build, train) → report (evaluate, save, summary)."""
    ctx = prepare(cfg)
    built = KD_METHODS[cfg.method].build(ctx)
    trainer = Trainer(
        built.model, cfg, ctx.train, ctx.test, device=ctx.device, run=run, objective=built.objective,
        callbacks=built.callbacks, seed=cfg.seed,
    )  # fmt: skip
    logs = trainer.fit(resume=run.resumed)
    return report(ctx, built, trainer, logs, run)


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


def prepare(cfg: KDConfig) -> KDContext:
    """The data and, for a method that needs one, the frozen teacher with its accuracy and cost."""
    device = choose_device(cfg.device)
    train, test = load_splits(cfg, cfg.seed)
    ctx = KDContext(cfg, train, test, device)
    ctx.summary.update(command="kd", method=cfg.method, dataset=cfg.dataset, student=cfg.student, seed=cfg.seed)
    if KD_METHODS[cfg.method].needs_teacher:
        teacher, tspec = load_teacher(cfg.teacher)
        _check_teacher_fits(tspec, cfg, ctx.info)
        ctx.teacher, ctx.teacher_spec = teacher.to(device), tspec
        ctx.summary["teacher"] = tspec["name"]
        ctx.summary["teacher_dir"] = str(cfg.teacher)
        ctx.summary["teacher_acc"] = evaluate_classifier(ctx.teacher, test, device, cfg.eval_batch_size)["acc"]
        tcost = model_cost(ctx.teacher, ctx.input_shape)
        ctx.summary["teacher_macs"], ctx.summary["teacher_params"] = tcost["macs"], tcost["params"]
    return ctx


def report(ctx: KDContext, built: Built, trainer: Trainer, logs: dict[str, float], run: Run) -> dict:
    """The method's accuracy/cost entries, the saved network(s) and learning curve, the summary."""
    cfg, method = ctx.cfg, KD_METHODS[ctx.cfg.method]
    built.model.eval()
    summary = ctx.summary
    summary["epochs"] = trainer.epoch
    summary["train_loss"] = logs.get("train/loss")
    summary.update(method.report(ctx, built, trainer, logs))
    summary["device"] = str(trainer.device)
    save_outputs(run, method.files(built), student_spec(cfg, ctx.info), trainer.history,
                 "learning_curve.png", f"{cfg.method}: {cfg.student}")  # fmt: skip
    if run.is_main:
        extra = f" (teacher {summary['teacher_acc']:.2f}%)" if "teacher_acc" in summary else ""
        print(f"{cfg.method}: student accuracy {summary['student_acc']:.2f}%{extra} after {trainer.epoch} epochs")
    return summary
