"""``workbench bench sweep``: 8 short digits training runs through ``workbench sweep launcher=local jobs=2``
÷ the same 8 runs one after another in this process.

Both arms pin one CPU thread per run (``run_threads=1`` in the sweep, ``torch.set_num_threads(1)`` here), so
the ratio measures the process pool's parallelism minus its costs (a fresh interpreter and imports per run,
the status table), not a change of threading. Goal: ≥ 1.8 with 2 jobs on 2 cores (the limit is 2.0).

The sweep's overhead per run is the mean wall time of a run inside the sweep (its child process, from
launch to exit, as the status table records it) minus the mean wall time of the same run in this process.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch

from workbench.bench import BenchResult, median_ratio

RUNS = 8
JOBS = 2


def _args(quick: bool) -> list[str]:
    # 40 epochs: ~20 s per run alone on an idle 2-core machine, the run length the sweep is measured at
    epochs = "2" if quick else "40"
    return ["dataset=digits", "model=resnet20", f"epochs={epochs}", "batch_size=64", "lr=0.1", "progress=false"]


def sequential(root: Path, quick: bool) -> tuple[float, list[float]]:
    """The reference: the 8 runs back to back in this process, one thread; wall time and per-run times."""
    from workbench.cli import main

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    times = []
    try:
        for seed in range(RUNS):
            start = time.perf_counter()
            rc = main(["train", *_args(quick), f"seed={seed}", f"run_root={root}"])
            times.append(time.perf_counter() - start)
            if rc != 0:
                raise RuntimeError(f"reference run {seed} failed with exit {rc}")
    finally:
        torch.set_num_threads(threads)
    return sum(times), times


def swept(root: Path, quick: bool) -> tuple[float, list[float]]:
    """The same runs through the sweep's local pool; wall time and the per-run times of its status table."""
    from workbench.sweep import run_sweep

    start = time.perf_counter()
    res = run_sweep(
        ["train"],
        [*_args(quick), f"seed=0:{RUNS}"],
        [f"run_root={root}", f"jobs={JOBS}", "run_threads=1", "retries=0", "report_reps=200"],
    )
    wall = time.perf_counter() - start
    if res.exit_code != 0:
        raise RuntimeError(f"the sweep failed with exit {res.exit_code}; see {res.dir / 'status.md'}")
    return wall, [e["seconds"] for e in res.runs]


def bench(repeats: int = 3, quick: bool = False) -> list[BenchResult]:
    ours, ref, overheads, run_s = [], [], [], []
    for r in range(repeats):
        with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
            arms = [("seq", sequential), ("sweep", swept)]
            results = {}
            for name, fn in arms if r % 2 == 0 else arms[::-1]:  # alternate the order against drift
                results[name] = fn(Path(tmp) / name, quick)
        (t_seq, seq_runs), (t_sweep, sweep_runs) = results["seq"], results["sweep"]
        ours.append(1.0 / t_sweep)
        ref.append(1.0 / t_seq)
        overheads.append(statistics.mean(sweep_runs) - statistics.mean(seq_runs))
        run_s.append(statistics.mean(seq_runs))
        print(
            f"   repeat {r}: sequential {t_seq:.1f} s, sweep {t_sweep:.1f} s, ratio {t_seq / t_sweep:.2f}", flush=True
        )
    ratio, ratios = median_ratio(ours, ref)
    return [
        BenchResult(
            name=f"sweep local jobs={JOBS} ÷ sequential ({RUNS} runs)",
            ratio=ratio,
            ratios=ratios,
            goal="≥ 1.8",
            detail={
                "runs": RUNS,
                "jobs": JOBS,
                "threads_per_run": 1,
                "run_s_in_process": round(statistics.median(run_s), 2),
                "overhead_s_per_run": round(statistics.median(overheads), 2),
                "overheads_s": [round(x, 2) for x in overheads],
                "args": " ".join(_args(quick)),
            },
        )
    ]
