"""``workbench report PATH... [out=DIR]``: one table of the runs under the paths, seeds aggregated.

Runs whose resolved configs differ only in ``seed`` (and bookkeeping keys such as ``name``, ``run_root``,
``device``) form one row; each numeric summary value is shown as mean ± std with the seed count.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from workbench.config import flatten_dict
from workbench.errors import WorkbenchError
from workbench.io import atomic_write_text
from workbench.runs import find_runs, load_config_dict, load_summary

IGNORED_KEYS = {"seed", "name", "run_root", "device", "progress", "num_workers", "data_root"}


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, std


def format_mean_std(values: Sequence[float], digits: int = 2) -> str:
    mean, std = mean_std(values)
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def group_runs(paths: Sequence[str | Path]) -> list[dict[str, Any]]:
    """Group runs that differ only by seed; returns rows with ``config``, ``seeds`` and ``summaries``."""
    groups: dict[str, dict[str, Any]] = {}
    for run_dir in find_runs(list(paths)):
        cfg = flatten_dict(load_config_dict(run_dir))
        key_cfg = {k: v for k, v in cfg.items() if k not in IGNORED_KEYS}
        key = json.dumps(key_cfg, sort_keys=True, default=str)
        row = groups.setdefault(key, {"config": key_cfg, "seeds": [], "summaries": [], "dirs": []})
        row["seeds"].append(cfg.get("seed"))
        row["summaries"].append(load_summary(run_dir))
        row["dirs"].append(str(run_dir))
    return list(groups.values())


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def build_table(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Header and cells: the config keys that vary between rows, ``n``, then every numeric summary key."""
    if not rows:
        raise WorkbenchError("no runs found (folders with summary.json and config.yaml) under the given paths")
    keys = sorted({k for r in rows for k in r["config"]})
    varying = [k for k in keys if len({json.dumps(r["config"].get(k), default=str) for r in rows}) > 1]
    if not varying:
        varying = [k for k in ("command", "method", "dataset", "model") if k in keys][:2]
    metric_keys: list[str] = []
    for r in rows:
        for s in r["summaries"]:
            for k, v in s.items():
                if _is_number(v) and k not in metric_keys and k not in ("seed",):
                    metric_keys.append(k)
    header = [*varying, "n", *metric_keys]
    cells = []
    for r in rows:
        line = [str(r["config"].get(k, "")) for k in varying] + [str(len(r["seeds"]))]
        for k in metric_keys:
            vals = [s[k] for s in r["summaries"] if _is_number(s.get(k))]
            line.append(format_mean_std(vals) if vals else "")
        cells.append(line)
    return header, cells


def to_markdown(header: list[str], cells: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(c) + " |" for c in cells]
    return "\n".join(lines) + "\n"


def to_csv(header: list[str], cells: list[list[str]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows(cells)
    return buf.getvalue()


def write_report(paths: Sequence[str | Path], out: str | Path) -> tuple[Path, Path, str]:
    """Write ``report.md`` and ``report.csv`` into ``out``; returns their paths and the Markdown."""
    header, cells = build_table(group_runs(paths))
    md = to_markdown(header, cells)
    out = Path(out)
    md_path = atomic_write_text(out / "report.md", md)
    csv_path = atomic_write_text(out / "report.csv", to_csv(header, cells))
    return md_path, csv_path, md


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: workbench report PATH... [out=DIR]   (default out: the first PATH)")
        return 0
    from workbench.command import parse_options

    paths, opts = parse_options(argv, {"out": str}, "workbench report")
    if not paths:
        raise WorkbenchError("workbench report needs at least one PATH holding run directories")
    out = opts.get("out") or (paths[0] if Path(paths[0]).is_dir() else ".")
    md_path, csv_path, md = write_report(paths, out)
    print(md)
    print(f"wrote {md_path} and {csv_path}")
    return 0
