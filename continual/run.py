"""``workbench cil run``: one method on one class-incremental stream, task by task.

The loop is Avalanche's own (``strategy.train(experience)`` then ``strategy.eval(test_stream[:t+1])``, its
EvaluationPlugin with per-experience accuracy and its TensorboardLogger writing into ``<run>/avalanche``).
After every task: the accuracy-matrix row, the seen-class accuracy, the workbench's scalars
(``cil/*`` in TensorBoard and metrics.jsonl), an atomic checkpoint and a partial ``summary.json``.
``--resume RUN_DIR`` continues after the last finished task; each task is seeded from the master seed, so
the resumed run reproduces the uninterrupted one.

Joint training (Avalanche's ``JointTraining``, the upper bound) trains a fresh model, from the same
initialisation, on the union of tasks ``0..t`` for row ``t``.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

from workbench.checkpoint import load_checkpoint, save_checkpoint
from workbench.errors import WorkbenchError
from workbench.runs import Run
from workbench.seeding import derive_seed, seed_everything

CHECKPOINT_FORMAT = "workbench-cil/1"
CHECKPOINT_NAME = "last.pt"
EXP_ACC = re.compile(r"^Top1_Acc_Exp/eval_phase/test_stream/(?:Task\d+/)?Exp(\d+)$")


def task_accuracies(metrics: dict[str, Any], tasks: int) -> list[float]:
    """Accuracy (%) on experiences ``0..tasks−1`` from Avalanche's ``Top1_Acc_Exp`` eval metrics."""
    found = {}
    for name, value in metrics.items():
        m = EXP_ACC.match(name)
        if m:
            found[int(m.group(1))] = 100.0 * float(value)
    missing = [j for j in range(tasks) if j not in found]
    if missing:
        raise RuntimeError(f"Avalanche reported no accuracy for experiences {missing}")
    return [found[j] for j in range(tasks)]


def make_evaluator(loggers: list) -> Any:
    from avalanche.evaluation.metrics import accuracy_metrics, loss_metrics
    from avalanche.training.plugins import EvaluationPlugin

    return EvaluationPlugin(
        accuracy_metrics(epoch=True, experience=True, stream=True),
        loss_metrics(epoch=True),
        loggers=loggers,
        strict_checks=False,
    )


def resolve(cfg: Any) -> None:
    """Fill ``model=auto`` from the protocol (done before the config is saved again)."""
    from continual.benchmarks import protocol

    proto = protocol(cfg.benchmark)
    if cfg.model == "auto":
        cfg.model = proto.model


def summary_of(cfg: Any, stream: Any, rows: list, seconds: list, extra: dict) -> dict[str, Any]:
    from continual.metrics import summarize

    sizes = [len(e.dataset) for e in stream.scenario.test_stream]
    metrics = summarize([r[: i + 1] for i, r in enumerate(rows)], sizes)
    return {
        "method": cfg.method,
        "benchmark": cfg.benchmark,
        "seed": cfg.seed,
        "model": cfg.model,
        "eval_split": stream.eval_split,
        "class_order": stream.class_order,
        "task_classes": stream.task_classes,
        "tasks_done": len(rows),
        # the run did what its config asked (max_tasks may stop it early): a sweep resumes only runs that did not
        "complete": len(rows) == (min(stream.num_tasks, cfg.max_tasks) if cfg.max_tasks else stream.num_tasks),
        "num_tasks": stream.num_tasks,
        "acc_matrix": rows,
        "test_sizes": sizes,
        **metrics,
        "last_old_acc": metrics["old_acc"][-1],
        "last_new_acc": metrics["new_acc"][-1],
        "seconds_per_task": seconds,
        "mean_seconds_per_task": sum(seconds) / len(seconds),
        **extra,
    }


