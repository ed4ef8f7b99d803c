"""The bodies of ``workbench compress sglp`` and ``workbench compress prune``, each prepare → method → report
on the shared pipeline (``compression.pipeline``: source model → compress → fine-tune → save → summary).

The method is looked up in its registry (``SGLP_RULES[cfg.baseline]``, ``FILTER_METHODS[cfg.method]``);
the compressed model is saved with ``workbench.models.saved.save_model`` (``workbench eval model=RUN_DIR``
loads it) beside a before/after ``summary.json``. Method logic: ``compression.pruning.sglp`` and
``compression.pruning.filters``.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from compression.kd.kd import KDObjective
from compression.pipeline import (
    PRUNED_FILE,
    Splits,
    accuracy,
    base_spec,
    cpu_images_per_second,
    epoch_seconds,
    fine_tune,
    finish,
    load_data,
    save_outputs,
    val_accuracy,
    val_fields,
)
from compression.pruning import FILTER_METHODS, SGLP_RULES, sglp
from compression.pruning import filters as fp
from compression.pruning.config import PruneConfig, SGLPConfig
from workbench.device import choose_device
from workbench.errors import WorkbenchError
from workbench.flops import model_cost
from workbench.models import frozen_copy
from workbench.runs import Run
from workbench.trained import TrainedModel, load_trained


@dataclass
class Prepared:
    """The source step: the trained model on its device, its data and its cost and accuracy before."""

    cfg: Any
    run: Run
    device: torch.device
    source: TrainedModel
    model: nn.Module
    shape: tuple[int, ...]
    data: Splits
    cost_before: dict[str, int]


def _source(cfg: Any, run: Run) -> tuple[torch.device, TrainedModel, nn.Module, tuple[int, ...]]:
    device = choose_device(cfg.device)
    source = load_trained(cfg.model)
    return device, source, source.model.to(device), source.input_shape


def _resumable(run: Run) -> bool:
    return run.resumed and (run.checkpoints / PRUNED_FILE).is_file()


# --- workbench compress sglp ------------------------------------------------------------------------------


def run_sglp(cfg: SGLPConfig, run: Run) -> dict:
    """Analyse, select, remove, fine-tune, save (module docstring of ``compression.pruning.sglp``)."""
    prep, units, remove, macs = prepare_sglp(cfg, run)
    if _resumable(run):
        pruned, _ = _load_pruned(run)
        info = json.loads((run.checkpoints / "selection.json").read_text())
    else:
        pruned, info = select_and_remove(prep, units, remove, macs)
    return report_sglp(prep, pruned, info)


def _load_pruned(run: Run) -> tuple[nn.Module, dict]:
    from workbench.models.saved import load_model

    return load_model(run.checkpoints / PRUNED_FILE)


def prepare_sglp(cfg: SGLPConfig, run: Run) -> tuple[Prepared, list[str], int, dict[str, int]]:
    """The source model, its prunable units and their MACs, the number of units to remove, the data."""
    device, source, model, shape = _source(cfg, run)
    units = sglp.prunable_units(model, shape)
    cost_before = model_cost(model, shape)
    macs = sglp.unit_macs(model, units, shape)
    if cfg.target_macs:
        remove, _ = sglp.units_for_target(cost_before["macs"], macs, cfg.target_macs, units)
    else:
        remove = len(units) - round(cfg.keep_units * len(units))
    if remove <= 0:
        budget = f"target_macs={cfg.target_macs}" if cfg.target_macs else f"keep_units={cfg.keep_units}"
        raise WorkbenchError(f"{budget} keeps all {len(units)} prunable units; ask for a smaller model")
    data = load_data(cfg, source.spec, cfg.seed, source.trained_on)
    return Prepared(cfg, run, device, source, model, shape, data, cost_before), units, remove, macs


def select_and_remove(prep: Prepared, units: list[str], remove: int, macs: dict[str, int]) -> tuple[nn.Module, dict]:
    """The method: the rule's selection at the budget, the units removed; saved so that --resume skips it."""
    from workbench.io import atomic_write_json
    from workbench.models.saved import save_model

    cfg, run, model, device, data = prep.cfg, prep.run, prep.model, prep.device, prep.data
    acc_before = accuracy(model, data.test, device, cfg.eval_batch_size)
    val_before = val_accuracy(model, data.val, device, cfg.eval_batch_size)
    start = time.perf_counter()
    select = SGLP_RULES[cfg.baseline].selector(sglp.SelectionJob(cfg, model, units, data.plain, device))
    selection = select(remove)
    if cfg.target_macs:
        total = prep.cost_before["macs"]
        while total - sum(macs[u] for u in selection.removed) > cfg.target_macs * total and remove < len(units):
            remove += 1
            selection = select(remove)
    analysis_seconds = time.perf_counter() - start
    pruned = sglp.pruned_copy(model, selection.removed, prep.shape)
    acc_prune = accuracy(pruned, data.test, device, cfg.eval_batch_size)
    val_prune = val_accuracy(pruned, data.val, device, cfg.eval_batch_size)
    info = {
        "rule": selection.rule,
        "units": selection.units,
        "kept": selection.kept,
        "removed": selection.removed,
        "segments": [list(b) for b in selection.segments],
        "keep_per_segment": selection.keep_per_segment,
        "cka": selection.cka.tolist() if selection.cka is not None else None,
        "scores": selection.scores,
        "evaluations": selection.evaluations,
        "acc_before": acc_before,
        "acc_after_prune": acc_prune,
        "val_acc_before": val_before,
        "val_acc_after_prune": val_prune,
        "analysis_seconds": analysis_seconds,
    }
    removed_all = list(prep.source.spec.get("removed_units") or []) + selection.removed
    if run.is_main:
        save_model(run.checkpoints / PRUNED_FILE, pruned, base_spec(prep.source, removed_units=removed_all))
        atomic_write_json(run.checkpoints / "selection.json", info)
    if info["cka"] is not None and run.is_main:
        _plot_segments(run, selection, units)
    run.logger.scalars(
        {
            "sglp/units_after": len(selection.kept),
            "sglp/analysis_seconds": analysis_seconds,
            "acc/before": acc_before,
            "acc/after_prune": acc_prune,
        },
        0,
    )
    print(
        f"{cfg.baseline}: removed {len(selection.removed)} of {len(units)} units {selection.removed}; "
        f"accuracy {acc_before:.2f}% -> {acc_prune:.2f}% before fine-tuning ({analysis_seconds:.1f} s analysis)"
    )
    return pruned, info


