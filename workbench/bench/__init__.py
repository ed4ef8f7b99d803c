"""``workbench bench [NAME...] [repeats=N] [quick=true]``: ratios measured side by side in one process.

Each benchmark returns rows of :class:`BenchResult`; the ratio is the median over repeats of
(workbench ÷ reference), so above 1 means the workbench is faster (or, for a ``lower_is_better`` quantity,
that its value is higher). Subsystems add benchmarks through the ``workbench.benches`` entry-point group.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from workbench.errors import WorkbenchError, unknown
from workbench.io import atomic_write_json

CORE_BENCHES = {
    "trainer": "workbench.bench.trainer:bench",
    "cka": "workbench.bench.cka:bench",
    "comm": "workbench.bench.comm:bench",
    "sweep": "workbench.bench.sweep:bench",
}


@dataclass
class BenchResult:
    """One row: ``ratio`` = median of per-repeat (workbench ÷ reference) ratios."""

    name: str
    ratio: float
    ratios: list[float]
    unit: str = "speed"
    goal: str = ""
    detail: dict[str, Any] = field(default_factory=dict)


def median_ratio(ours: list[float], reference: list[float]) -> tuple[float, list[float]]:
    """Median of per-repeat ratios ``ours[i] / reference[i]`` (paired, measured back to back)."""
    ratios = [a / b for a, b in zip(ours, reference)]
    return statistics.median(ratios), ratios


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def registry() -> dict[str, str]:
    benches = dict(CORE_BENCHES)
    benches.update({ep.name: ep.value for ep in entry_points(group="workbench.benches")})
    return benches


def main(argv: list[str]) -> int:
    from workbench.command import load_object, parse_options

    if argv and argv[0] in ("-h", "--help"):
        print("usage: workbench bench [NAME...] [repeats=N] [quick=true] [out=DIR]")
        print("benchmarks: " + ", ".join(registry()))
        return 0
    names, opts = parse_options(argv, {"repeats": int, "quick": bool, "out": str}, "workbench bench")
    benches = registry()
    for n in names:
        if n not in benches and n != "all":
            raise unknown("benchmark", n, benches)
    selected = list(benches) if not names or "all" in names else names
    quick = opts.get("quick", False)
    repeats = opts.get("repeats", 2 if quick else 3)
    if repeats < 1:
        raise WorkbenchError(f"bad value for 'repeats': {repeats}; must be ≥ 1")
    results: list[BenchResult] = []
    for n in selected:
        print(f"== {n} ...", flush=True)
        rows = load_object(benches[n])(repeats=repeats, quick=quick)
        for r in rows:
            print(f"   {r.name}: {r.ratio:.3f} {r.detail}", flush=True)
        results.extend(rows)
    print()
    print(format_table(results))
    out = Path(opts.get("out", "runs/bench"))
    path = atomic_write_json(out / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json", [asdict(r) for r in results])
    print(f"\nwrote {path}")
    return 0


def format_table(results: list[BenchResult]) -> str:
    lines = [f"{'benchmark':<34} {'ratio':>8}  {'repeats':<24} {'goal':<10} detail"]
    for r in results:
        reps = ",".join(f"{x:.2f}" for x in r.ratios)
        detail = json.dumps(r.detail, default=str)
        lines.append(f"{r.name:<34} {r.ratio:>8.3f}  {reps:<24} {r.goal:<10} {detail}")
    return "\n".join(lines)