@dataclass
class Session:
    """What ``prepare`` sets up for the task loop: the stream, the strategy factory, the plugins and the progress
    restored from a checkpoint (rows of the accuracy matrix, seconds, the global step)."""

    cfg: Any
    run: Run
    stream: Any
    device: Any
    plugin: Any
    seen: Any
    tb: Any
    rows: list = field(default_factory=list)
    seconds: list = field(default_factory=list)
    gen_seconds: list = field(default_factory=list)
    step: int = 0
    strategy: Any = None

    @property
    def method(self) -> Any:
        from continual.registry import CIL_METHODS

        return CIL_METHODS[self.cfg.method]

    @property
    def checkpoint(self) -> Any:
        return self.run.checkpoints / CHECKPOINT_NAME

    def fresh_strategy(self) -> Any:
        """The method's strategy around a backbone seeded from ``(seed, "model-init")``."""
        from continual.strategies import build_backbone, build_strategy

        seed_everything(derive_seed(self.cfg.seed, "model-init"))
        backbone = build_backbone(self.cfg, self.stream)
        evaluator = make_evaluator([self.tb] if self.tb else [])
        return build_strategy(self.cfg, self.stream, backbone, self.device, [self.plugin, self.seen], evaluator)


def prepare(cfg: Any, run: Run) -> Session:
    """Resolve the config, build the stream (refusing bad input before training), the plugins and the strategy,
    and restore the progress of a resumed run."""
    from avalanche.logging import TensorboardLogger

    from continual.benchmarks import build_stream
    from continual.plugins import SeenClassesPlugin, WorkbenchPlugin
    from continual.strategies import load_strategy_state
    from workbench.device import choose_device

    resolve(cfg)
    device = choose_device(cfg.device)
    stream = build_stream(cfg)
    cfg.class_order = list(stream.class_order)
    run.save_config(cfg)
    tb = TensorboardLogger(tb_log_dir=str(run.dir / "avalanche")) if run.is_main else None
    plugin = WorkbenchPlugin(
        lr=cfg.lr,
        epochs=cfg.epochs,
        schedule=cfg.schedule,
        milestones=tuple(cfg.milestones),
        step_size=cfg.step_size,
        gamma=cfg.gamma,
        logger=run.logger if run.is_main else None,
        log_every=cfg.log_every,
        progress=cfg.progress and run.is_main,
    )
    s = Session(cfg, run, stream, device, plugin, SeenClassesPlugin(stream.task_classes), tb)
    s.strategy = None if s.method.retrains else s.fresh_strategy()
    if run.resumed and s.checkpoint.is_file():
        data = load_checkpoint(s.checkpoint, CHECKPOINT_FORMAT, map_location=device)
        if data["num_tasks"] != stream.num_tasks or data["method"] != cfg.method:
            raise WorkbenchError(f"checkpoint {s.checkpoint} belongs to another method or stream; start a new run")
        s.rows, s.seconds, s.gen_seconds, s.step = (
            data["rows"],
            data["seconds"],
            data["generator_seconds"],
            data["step"],
        )
        if s.strategy is not None:
            load_strategy_state(s.strategy, data["strategy"], cfg.method)
        run.resume_logging_at(s.step)
        print(f"resuming after task {len(s.rows) - 1} of {stream.num_tasks}", flush=True)
    elif run.resumed:
        run.resume_logging_at(-1)
    return s


def train_task(s: Session, t: int) -> None:
    """Train task ``t`` (a method that retrains: a fresh model on tasks ``0..t``) and append its seconds."""
    cfg = s.cfg
    train_stream = s.stream.scenario.train_stream
    seed_everything(derive_seed(cfg.seed, "task", t))
    s.plugin.task = s.seen.task = t
    start = time.perf_counter()
    if s.method.retrains:
        s.strategy = s.fresh_strategy()
        s.plugin.iteration_offset = s.step
        s.strategy.train(train_stream[: t + 1], eval_streams=[], num_workers=cfg.num_workers)
        s.step += s.strategy.clock.train_iterations
    else:
        s.strategy.train(train_stream[t], eval_streams=[], reset_optimizer_state=True, num_workers=cfg.num_workers)
        s.step = s.strategy.clock.train_iterations
    s.seconds.append(time.perf_counter() - start)
    if hasattr(s.strategy, "generator_seconds"):
        s.gen_seconds.append(s.strategy.generator_seconds[-1])