def _plot_segments(run: Run, selection: sglp.Selection, units: list[str]) -> None:
    from workbench.plots import plot_matrix

    plot_matrix(
        selection.cka,
        run.plots / "cka_segments.png",
        title=f"linear CKA of {len(units)} units; segments (red), kept units (white)",
        xlabel="unit",
        ylabel="unit",
        boundaries=[a for a, _ in selection.segments[1:]],
        marks=[units.index(u) for u in selection.kept],
        fmt="{:.2f}" if len(units) <= 12 else None,
        vmin=0.0,
        vmax=1.0,
    )


def report_sglp(prep: Prepared, pruned: nn.Module, info: dict) -> dict:
    """Fine-tune (CE, or KD from the unpruned model), save, summarise."""
    cfg, run, device, data, source = prep.cfg, prep.run, prep.device, prep.data, prep.source
    objective = None
    if cfg.recovery == "kd":
        objective = KDObjective(frozen_copy(source.model), cfg.kd_T, cfg.kd_gamma, cfg.kd_alpha)
    acc_ft = info["acc_after_prune"]
    history: list[dict] = []
    if cfg.finetune_epochs > 0:
        trainer = fine_tune(pruned, cfg, cfg.finetune_epochs, data.train, data.test, device, run, cfg.seed, objective)
        history = trainer.history
        acc_ft = accuracy(pruned, data.test, device, cfg.eval_batch_size)
    val_ft = val_accuracy(pruned, data.val, device, cfg.eval_batch_size)
    cost_before, cost_after = prep.cost_before, model_cost(pruned, prep.shape)
    removed_all = list(source.spec.get("removed_units") or []) + info["removed"]
    spec = base_spec(source, removed_units=removed_all, compressed_by=f"sglp:{cfg.baseline}")
    save_outputs(run, {"model.pt": pruned}, spec, history, "finetune_curve.png", f"fine-tuning after {cfg.baseline}")
    summary = {
        "command": "compress sglp",
        "method": cfg.baseline if isinstance(SGLP_RULES[cfg.baseline], sglp.SGLPRule) else f"baseline-{cfg.baseline}",
        "baseline": cfg.baseline,
        "source": str(source.path),
        "dataset": source.spec["dataset"],
        "model": source.spec["name"],
        "seed": cfg.seed,
        "units_before": len(info["units"]),
        "units_after": len(info["kept"]),
        "units_removed": len(info["removed"]),
        "kept_units": info["kept"],
        "removed_units": info["removed"],
        "segments": [info["units"][a:b] for a, b in info["segments"]],
        "num_segments": len(info["segments"]),
        "keep_per_segment": info["keep_per_segment"],
        "macs_before": cost_before["macs"],
        "macs_after": cost_after["macs"],
        "macs_ratio": cost_after["macs"] / cost_before["macs"],
        "params_before": cost_before["params"],
        "params_after": cost_after["params"],
        "acc_before": info["acc_before"],
        "acc_after_prune": info["acc_after_prune"],
        "acc_after_finetune": acc_ft,
        "test_acc": acc_ft,
        **val_fields(data.val, info.get("val_acc_before"), info.get("val_acc_after_prune"), val_ft),
        "finetune_epochs": cfg.finetune_epochs,
        "recovery": cfg.recovery,
        "analysis_seconds": round(info["analysis_seconds"], 3),
        "importance_evaluations": info["evaluations"],
        "source_epoch_seconds": epoch_seconds(source.run_summary),
    }
    message = (
        f"units {summary['units_before']} -> {summary['units_after']}, MACs x{summary['macs_ratio']:.3f}, "
        f"accuracy {summary['acc_before']:.2f}% -> {summary['acc_after_prune']:.2f}% (pruned) -> "
        f"{acc_ft:.2f}% (fine-tuned)"
    )
    return finish(run, summary, message)


