"""``workbench bench cil``: seconds per task of eTag and IR ÷ Avalanche's Naive at equal epochs.

Each repeat trains the first two tasks of a split-fmnist-5 stream (task 1 includes the old-model terms and,
for eTag, the generator) with Naive, eTag and IR back to back in this process, same backbone, data, batch
size and epochs. The ratio is ``method seconds ÷ Naive seconds`` per task (unit "time": lower is better; eTag
and IR see every image in 4 rotations and run the old model too, so several times Naive is expected).
The detail holds eTag's generator share of its task time.
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
        overrides += ["benchmark=split-digits-5", "model=mlp", "batch_size=32", "etag.gen_steps=100"]
    else:
        overrides += ["benchmark=split-fmnist-5", "model=small_cnn", "subset=10000", "etag.gen_steps=300"]
        overrides += ["etag.gen_hidden=256"]
    return resolve_config(CILConfig, overrides)


def _seconds_per_task(cfg: Any, stream: Any) -> tuple[float, float]:
    """Mean wall seconds of tasks 0 and 1, and the generator seconds inside them (eTag)."""
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
    total = 0.0
    for t in range(2):
        seed_everything(derive_seed(cfg.seed, "task", t))
        plugin.task = t
        start = time.perf_counter()
        strategy.train(stream.scenario.train_stream[t], eval_streams=[], reset_optimizer_state=True)
        total += time.perf_counter() - start
    return total / 2, sum(getattr(strategy, "generator_seconds", [])) / 2


def bench(repeats: int, quick: bool) -> list[BenchResult]:
    from continual.benchmarks import build_stream

    stream = build_stream(_config(quick, "naive"))
    naive, etag, ir, gen = [], [], [], []
    for _ in range(repeats):
        naive.append(_seconds_per_task(_config(quick, "naive"), stream)[0])
        e, g = _seconds_per_task(_config(quick, "etag"), stream)
        etag.append(e)
        gen.append(g)
        ir.append(_seconds_per_task(_config(quick, "ir"), stream)[0])
    data = "digits/mlp" if quick else "fmnist 10k subset/small_cnn"
    detail_common = {"data": data, "epochs": 1, "naive_s_per_task": round(sorted(naive)[len(naive) // 2], 3)}
    r_etag, rs_etag = median_ratio(etag, naive)
    r_ir, rs_ir = median_ratio(ir, naive)
    share = sorted(g / e for g, e in zip(gen, etag))[len(gen) // 2]
    return [
        BenchResult(
            "cil: etag s/task ÷ naive s/task",
            r_etag,
            rs_etag,
            unit="time",
            goal="report",
            detail={
                **detail_common,
                "etag_s_per_task": round(sorted(etag)[len(etag) // 2], 3),
                "generator_share": round(share, 3),
            },
        ),
        BenchResult(
            "cil: ir s/task ÷ naive s/task",
            r_ir,
            rs_ir,
            unit="time",
            goal="report",
            detail={**detail_common, "ir_s_per_task": round(sorted(ir)[len(ir) // 2], 3)},
        ),
    ]
