"""``workbench compress compare protocol=kd-fmnist|cifar100-kd``: the KD family against the student alone.

The teachers are trained first with ``workbench train``, one core sweep over the seeds (or ``base_model=RUN_DIR``
is used for every seed), then per seed one sweep of the methods with ``teacher=`` that seed's teacher
(:func:`compression.compare.sweep_sub_runs`: each sub-run its own process, ``jobs=`` at once, all under
``<compare run>/runs/``). The table gives mean ± std
over seeds of the student's test accuracy (cohort methods: the members' mean; DDNN-EKD: one row per
depth), MACs and parameters, with teacher and student-alone rows; ``plots/accuracy_vs_macs.png`` plots
accuracy against MACs. Finished sub-runs are reused when the compare run is resumed.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from compression import PRESETS_DIR
from compression.compare import sweep_sub_runs
from compression.kd.registry import KD_METHODS
from workbench.errors import WorkbenchError
from workbench.io import atomic_write_text
from workbench.report import format_mean_std, mean_std, to_csv, to_markdown
from workbench.runs import Run, load_summary


@dataclasses.dataclass(frozen=True)
class Protocol:
    preset: str  # KD preset (compression/presets/<preset>.yaml) shared by every method
    teacher: tuple[str, ...]  # `workbench train` overrides of the teacher (the data/loop keys come from the preset)
    method_overrides: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)


PROTOCOLS: dict[str, Protocol] = {
    "kd-fmnist": Protocol(
        "kd-fmnist",
        ("model=small_cnn", "epochs=20"),  # the teacher trains 4x longer than the students
        # DDNN-EKD needs a residual network whose stages can be cut short.
        {"ddnn-ekd": ("student=resnet20", "student_widths=[]")},
    ),
    "cifar100-kd": Protocol("kd-cifar100-resnet8x4", ("model=resnet32x4",)),
}

TEACHER_KEYS = (
    "dataset", "data_root", "download", "subset", "test_subset", "augment", "epochs", "batch_size", "optimizer",
    "lr", "momentum", "nesterov", "weight_decay", "schedule", "milestones", "step_size", "gamma", "warmup_epochs",
    "precision", "eval_every", "eval_batch_size", "num_workers", "progress", "device",
)  # fmt: skip


def _teacher_methods() -> tuple[str, ...]:
    return tuple(n for n, m in KD_METHODS.items() if m.needs_teacher)


def _preset_values(preset: str) -> dict[str, Any]:
    import yaml

    return yaml.safe_load((PRESETS_DIR / f"{preset}.yaml").read_text()) or {}


def _teachers(cfg: Any, protocol: Protocol, run: Run) -> list[Path]:
    """One teacher per seed: ``base_model`` for all, or a ``workbench train`` sub-run per seed (one core sweep
    over the seeds) with the preset's data/loop keys, the protocol's teacher keys and matching overrides."""
    if cfg.base_model:
        return [Path(cfg.base_model)] * len(cfg.seeds)
    values = _preset_values(protocol.preset)
    base = [f"{k}={_fmt(v)}" for k, v in values.items() if k in TEACHER_KEYS]
    extra = [o for o in cfg.overrides if o.split("=", 1)[0] in TEACHER_KEYS]
    seeds = ",".join(str(s) for s in cfg.seeds)
    args = [*base, *protocol.teacher, *extra, f"seed={seeds}", f"device={cfg.device}"]
    print(f"training the teachers (seeds {list(cfg.seeds)})", flush=True)
    return [Path(e["run_dir"]) for e in sweep_sub_runs(cfg, run, "teachers", ["train"], args)]


def _fmt(v: Any) -> str:
    if isinstance(v, list):
        return "[" + ",".join(map(str, v)) + "]"
    return "null" if v is None else str(v)


def _method_groups(protocol: Protocol, methods: list[str]) -> list[tuple[tuple[str, ...], list[str]]]:
    """The methods as sweeps of one seed: those with the same protocol overrides share a sweep (in order)."""
    groups: dict[tuple[str, ...], list[str]] = {}
    for m in methods:
        groups.setdefault(tuple(protocol.method_overrides.get(m, ())), []).append(m)
    return list(groups.items())


def _method_runs(cfg: Any, protocol: Protocol, methods: list[str], seed: int, teacher: Path | None, run: Run):
    """Every method of one seed as ``workbench compress kd`` runs of the core sweep: ``{method: run dir}``."""
    out: dict[str, Path] = {}
    for i, (extra, members) in enumerate(_method_groups(protocol, methods)):
        args = [f"method={','.join(members)}", f"seed={seed}", f"device={cfg.device}"]
        if teacher is not None:
            args.append(f"teacher={teacher}")
        args += [*extra, *cfg.overrides]
        print(f"[compare] seed {seed}: {', '.join(members)}", flush=True)
        name = f"seed-{seed}" + (f"_{i}" if i else "")
        entries = sweep_sub_runs(cfg, run, name, ["compress", "kd"], args, preset=protocol.preset)
        out.update({m: Path(e["run_dir"]) for m, e in zip(members, entries, strict=True)})
    return out


def _rows(results: dict[str, list[dict]], teachers: list[dict]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []

    def add(label: str, accs: list[float], macs: float, params: float, **extra: Any) -> None:
        if accs:
            mean, std = mean_std(accs)
            rows.append({"row": label, "n": len(accs), "acc_mean": mean, "acc_std": std, "acc": accs,
                         "macs": macs, "params": params, **extra})  # fmt: skip

    # The teacher row: its accuracy on the students' test set, as the KD sub-runs measured it.
    # Keyed by (teacher, seed): each seed may evaluate on its own stratified test subset.
    measured = {
        (s["teacher_dir"], s["seed"]): s for m in _teacher_methods() for s in results.get(m, []) if "teacher_acc" in s
    }
    if measured:
        first = next(iter(measured.values()))
        accs = [s["teacher_acc"] for s in measured.values()]
        add(f"teacher ({first['teacher']})", accs, first["teacher_macs"], first["teacher_params"])
    elif teachers:
        add(f"teacher ({teachers[0].get('model')})", [t["test_acc"] for t in teachers], teachers[0]["macs"],
            teachers[0]["params"])  # fmt: skip
    for method, sums in results.items():
        if not sums:
            continue
        label = "student alone" if method == "student" else method
        if method == "ddnn-ekd":
            for depth in sums[0]["depths"]:
                d = [s["depths"][depth] for s in sums]
                add(f"{label} {depth}", [x["acc"] for x in d], d[0]["macs"], d[0]["params"])
            continue
        extra = {}
        if "member_acc" in sums[0]:
            extra = {"best_member": [s["best_member_acc"] for s in sums], "ensemble": [s["ensemble_acc"] for s in sums]}
        add(label, [s["student_acc"] for s in sums], sums[0]["macs"], sums[0]["params"], **extra)
    return rows


def _table(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    base = next((r for r in rows if r["row"] == "student alone"), None)
    header = ["method", "n", "test acc (%)", "Δ vs student alone", "MACs", "params", "notes"]
    cells = []
    for r in rows:
        delta = f"{r['acc_mean'] - base['acc_mean']:+.2f}" if base and not r["row"].startswith("teacher") else ""
        notes = ""
        if "best_member" in r:
            notes = f"best member {format_mean_std(r['best_member'])}, ensemble {format_mean_std(r['ensemble'])}"
        cells.append([r["row"], str(r["n"]), format_mean_std(r["acc"]), delta, f"{r['macs']:,}", f"{r['params']:,}",
                      notes])  # fmt: skip
    return header, cells


def run_compare(cfg: Any, run: Run) -> dict:
    """Run protocol ``cfg.protocol`` for ``cfg.methods`` × ``cfg.seeds``; write the table and the plot."""
    from workbench.plots import plot_scatter

    protocol = PROTOCOLS[cfg.protocol]
    all_methods = KD_METHODS.names()
    methods = list(cfg.methods) or list(all_methods)
    bad = [m for m in methods if m not in all_methods]
    if bad:
        raise WorkbenchError(f"unknown method '{bad[0]}' for protocol {cfg.protocol}; valid: {', '.join(all_methods)}")
    if not cfg.seeds:
        raise WorkbenchError("seeds must name at least one seed, e.g. seeds=0,1,2")
    needs_teacher = any(m in _teacher_methods() for m in methods)
    if cfg.base_model:
        from workbench.trained import train_run_model_file

        train_run_model_file(cfg.base_model, "teacher")
    results: dict[str, list[dict]] = {m: [] for m in methods}
    teachers: dict[str, dict] = {}  # one entry per distinct teacher run (base_model: one for every seed)
    teacher_dirs = _teachers(cfg, protocol, run) if needs_teacher else [None] * len(cfg.seeds)
    for seed, teacher in zip(cfg.seeds, teacher_dirs, strict=True):
        if teacher is not None:
            teachers[str(teacher)] = load_summary(teacher) or {}
        for method, sub_dir in _method_runs(cfg, protocol, methods, seed, teacher, run).items():
            results[method].append(load_summary(sub_dir) or {})
    rows = _rows(results, [t for t in teachers.values() if "test_acc" in t])
    header, cells = _table(rows)
    md = to_markdown(header, cells)
    title = f"{cfg.protocol}: seeds {','.join(map(str, cfg.seeds))}; mean ± std (sample std) of test accuracy"
    if run.is_main:
        atomic_write_text(run.dir / "report.md", f"# {title}\n\n{md}")
        atomic_write_text(run.dir / "report.csv", to_csv(header, cells))
        points = {r["row"]: [(r["macs"], r["acc_mean"], r["acc_std"])] for r in rows}
        plot_scatter(points, run.plots / "accuracy_vs_macs.png", "MACs per image", "test accuracy (%)", cfg.protocol)
        print(f"\n{title}\n\n{md}")
    summary = {"command": "compare", "protocol": cfg.protocol, "seeds": list(cfg.seeds), "methods": methods,
               "rows": rows}  # fmt: skip
    run.write_summary(summary)
    return summary
