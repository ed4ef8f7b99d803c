"""``workbench bench comm``: accuracy and bytes of each DDP communication hook, 2 gloo ranks, side by side.

Every variant is the same ``workbench train`` run (small CNN on a class-stratified Fashion-MNIST subset, fixed
epochs, seed 0) under ``torchrun --nproc_per_node=2``; only ``comm_hook`` and its keys change. A row's ratio
is the compression (bytes one rank hands to collectives per step with ``none`` ÷ with the hook); its detail
holds the final test accuracy, the gap to ``none`` and the time per step relative to ``none`` (one run per
variant: the training runs are too long to repeat, so ``repeats`` is not used; timings on a shared CPU are
noisy). The gs-SGD goal: count-sketch within 1 point of ``none`` at ≥ 10× fewer bytes.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from workbench.bench import BenchResult
from workbench.distributed import run_torchrun
from workbench.errors import WorkbenchError

VARIANTS: dict[str, list[str]] = {
    "none": ["comm_hook=none"],
    "fp16": ["comm_hook=fp16"],
    "powersgd-r1": ["comm_hook=powersgd", "powersgd_rank=1"],
    "powersgd-r2": ["comm_hook=powersgd", "powersgd_rank=2"],
    "count-sketch-10x": ["comm_hook=count-sketch", "sketch_ratio=10"],
    "count-sketch-20x": ["comm_hook=count-sketch", "sketch_ratio=20"],
    "count-sketch-50x": ["comm_hook=count-sketch", "sketch_ratio=50"],
}
# quick: a 2,000-image, 1-epoch smoke of the table; full: 10,000 images, 4 epochs of 313 steps (~1.5 min a variant)
SIZES = {
    True: {"subset": 2000, "test_subset": 2000, "epochs": 1},
    False: {"subset": 10000, "test_subset": 5000, "epochs": 4},
}
COMMON = ["dataset=fashion-mnist", "model=small_cnn", "batch_size=32", "progress=false", "seed=0"]


def run_variant(label: str, overrides: list[str], size: dict, root: Path) -> dict:
    """One 2-rank ``workbench train`` run; returns its summary.json."""
    args = [*COMMON, *(f"{k}={v}" for k, v in size.items()), *overrides, f"run_root={root}", f"name={label}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = run_torchrun(["-m", "workbench.cli", "train", *args], env=env)
    if res.returncode != 0:
        tail = res.stderr.strip().splitlines()[-1:] or ["no output"]
        raise WorkbenchError(f"bench comm: the '{label}' run failed ({tail[0][:200]})")
    summaries = list((root / "train" / label).glob("*/summary.json"))
    return json.loads(summaries[0].read_text())


def bench(repeats: int = 1, quick: bool = False) -> list[BenchResult]:
    size = SIZES[quick]
    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench-comm-") as tmp:
        for label, overrides in VARIANTS.items():
            print(f"   training {label} ...", flush=True)
            rows[label] = run_variant(label, overrides, size, Path(tmp))
    base = rows["none"]
    base_step = base["train_time_s"] / (base["comm_bytes_total"] / base["comm_bytes_per_step"])
    results = []
    for label, s in rows.items():
        steps = s["comm_bytes_total"] / s["comm_bytes_per_step"]
        ratio = base["comm_bytes_per_step"] / s["comm_bytes_per_step"]
        results.append(
            BenchResult(
                name=f"comm[{label}] bytes ÷ none",
                ratio=ratio,
                ratios=[ratio],
                unit="compression",
                goal="≥ 10, ≤ 1 pt" if label.startswith("count-sketch") else "report",
                detail={
                    "test_acc": s["test_acc"],
                    "acc_vs_none": round(s["test_acc"] - base["test_acc"], 2),
                    "bytes_per_step": round(s["comm_bytes_per_step"]),
                    "time_per_step_vs_none": round(s["train_time_s"] / steps / base_step, 2),
                    "steps": round(steps),
                    "train_time_s": s["train_time_s"],
                    **size,
                },
            )
        )
    return results
