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
    return {
        "method": cfg.method,
        "benchmark": cfg.benchmark,
        "seed": cfg.seed,
        "model": cfg.model,
        "eval_split": stream.eval_split,
        "class_order": stream.class_order,
        "task_classes": stream.task_classes,
        "tasks_done": len(rows),
        "complete": len(rows) == stream.num_tasks,
        "num_tasks": stream.num_tasks,
        "acc_matrix": rows,
        **summarize([r[: i + 1] for i, r in enumerate(rows)], sizes),
        "seconds_per_task": seconds,
        "mean_seconds_per_task": sum(seconds) / len(seconds),
        **extra,
    }


def run(cfg: Any, run: Run) -> dict[str, Any]:
    from avalanche.logging import TensorboardLogger

    from continual.benchmarks import build_stream
    from continual.plugins import SeenClassesPlugin, WorkbenchPlugin
    from continual.strategies import build_backbone, build_strategy, load_strategy_state, strategy_state
    from workbench.device import choose_device

    resolve(cfg)
    device = choose_device(cfg.device)
    stream = build_stream(cfg)
    cfg.class_order = list(stream.class_order)
    run.save_config(cfg)
    num_tasks = stream.num_tasks
    train_stream, test_stream = stream.scenario.train_stream, stream.scenario.test_stream

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
    seen = SeenClassesPlugin(stream.task_classes)

    def fresh_strategy() -> Any:
        seed_everything(derive_seed(cfg.seed, "model-init"))
        backbone = build_backbone(cfg, stream)
        return build_strategy(cfg, stream, backbone, device, [plugin, seen], make_evaluator([tb] if tb else []))

    joint = cfg.method == "joint"
    strategy = None if joint else fresh_strategy()
    rows: list[list[float | None]] = []
    seconds: list[float] = []
    gen_seconds: list[float] = []
    step = 0
    ckpt = run.checkpoints / CHECKPOINT_NAME
    if run.resumed and ckpt.is_file():
        data = load_checkpoint(ckpt, CHECKPOINT_FORMAT, map_location=device)
        if data["num_tasks"] != num_tasks or data["method"] != cfg.method:
            raise WorkbenchError(f"checkpoint {ckpt} belongs to another method or stream; start a new run")
        rows, seconds, gen_seconds, step = data["rows"], data["seconds"], data["generator_seconds"], data["step"]
        if strategy is not None:
            load_strategy_state(strategy, data["strategy"])
        run.resume_logging_at(step)
        print(f"resuming after task {len(rows) - 1} of {num_tasks}", flush=True)
    elif run.resumed:
        run.resume_logging_at(-1)

    summary: dict[str, Any] = {}
    try:
        last_task = min(num_tasks, cfg.max_tasks) if cfg.max_tasks else num_tasks
        for t in range(len(rows), last_task):
            seed_everything(derive_seed(cfg.seed, "task", t))
            plugin.task = seen.task = t
            start = time.perf_counter()
            if joint:
                strategy = fresh_strategy()
                plugin.iteration_offset = step
                strategy.train(train_stream[: t + 1], eval_streams=[], num_workers=cfg.num_workers)
                step += strategy.clock.train_iterations
            else:
                strategy.train(
                    train_stream[t], eval_streams=[], reset_optimizer_state=True, num_workers=cfg.num_workers
                )
                step = strategy.clock.train_iterations
            seconds.append(time.perf_counter() - start)
            if hasattr(strategy, "generator_seconds"):
                gen_seconds.append(strategy.generator_seconds[-1])
            results = strategy.eval(test_stream[: t + 1], num_workers=cfg.num_workers)
            rows.append(task_accuracies(results, t + 1) + [None] * (num_tasks - t - 1))
            extra = {"generator_seconds": gen_seconds} if gen_seconds else {}
            summary = summary_of(cfg, stream, rows, seconds, extra)
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
            run.logger.scalars(values, step)
            run.logger.flush()
            if run.is_main:
                payload = {
                    "method": cfg.method,
                    "num_tasks": num_tasks,
                    "rows": rows,
                    "seconds": seconds,
                    "generator_seconds": gen_seconds,
                    "step": step,
                    "strategy": None if joint else strategy_state(strategy),
                }
                save_checkpoint(ckpt, payload, fmt=CHECKPOINT_FORMAT)
                run.write_summary(summary)
            print(
                f"task {t + 1}/{num_tasks}: seen-class acc {summary['seen_acc'][-1]:.2f}%  "
                f"row {[round(a, 1) for a in rows[-1][: t + 1]]}  {seconds[-1]:.1f}s",
                flush=True,
            )
    finally:
        if tb is not None:
            tb.writer.close()
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
