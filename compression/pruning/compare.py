"""``workbench compress compare`` for the pruning protocols (BENCHMARKS.md, Compression):

- ``sglp-fmnist``: resnet56 on Fashion-MNIST; SGLP against the ``last``, ``random`` and ``weight-norm``
  baselines at the same budget (about half of the residual units), short fine-tune;
- ``prune-fmnist``: resnet56 on Fashion-MNIST at 50 % of the MACs; rows ``NAME@SCOPE``: every seed method
  (SFP, SRFP, ASRFP, GHFP, CPMC, PFGDF) at ``scope=internal`` and ``scope=all``, and Torch-Pruning's criteria
  (``tp-l1`` ... ``tp-random``) at ``scope=all``; ``methods=sfp@all,tp-l2@all`` picks rows (a bare name is
  ``@internal``); ``overrides=round_to=8`` rounds the channels of every row;
- ``sglp-cifar10``: the paper protocol (CIFAR-10 resnet56, ~52 % fewer MACs; needs the data and a GPU).

The base models (``base_model=RUN_DIR``, or one ``workbench train`` sub-run per seed, one core sweep over the
seeds), then per seed one sweep of the rows (filter pruning: one per scope), all under ``<compare run>/runs/``
(:func:`compression.compare.sweep_sub_runs`: each sub-run its own process, ``jobs=`` at once); a resumed
compare (``--resume DIR``) reuses every finished sub-run. Settings: the base training takes the
protocol's ``train`` list, the compression sub-runs its preset (``compression/presets/<preset>.yaml``,
the file ``--preset`` reads), then ``overrides``: ``train.KEY=V`` goes to the base training,
``sglp.KEY=V`` / ``prune.KEY=V`` to the compression sub-runs, a plain ``KEY=V`` to every sub-run whose
config has the key (e.g. ``subset=2000``).
Output: ``report.md``/``report.csv`` (mean ± std over seeds, seed count), ``accuracy_vs_macs.png``
and ``summary.json`` with the protocol's goal checks.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from compression.compare import sweep_sub_runs
from compression.pruning import FILTER_METHODS, SGLP_RULES
from workbench.errors import WorkbenchError
from workbench.prune.channels import SCOPES
from workbench.runs import Run, load_config_dict, load_summary

PROTOCOLS: dict[str, dict[str, Any]] = {
    "sglp-fmnist": {
        "family": "sglp",
        "methods": SGLP_RULES,
        "train": ["dataset=fashion-mnist", "model=resnet56", "epochs=10", "lr=0.1", "batch_size=128"],
        "preset": "sglp-fmnist",
    },
    "prune-fmnist": {
        "family": "prune",
        "methods": FILTER_METHODS,
        "train": ["dataset=fashion-mnist", "model=resnet56", "epochs=10", "lr=0.1", "batch_size=128"],
        "preset": "prune-fmnist",
    },
    "sglp-cifar10": {
        "family": "sglp",
        "methods": SGLP_RULES,
        "train": [
            "dataset=cifar10",
            "model=resnet56",
            "epochs=200",
            "lr=0.1",
            "batch_size=128",
            "schedule=multistep",
            "milestones=[100,150]",
            "weight_decay=1e-4",
        ],  # fmt: skip
        "preset": "sglp-cifar10",
    },
}


def prune_rows() -> list[str]:
    """The ``prune-fmnist`` rows: every seed method at both scopes, then the Torch-Pruning criteria at ``all``."""
    seed = [m for m in FILTER_METHODS.names() if not m.startswith("tp-")]
    library = [m for m in FILTER_METHODS.names() if m.startswith("tp-")]
    return [f"{m}@{s}" for m in seed for s in SCOPES] + [f"{m}@all" for m in library]


def split_row(row: str) -> tuple[str, str]:
    """``NAME@SCOPE`` → ``(name, scope)``; a bare name is ``@internal``. Refuses an unknown method or scope."""
    name, _, scope = row.partition("@")
    scope = scope or "internal"
    if name not in FILTER_METHODS:
        FILTER_METHODS[name]  # raises the registry's one-line error with the valid names
    if scope not in SCOPES:
        valid = ", ".join(SCOPES)
        raise WorkbenchError(f"row '{row}': unknown scope '{scope}'; write NAME@SCOPE with scope in {valid}")
    return name, scope


def _keys(schema: type) -> set[str]:
    return {f.name for f in dataclasses.fields(schema)}


def route_overrides(overrides: list[str], schemas: dict[str, type], skip: dict[str, set[str]]) -> dict[str, list[str]]:
    """Split ``overrides`` into per-sub-run lists (see the module docstring); unknown keys raise."""
    routed: dict[str, list[str]] = {name: [] for name in schemas}
    for item in overrides:
        if "=" not in item:
            raise WorkbenchError(f"bad override {item!r}: write key=value, e.g. subset=2000 or train.epochs=2")
        key, value = item.split("=", 1)
        prefix, _, rest = key.partition(".")
        if rest and prefix in schemas:
            routed[prefix].append(f"{rest}={value}")
            continue
        targets = [n for n, s in schemas.items() if key in _keys(s) and key not in skip.get(n, set())]
        if not targets:
            valid = ", ".join(f"{n}.KEY" for n in schemas)
            raise WorkbenchError(f"override '{key}' is a key of no sub-run; use a key of train or {valid}")
        for n in targets:
            routed[n].append(item)
    return routed


def _base_models(cfg: Any, run: Run, train_args: list[str]) -> list[Path]:
    """The base model of every seed: ``base_model`` for all, or one ``workbench train`` sub-run per seed (one
    sweep over the seeds)."""
    if cfg.base_model:
        return [Path(cfg.base_model)] * len(cfg.seeds)
    print(f"training the base models (seeds {list(cfg.seeds)})")
    seeds = ",".join(str(s) for s in cfg.seeds)
    entries = sweep_sub_runs(cfg, run, "base", ["train"], [*train_args, f"device={cfg.device}", f"seed={seeds}"])
    return [Path(e["run_dir"]) for e in entries]


def _row_groups(family: str, methods: list[str]) -> list[tuple[str, list[str], list[str]]]:
    """The rows as sweeps of one seed: ``(name, grid args, rows in grid order)``; SGLP: one sweep over the
    baselines; filter pruning: one sweep over the methods of each scope."""
    if family == "sglp":
        return [("", [f"baseline={','.join(methods)}"], list(methods))]
    by_scope: dict[str, list[str]] = {}
    for row in methods:
        name, scope = split_row(row)
        by_scope.setdefault(scope, []).append(name)
    return [
        (scope, [f"method={','.join(names)}", f"scope={scope}"], [f"{n}@{scope}" for n in names])
        for scope, names in by_scope.items()
    ]


def joint_speedups(
    base_dir: Path,
    outputs: dict[str, Path],
    rows: dict[str, list[dict]],
    batch: int,
    repeats: int,
    fold_batchnorm: bool = False,
) -> None:
    """CPU speed-up of every row's pruned model of one seed over the unpruned one, all measured side by side
    in this process (``cpu_images_per_second`` interleaves them), added to each row's last summary as
    ``cpu_speedup_joint``: the rows compare under one load, where each run's own ``cpu_speedup`` does not."""
    from compression.pipeline import cpu_images_per_second
    from workbench.models.saved import load_model
    from workbench.trained import load_trained

    source = load_trained(str(base_dir))
    models = {"unpruned": source.model}
    for row, out in outputs.items():
        models[row], _ = load_model(out / "checkpoints" / "model.pt")
    speed = cpu_images_per_second(models, source.input_shape, batch, repeats, fold_batchnorm)
    for row in outputs:
        rows[row][-1] = {**rows[row][-1], "cpu_speedup_joint": speed[row] / speed["unpruned"]}


