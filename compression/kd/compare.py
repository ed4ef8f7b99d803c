"""``workbench compress compare protocol=kd-fmnist|cifar100-kd``: the KD family against the student alone.

Per seed: a teacher is trained with ``workbench train`` (or ``base_model=RUN_DIR`` is used for every seed),
then every method runs as an in-process sub-run under ``<compare run>/runs/``. The table gives mean ± std
over seeds of the student's test accuracy (cohort methods: the members' mean; DDNN-EKD: one row per
depth), MACs and parameters, with teacher and student-alone rows; ``plots/accuracy_vs_macs.png`` plots
accuracy against MACs. Finished sub-runs are reused when the compare run is resumed.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from compression import PRESETS_DIR
from compression.kd.registry import KD_METHODS
from workbench.config import resolve_config
from workbench.errors import WorkbenchError
from workbench.io import atomic_write_text
from workbench.report import format_mean_std, mean_std, to_csv, to_markdown
from workbench.runs import Run, create_run, finished_run, load_summary


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


def _teacher(cfg: Any, protocol: Protocol, seed: int, root: Path) -> Path:
    from workbench.commands.train import TrainCommandConfig
    from workbench.commands.train import run as train_run

    found = finished_run(root / "train" / "teacher", seed)
    if found is not None:
        return found
    values = _preset_values(protocol.preset)
    base = [f"{k}={_fmt(v)}" for k, v in values.items() if k in TEACHER_KEYS]
    extra = [o for o in cfg.overrides if o.split("=", 1)[0] in TEACHER_KEYS]
    tcfg = resolve_config(
        TrainCommandConfig,
        [*base, *protocol.teacher, *extra, f"seed={seed}", f"run_root={root}", f"device={cfg.device}"],
    )
    trun = create_run("train", tcfg, "teacher")
    try:
        train_run(tcfg, trun)
    finally:
        trun.close()
    return trun.dir


def _fmt(v: Any) -> str:
    if isinstance(v, list):
        return "[" + ",".join(map(str, v)) + "]"
    return "null" if v is None else str(v)


def _method_run(cfg: Any, protocol: Protocol, method: str, seed: int, teacher: Path | None, root: Path) -> dict:
    from compression.kd.config import KDConfig
    from compression.kd.run import run_kd

    found = finished_run(root / "compress" / method, seed)
    if found is not None:
        return load_summary(found) or {}
    overrides = [f"method={method}", f"seed={seed}", f"run_root={root}", f"device={cfg.device}"]
    if teacher is not None:
        overrides.append(f"teacher={teacher}")
    overrides += [*protocol.method_overrides.get(method, ()), *cfg.overrides]
    kcfg = resolve_config(KDConfig, overrides, preset=protocol.preset, presets_dir=PRESETS_DIR)
    krun = create_run("compress", kcfg, method)
    try:
        return run_kd(kcfg, krun)
    finally:
        krun.close()


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
    root = run.dir / "runs"
    needs_teacher = any(m in _teacher_methods() for m in methods)
    if cfg.base_model:
        from workbench.trained import train_run_model_file

        train_run_model_file(cfg.base_model, "teacher")
    results: dict[str, list[dict]] = {m: [] for m in methods}
    teachers: dict[str, dict] = {}  # one entry per distinct teacher run (base_model: one for every seed)
    for seed in cfg.seeds:
        teacher: Path | None = None
        if needs_teacher:
            teacher = Path(cfg.base_model) if cfg.base_model else _teacher(cfg, protocol, seed, root)
            teachers[str(teacher)] = load_summary(teacher) or {}
        for method in methods:
            print(f"[compare] seed {seed}: {method}", flush=True)
            results[method].append(_method_run(cfg, protocol, method, seed, teacher, root))
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