def evaluate_task(s: Session, t: int) -> None:
    """Evaluate on the tasks ``0..t`` seen so far: row ``t`` of the accuracy matrix."""
    results = s.strategy.eval(s.stream.scenario.test_stream[: t + 1], num_workers=s.cfg.num_workers)
    s.rows.append(task_accuracies(results, t + 1) + [None] * (s.stream.num_tasks - t - 1))


def report_task(s: Session, t: int) -> dict[str, Any]:
    """The summary after task ``t``: scalars, the checkpoint, ``summary.json`` and one printed line."""
    from continual.strategies import strategy_state

    cfg, run, rows, seconds = s.cfg, s.run, s.rows, s.seconds
    extra = {"generator_seconds": s.gen_seconds} if s.gen_seconds else {}
    summary = summary_of(cfg, s.stream, rows, seconds, extra)
    values = {f"cil/acc_task{j}": a for j, a in enumerate(rows[-1][: t + 1])}
    values.update(
        {
            "cil/seen_acc": summary["seen_acc"][-1],
            "cil/avg_incremental_acc": summary["avg_incremental_acc"],
            "cil/avg_forgetting": summary["avg_forgetting"],
            "cil/seconds_per_task": seconds[-1],
            "cil/task": t,
        }
    )
    run.logger.scalars(values, s.step)
    run.logger.flush()
    if run.is_main:
        payload = {
            "method": cfg.method,
            "num_tasks": s.stream.num_tasks,
            "rows": rows,
            "seconds": seconds,
            "generator_seconds": s.gen_seconds,
            "step": s.step,
            "strategy": None if s.method.retrains else strategy_state(s.strategy, cfg.method),
        }
        save_checkpoint(s.checkpoint, payload, fmt=CHECKPOINT_FORMAT)
        run.write_summary(summary)
    print(
        f"task {t + 1}/{s.stream.num_tasks}: seen-class acc {summary['seen_acc'][-1]:.2f}%  "
        f"row {[round(a, 1) for a in rows[-1][: t + 1]]}  {seconds[-1]:.1f}s",
        flush=True,
    )
    return summary


def run(cfg: Any, run: Run) -> dict[str, Any]:
    """prepare → (train, evaluate, report) per task → plots."""
    s = prepare(cfg, run)
    summary: dict[str, Any] = {}
    try:
        num_tasks = s.stream.num_tasks
        last_task = min(num_tasks, cfg.max_tasks) if cfg.max_tasks else num_tasks
        for t in range(len(s.rows), last_task):
            train_task(s, t)
            evaluate_task(s, t)
            summary = report_task(s, t)
    finally:
        if s.tb is not None:
            s.tb.writer.close()
    if not summary:  # resumed after its last task: nothing to train, the summary on disk stands
        from workbench.runs import load_summary

        print(f"all {last_task} tasks were already done; nothing to resume", flush=True)
        return load_summary(run.dir) or {}
    if run.is_main:
        write_plots(run, cfg, summary)
    return summary


def write_plots(run: Run, cfg: Any, summary: dict[str, Any]) -> None:
    """The accuracy-matrix heatmap and the seen-class accuracy curve of one run."""
    import numpy as np

    from workbench.plots import plot_bands, plot_matrix

    matrix = np.array([[np.nan if a is None else a for a in row] for row in summary["acc_matrix"]], float)
    title = f"{cfg.method} on {cfg.benchmark} (seed {cfg.seed})"
    plot_matrix(matrix, run.plots / "acc_matrix.png", title, "evaluated task", "after task", vmin=0, vmax=100)
    seen = summary["seen_acc"]
    plot_bands(
        {cfg.method: [(list(range(1, len(seen) + 1)), seen)]},
        run.plots / "seen_acc.png",
        "tasks learned",
        "seen-class accuracy (%)",
        title,
    )
