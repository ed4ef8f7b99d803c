"""``workbench bench cil``: seconds per task of every registered method ÷ Avalanche's Naive at equal epochs.

Each repeat trains the first two tasks of a split-fmnist-5 stream (task 1 includes the old-model terms and,
for eTag, the generator) with Naive and every registered method (joint aside) back to back in this process,
same backbone, data, batch size and epochs. The ratio is ``method seconds ÷ Naive seconds`` per task, the
mean of tasks 0 and 1 (unit "time": lower is better; eTag and IR see every image in 4 rotations and run the
old model too, so several times Naive is expected). The detail holds ``task1_ratio`` (task 1 alone: the
frozen-backbone methods only extract features and fit their classifier there) and eTag's generator share.
Quick mode uses sklearn digits and an MLP.
"""

from __future__ import annotations

import time
from typing import Any

from workbench.bench import BenchResult, median_ratio


def _config(quick: bool, method: str) -> Any:
    from continual.config import CILConfig
    from workbench.config import resolve_config

    overrides = [f"method={method}", "progress=false", "device=cpu", "epochs=1", "optimizer=adam", "lr=0.001"]
    if quick:
        overrides += ["benchmark=split-digits-5", "model=mlp", "batch_size=32", "etag.gen_steps=100", "acil.buffer=512"]
    else:
        overrides += ["benchmark=split-fmnist-5", "model=small_cnn", "subset=10000", "etag.gen_steps=300"]
        overrides += ["etag.gen_hidden=256"]
    return resolve_config(CILConfig, overrides)


def _seconds_per_task(cfg: Any, stream: Any) -> tuple[float, float, list[float]]:
    """Mean wall seconds of tasks 0 and 1, the generator seconds inside them (eTag), and each task's seconds."""
    import torch

    from continual.plugins import WorkbenchPlugin
    from continual.run import make_evaluator, resolve
    from continual.strategies import build_backbone, build_strategy
    from workbench.seeding import derive_seed, seed_everything

    resolve(cfg)
    seed_everything(derive_seed(cfg.seed, "model-init"))
    plugin = WorkbenchPlugin(lr=cfg.lr, epochs=cfg.epochs, progress=False)
    strategy = build_strategy(
        cfg, stream, build_backbone(cfg, stream), torch.device("cpu"), [plugin], make_evaluator([])
    )
    per_task = []
    for t in range(2):
        seed_everything(derive_seed(cfg.seed, "task", t))
        plugin.task = t
        start = time.perf_counter()
        strategy.train(stream.scenario.train_stream[t], eval_streams=[], reset_optimizer_state=True)
        per_task.append(time.perf_counter() - start)
    return sum(per_task) / 2, sum(getattr(strategy, "generator_seconds", [])) / 2, per_task


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def methods() -> list[str]:
    """Every registered method measured against Naive (not Naive itself; not joint, which retrains)."""
    from continual.registry import CIL_METHODS

    return [m for m in CIL_METHODS.names() if m != "naive" and not CIL_METHODS[m].retrains]


def bench(repeats: int, quick: bool) -> list[BenchResult]:
    from continual.benchmarks import build_stream

    stream = build_stream(_config(quick, "naive"))
    names = methods()
    naive, naive_t1 = [], []
    times: dict[str, list[float]] = {m: [] for m in names}
    task1: dict[str, list[float]] = {m: [] for m in names}
    gen: list[float] = []
    for _ in range(repeats):
        mean, _, per_task = _seconds_per_task(_config(quick, "naive"), stream)
        naive.append(mean)
        naive_t1.append(per_task[1])
        for m in names:
            mean, g, per_task = _seconds_per_task(_config(quick, m), stream)
            times[m].append(mean)
            task1[m].append(per_task[1])
            if m == "etag":
                gen.append(g / mean)
    data = "digits/mlp" if quick else "fmnist 10k subset/small_cnn"
    common = {"data": data, "epochs": 1, "naive_s_per_task": round(_median(naive), 3)}
    rows = []
    for m in names:
        ratio, ratios = median_ratio(times[m], naive)
        detail = {
            **common,
            f"{m}_s_per_task": round(_median(times[m]), 3),
            "task1_ratio": round(median_ratio(task1[m], naive_t1)[0], 3),
        }
        if m == "etag" and gen:
            detail["generator_share"] = round(_median(gen), 3)
        rows.append(
            BenchResult(f"cil: {m} s/task ÷ naive s/task", ratio, ratios, unit="time", goal="report", detail=detail)
        )
    return rows