def run_compare(cfg, run: Run) -> dict:
    """Run the protocol's methods over ``cfg.seeds`` and write the table, the plot and the goal checks."""
    from compression.pruning.config import PruneConfig, SGLPConfig
    from workbench.commands.train import TrainCommandConfig
    from workbench.config import resolve_config

    proto = PROTOCOLS[cfg.protocol]
    family = proto["family"]
    if family == "prune":
        methods = [f"{n}@{s}" for n, s in (split_row(m) for m in cfg.methods)] or prune_rows()
    else:
        methods = list(cfg.methods) or list(proto["methods"])
        bad = [m for m in methods if m not in proto["methods"]]
        if bad:
            raise WorkbenchError(
                f"method '{bad[0]}' is not part of {cfg.protocol}; valid: {', '.join(proto['methods'])}"
            )
    schema = SGLPConfig if family == "sglp" else PruneConfig
    routed = route_overrides(list(cfg.overrides), {"train": TrainCommandConfig, family: schema}, {"sglp": {"epochs"}})
    # check every sub-config before any training starts (the model key is filled in per seed)
    resolve_config(TrainCommandConfig, proto["train"] + routed["train"])
    rows: dict[str, list[dict]] = {"unpruned": []}
    rows.update({m: [] for m in methods})
    base_epoch_s: list[float] = []
    for seed, base_dir in zip(cfg.seeds, _base_models(cfg, run, proto["train"] + routed["train"]), strict=True):
        outputs: dict[str, Path] = {}
        for group, row_args, members in _row_groups(family, methods):
            args = [*routed[family], f"seed={seed}", f"device={cfg.device}", f"model={base_dir}", *row_args]
            print(f"[seed {seed}] {family} {', '.join(members)}")
            name = f"seed-{seed}_{family}" + (f"_{group}" if group else "")
            entries = sweep_sub_runs(cfg, run, name, ["compress", family], args, preset=proto["preset"])
            for method, entry in zip(members, entries, strict=True):
                outputs[method] = Path(entry["run_dir"])
        for method in methods:
            rows[method].append(load_summary(outputs[method]) or {})
        summary = rows[methods[-1]][-1]
        if family == "prune":
            sub_cfg = load_config_dict(outputs[methods[-1]])
            joint_speedups(
                base_dir, outputs, rows, sub_cfg["speed_batch"], sub_cfg["speed_repeats"],
                bool(sub_cfg.get("speed_fold_bn", False)),
            )  # fmt: skip
        unpruned = {"test_acc": summary["acc_before"], "macs_ratio": 1.0, "params_after": summary["params_before"]}
        if summary.get("val_acc_before") is not None:
            unpruned["val_acc"] = summary["val_acc_before"]
        rows["unpruned"].append(unpruned)
        from compression.pipeline import epoch_seconds
        from workbench.trained import model_file

        source_summary = Path(model_file(base_dir)).parent.parent / "summary.json"
        if source_summary.is_file():
            import json

            sec = epoch_seconds(json.loads(source_summary.read_text()))
            if sec:
                base_epoch_s.append(sec)
    return _report(cfg, run, family, methods, rows, base_epoch_s)