# --- workbench compress prune -----------------------------------------------------------------------------


def run_prune(cfg: PruneConfig, run: Run) -> dict:
    """Budget → method → physical removal → report (module docstring of ``compression.pruning.filters``)."""
    job, prep, before = prepare_prune(cfg, run)
    original = copy.deepcopy(prep.model).cpu()  # a mask method trains the model in place
    outcome = FILTER_METHODS[cfg.method].compress(job)
    return report_prune(prep, job, original, before, outcome)


def prepare_prune(cfg: PruneConfig, run: Run) -> tuple[fp.FilterJob, Prepared, dict[str, float | None]]:
    """The source model, its prunable layers, the method's knob and plan for the budget, the data, the
    accuracy before."""
    device, source, model, shape = _source(cfg, run)
    groups = fp.prunable_groups(model, shape, cfg.scope)
    layers = list(groups)
    method = FILTER_METHODS[cfg.method]
    data = None
    if method.needs_data:  # a criterion from gradients (tp-taylor) reads training batches before the budget
        data = load_data(cfg, source.spec, cfg.seed, source.trained_on)
        method.prepare(model, data, cfg, device)
    knob, plan, _, _ = fp.fit_budget(
        model, cfg.method, layers, shape, cfg.target_macs, cfg.criterion, cfg.cpmc_combine, cfg.cpmc_weights,
        groups=groups, round_to=cfg.round_to, method_options=fp.method_values(cfg),
    )  # fmt: skip
    if data is None:
        data = load_data(cfg, source.spec, cfg.seed, source.trained_on)
    prep = Prepared(cfg, run, device, source, model, shape, data, model_cost(model, shape))
    before = {
        "acc": accuracy(model, data.test, device, cfg.eval_batch_size),
        "val": val_accuracy(model, data.val, device, cfg.eval_batch_size),
    }
    job = fp.FilterJob(cfg, run, device, source, model, shape, layers, knob, plan, data, groups, cfg.round_to)
    return job, prep, before


def report_prune(
    prep: Prepared, job: fp.FilterJob, original: nn.Module, before: dict, outcome: fp.FilterOutcome
) -> dict:
    """CPU speed before/after, save, summarise."""
    cfg, run, device, data, source = prep.cfg, prep.run, prep.device, prep.data, prep.source
    pruned, plan = outcome.pruned, outcome.plan
    cost_before, cost_after = prep.cost_before, model_cost(pruned, prep.shape)
    speed = cpu_images_per_second(
        {"before": original, "after": pruned}, prep.shape, cfg.speed_batch, cfg.speed_repeats, cfg.speed_fold_bn
    )
    save_outputs(
        run,
        {"model.pt": pruned},
        base_spec(source, compressed_by=f"prune:{cfg.method}"),
        outcome.history,
        "training_curve.png",
        f"{cfg.method} on {source.spec['name']}",
    )
    acc_before, acc_final = before["acc"], outcome.acc_final
    summary = {
        "command": "compress prune",
        "method": cfg.method,
        "source": str(source.path),
        "dataset": source.spec["dataset"],
        "model": source.spec["name"],
        "seed": cfg.seed,
        "target_macs": cfg.target_macs,
        "scope": cfg.scope,
        "round_to": cfg.round_to,
        "layers": len(job.layers),
        "coupled_layers": sum(len(m) for m in (job.groups or {}).values()) or len(job.layers),
        "pruned_fraction": fp.pruned_fraction(plan, original, job.layers),
        "channels_removed": sum(len(v) for v in plan.values()),
        "macs_before": cost_before["macs"],
        "macs_after": cost_after["macs"],
        "macs_ratio": cost_after["macs"] / cost_before["macs"],
        "params_before": cost_before["params"],
        "params_after": cost_after["params"],
        "acc_before": acc_before,
        "acc_after_prune": outcome.acc_after_prune,
        "acc_after": acc_final,
        "test_acc": acc_final,
        "acc_drop": acc_before - acc_final,
        **val_fields(
            data.val,
            before["val"],
            outcome.val_after_prune,
            val_accuracy(pruned, data.val, device, cfg.eval_batch_size),
        ),
        "epochs": cfg.epochs,
        "finetune_epochs": cfg.finetune_epochs,
        "cpu_images_per_s_before": speed["before"],
        "cpu_images_per_s_after": speed["after"],
        "cpu_speedup": speed["after"] / speed["before"],
        **outcome.extra,
    }
    params_ratio = cost_after["params"] / cost_before["params"]
    message = (
        f"{cfg.method}@{cfg.scope}: MACs x{summary['macs_ratio']:.3f}, params x{params_ratio:.3f}, "
        f"accuracy {acc_before:.2f}% -> {acc_final:.2f}%, CPU speed-up x{summary['cpu_speedup']:.2f}"
    )
    return finish(run, summary, message)