def _report(cfg, run: Run, family: str, methods: list[str], rows: dict[str, list[dict]], epoch_s: list[float]) -> dict:
    from workbench.io import atomic_write_text
    from workbench.plots import plot_scatter
    from workbench.report import format_mean_std, mean_std, to_csv, to_markdown

    if family == "sglp":
        columns = [
            ("test_acc", "accuracy (%)"), ("acc_after_prune", "acc. before fine-tune"), ("macs_ratio", "MACs kept"),
            ("params_after", "params"), ("units_after", "units kept"), ("analysis_seconds", "analysis (s)"),
        ]  # fmt: skip
    else:
        columns = [
            ("test_acc", "accuracy (%)"), ("acc_drop", "drop (points)"), ("macs_ratio", "MACs kept"),
            ("params_after", "params"), ("cpu_speedup", "CPU speed-up"),
            ("cpu_speedup_joint", "CPU speed-up (joint)"), ("acc_after_prune", "acc. after pruning"),
        ]  # fmt: skip
    if any("val_acc" in r for summaries in rows.values() for r in summaries):
        columns.insert(1, ("val_acc", "val. acc. (%)"))
    header = ["method", "n", *[label for _, label in columns]]
    cells, means = [], {}
    for name, summaries in rows.items():
        line = [name, str(len(summaries))]
        means[name] = {}
        for key, _ in columns:
            vals = [float(s[key]) for s in summaries if isinstance(s.get(key), int | float)]
            three = ("macs_ratio", "cpu_speedup", "cpu_speedup_joint")
            digits = 0 if key == "params_after" else (3 if key in three else 2)
            line.append(format_mean_std(vals, digits) if vals else "")
            if vals:
                means[name][key] = mean_std(vals)
        cells.append(line)
    md = f"{cfg.protocol}: seeds {list(cfg.seeds)} (mean ± std over n seeds)\n\n" + to_markdown(header, cells)
    atomic_write_text(run.dir / "report.md", md)
    atomic_write_text(run.dir / "report.csv", to_csv(header, cells))
    points = {
        name: [(m["macs_ratio"][0], m["test_acc"][0], m["test_acc"][1])]
        for name, m in means.items()
        if "macs_ratio" in m and "test_acc" in m
    }
    plot_scatter(points, run.plots / "accuracy_vs_macs.png", "MACs kept (fraction)", "test accuracy (%)", cfg.protocol)
    summary: dict[str, Any] = {
        "protocol": cfg.protocol,
        "seeds": list(cfg.seeds),
        "methods": methods,
        "table": {n: {k: {"mean": v[0], "std": v[1]} for k, v in m.items()} for n, m in means.items()},
    }
    unpruned = means["unpruned"]["test_acc"][0]
    if family == "sglp" and "sglp" in means:
        sg = means["sglp"]
        from compression.pruning.sglp import SGLPRule

        # sglp-paper is the method too (the paper's settings), not a baseline
        others = [means[m]["test_acc"][0] for m in methods if not isinstance(SGLP_RULES[m], SGLPRule)]
        summary["goal_sglp_at_least_every_baseline"] = all(sg["test_acc"][0] >= o for o in others)
        summary["goal_sglp_within_1_point_of_unpruned"] = unpruned - sg["test_acc"][0] <= 1.0
        if epoch_s and "analysis_seconds" in sg:
            summary["base_epoch_seconds"] = sum(epoch_s) / len(epoch_s)
            summary["goal_analysis_below_one_epoch"] = sg["analysis_seconds"][0] < summary["base_epoch_seconds"]
    elif family == "prune":
        summary["goal_drop_at_most_1_point"] = {
            m: means[m]["acc_drop"][0] <= 1.0 for m in methods if "acc_drop" in means[m]
        }
        summary["goal_cpu_speedup_at_least_1.8_scope_all"] = {
            m: means[m].get("cpu_speedup_joint", means[m].get("cpu_speedup"))[0] >= 1.8
            for m in methods
            if m.endswith("@all") and "cpu_speedup" in means[m]
        }
    run.write_summary(summary)
    print(md)
    return summary
