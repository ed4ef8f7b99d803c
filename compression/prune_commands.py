"""``workbench compress sglp`` (layer pruning) and ``workbench compress prune`` (filter pruning).

Both start from a trained model (``model=RUN_DIR`` of ``workbench train``), refuse bad input in one line
before anything is written, fine-tune with the workbench Trainer, save the compressed model with
``workbench.checkpoint.save_model`` (so ``workbench eval model=RUN_DIR`` loads it) and write a
before/after ``summary.json``. Method logic: ``compression.sglp`` and ``compression.filter_pruning``.
"""

from __future__ import annotations

import dataclasses
import json
import time

from compression.pruning_common import PRUNED_FILE, SourceConfig, model_path
from workbench.config import CommonConfig, opt
from workbench.errors import WorkbenchError
from workbench.runs import Run
from workbench.trainer import TrainerConfig

FINETUNE_FILE = "finetune.pt"  # the trainer checkpoint of the fine-tuning after a mask schedule
SGLP_RULES = ("sglp", "last", "random", "weight-norm")
FILTER_METHODS = ("sfp", "srfp", "asrfp", "ghfp", "cpmc", "pfgdf")


@dataclasses.dataclass
class SGLPConfig(TrainerConfig, SourceConfig, CommonConfig):
    """``workbench compress sglp`` keys. The trainer keys (lr, batch_size, ...) set the fine-tuning."""

    keep_units: float = opt(0.5, "fraction of the prunable residual units to keep (ignored when target_macs > 0)")
    target_macs: float = opt(0.0, "keep at most this fraction of the MACs instead (0 = use keep_units)")
    baseline: str = opt("sglp", "unit selection: sglp (the method) or a baseline at the same budget", SGLP_RULES)
    finetune_epochs: int = opt(20, "fine-tuning epochs after removal (0 = none)")
    epochs: int = opt(0, "not used by sglp: the fine-tuning length is finetune_epochs")
    lr: float = opt(0.01, "fine-tuning learning rate")
    recovery: str = opt("ce", "fine-tuning loss: ce, or kd from the unpruned model", ("ce", "kd"))
    kd_T: float = opt(4.0, "KD temperature (recovery=kd)")
    kd_alpha: float = opt(0.9, "weight of T²·KL (recovery=kd)")
    kd_gamma: float = opt(0.1, "weight of CE (recovery=kd)")
    probe_samples: int = opt(512, "training images in the CKA probe set")
    probe_batch_size: int = opt(128, "batch size of the CKA pass")
    cka_estimator: str = opt(
        "biased", "CKA estimator: full-batch biased (paper) or minibatch unbiased HSIC", ("biased", "unbiased")
    )
    segments: int = opt(0, "number of segments (0 = the largest k whose loss drop exceeds segment_threshold)")
    segment_cost: str = opt(
        "sum_squares",
        "Fisher segmentation cost: sum of squares of the CKA column sums (paper), -mean intra-segment CKA, or "
        "the sum of squares of the units' normalised Gram matrices (sum over a segment of 1 - CKA / its size)",
        ("sum_squares", "neg_mean_cka", "cka_sum_squares"),
    )
    segment_threshold: float = opt(0.05, "loss-drop threshold of the automatic number of segments")
    keep_per_segment: list[int] = opt([], "units kept per segment (default: in proportion to segment size)")
    importance: str = opt(
        "subset", "gradient-norm proxy over candidate subsets, or per unit (cheap)", ("subset", "unit")
    )
    importance_direction: str = opt(
        "min",
        "keep the subset whose pruned net has the smallest gradient norm (trained nets), or the largest",
        ("min", "max"),
    )
    importance_bn: str = opt(
        "train",
        "BatchNorm statistics of the gradient-norm proxy: the candidate's own batch statistics (train), or the "
        "unpruned net's running ones (eval)",
        ("eval", "train"),
    )
    importance_batches: int = opt(2, "training batches B of the gradient-norm proxy")
    importance_batch_size: int = opt(64, "batch size of the gradient-norm proxy")
    subset_cap: int = opt(64, "exhaustive subset search up to this many subsets per segment, greedy above")

    def validate(self) -> None:
        model_path(self.model)
        self.validate_trainer_keys()
        if self.epochs:
            raise WorkbenchError("sglp fine-tunes for finetune_epochs; drop 'epochs' and set finetune_epochs=N")
        if not 0.0 <= self.keep_units < 1.0 and not self.target_macs:
            raise WorkbenchError(f"keep_units={self.keep_units} must be in [0, 1): the fraction of units to keep")
        if not 0.0 <= self.target_macs < 1.0:
            raise WorkbenchError(f"target_macs={self.target_macs} must be in (0, 1): the fraction of MACs to keep")
        if self.finetune_epochs < 0:
            raise WorkbenchError(f"finetune_epochs={self.finetune_epochs} must be >= 0")
        for key in ("probe_samples", "probe_batch_size", "importance_batches", "importance_batch_size", "subset_cap"):
            if getattr(self, key) < 1:
                raise WorkbenchError(f"bad value for '{key}': {getattr(self, key)}; must be >= 1")

    def validate_trainer_keys(self) -> None:
        for key in ("batch_size", "grad_accum", "eval_every", "eval_batch_size", "log_every"):
            if getattr(self, key) < 1:
                raise WorkbenchError(f"bad value for '{key}': {getattr(self, key)}; must be >= 1")
        if self.lr <= 0:
            raise WorkbenchError(f"bad value for 'lr': {self.lr}; must be > 0")


@dataclasses.dataclass
class PruneConfig(TrainerConfig, SourceConfig, CommonConfig):
    """``workbench compress prune`` keys. ``epochs``: training with the mask schedule, or fine-tuning (cpmc, pfgdf)."""

    method: str = opt("sfp", "filter-pruning method", FILTER_METHODS)
    target_macs: float = opt(0.5, "keep at most this fraction of the MACs")
    epochs: int = opt(10, "epochs of training with the mask schedule (sfp family) or of fine-tuning (cpmc, pfgdf)")
    finetune_epochs: int = opt(
        0,
        "epochs of fine-tuning the physically pruned model after the mask schedule; cpmc and pfgdf fine-tune "
        "epochs + finetune_epochs, so every method trains equally long",
    )
    lr: float = opt(0.01, "learning rate")
    criterion: str = opt("l2", "filter norm ranking the sfp family's filters", ("l1", "l2"))
    scale_bn: bool = opt(
        True,
        "mask the coupled BatchNorm weight and bias with the filter, so that the masked "
        "network computes what the pruned one does (the papers scale only the filter)",
    )
    alpha0: float = opt(1.0, "initial decay factor α₀ (srfp, asrfp)")
    decay: str = opt("linear", "decay of α (srfp, asrfp)", ("linear", "power", "constant"))
    asrfp_k: float = opt(4.0, "rate constant k of ASRFP's P_e = P (1 - exp(-k e / T))")
    ghfp_schedule: str = opt("linear", "GHFP's hard share h_e", ("linear", "cubic"))
    cpmc_combine: str = opt("product", "CPMC: product of the normalised criteria, or weighted sum", ("product", "sum"))
    cpmc_weights: list[float] = opt([1.0, 1.0, 1.0], "CPMC weights of weight, MACs and params (combine=sum)")
    speed_batch: int = opt(64, "batch size of the CPU inference-speed measurement")
    speed_repeats: int = opt(5, "repeats of the CPU inference-speed measurement (median)")

    def validate(self) -> None:
        model_path(self.model)
        self.validate_trainer()
        if not 0.0 < self.target_macs < 1.0:
            raise WorkbenchError(f"target_macs={self.target_macs} must be in (0, 1): the fraction of MACs to keep")
        if self.finetune_epochs < 0:
            raise WorkbenchError(f"finetune_epochs={self.finetune_epochs} must be >= 0")
        if len(self.cpmc_weights) != 3:
            raise WorkbenchError(f"cpmc_weights needs 3 values (weight, MACs, params), got {self.cpmc_weights}")
        for key in ("speed_batch", "speed_repeats"):
            if getattr(self, key) < 1:
                raise WorkbenchError(f"bad value for '{key}': {getattr(self, key)}; must be >= 1")


def _resumable(run: Run) -> bool:
    return run.resumed and (run.checkpoints / PRUNED_FILE).is_file()


def run_sglp(cfg: SGLPConfig, run: Run) -> dict:
    """Analyse, select, remove, fine-tune, save (module docstring of ``compression.sglp``)."""

    from compression import sglp
    from compression.pruning_common import (
        DistillRecovery,
        accuracy,
        base_spec,
        epoch_seconds,
        fine_tune,
        load_data,
        load_source,
        val_accuracy,
        val_fields,
    )
    from workbench.checkpoint import load_model, save_model
    from workbench.device import choose_device
    from workbench.flops import model_cost
    from workbench.io import atomic_write_json
    from workbench.plots import plot_matrix
    from workbench.seeding import derive_seed

    device = choose_device(cfg.device)
    source = load_source(cfg.model)
    model, shape = source.model.to(device), source.input_shape
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
    train, plain, test = data.train, data.plain, data.test

    if _resumable(run):
        pruned, _ = load_model(run.checkpoints / PRUNED_FILE)
        info = json.loads((run.checkpoints / "selection.json").read_text())
    else:
        acc_before = accuracy(model, test, device, cfg.eval_batch_size)
        val_before = val_accuracy(model, data.val, device, cfg.eval_batch_size)
        start = time.perf_counter()
        analysis = None
        if cfg.baseline == "sglp":
            probe = sglp.probe_loader(plain, cfg.probe_samples, cfg.probe_batch_size, derive_seed(cfg.seed, "probe"))
            analysis = sglp.analyse(
                model, units, probe, device, cfg.cka_estimator, cfg.segments, cfg.segment_cost, cfg.segment_threshold
            )
            batches = sglp.fixed_batches(
                plain, cfg.importance_batch_size, cfg.importance_batches, derive_seed(cfg.seed, "importance")
            )
            scorer = sglp.SubsetScorer(model, batches, device, cfg.importance_direction, cfg.importance_bn)

        def select(r: int) -> sglp.Selection:
            if analysis is None:
                return sglp.baseline_selection(model, units, r, cfg.baseline, derive_seed(cfg.seed, "random-units"))
            return sglp.sglp_selection(
                model,
                analysis,
                len(units) - r,
                batches,
                device,
                cfg.importance,
                cfg.subset_cap,
                cfg.keep_per_segment,
                scorer,
                cfg.importance_bn,
            )

        selection = select(remove)
        if cfg.target_macs:
            goal = cfg.target_macs * cost_before["macs"]
            while cost_before["macs"] - sum(macs[u] for u in selection.removed) > goal and remove < len(units):
                remove += 1
                selection = select(remove)
        analysis_seconds = time.perf_counter() - start
        pruned = sglp.pruned_copy(model, selection.removed, shape)
        acc_prune = accuracy(pruned, test, device, cfg.eval_batch_size)
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
        removed_all = list(source.spec.get("removed_units") or []) + selection.removed
        if run.is_main:
            save_model(run.checkpoints / PRUNED_FILE, pruned, base_spec(source, removed_units=removed_all))
            atomic_write_json(run.checkpoints / "selection.json", info)
        if info["cka"] is not None and run.is_main:
            kept_idx = [units.index(u) for u in selection.kept]
            plot_matrix(
                selection.cka,
                run.plots / "cka_segments.png",
                title=f"linear CKA of {len(units)} units; segments (red), kept units (white)",
                xlabel="unit",
                ylabel="unit",
                boundaries=[a for a, _ in selection.segments[1:]],
                marks=kept_idx,
                fmt="{:.2f}" if len(units) <= 12 else None,
                vmin=0.0,
                vmax=1.0,
            )
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

    objective = None
    if cfg.recovery == "kd":
        objective = DistillRecovery(source.model, cfg.kd_T, cfg.kd_gamma, cfg.kd_alpha)
    acc_ft = info["acc_after_prune"]
    history: list[dict] = []
    if cfg.finetune_epochs > 0:
        trainer = fine_tune(pruned, cfg, cfg.finetune_epochs, train, test, device, run, cfg.seed, objective)
        history = trainer.history
        acc_ft = accuracy(pruned, test, device, cfg.eval_batch_size)
    val_ft = val_accuracy(pruned, data.val, device, cfg.eval_batch_size)
    cost_after = model_cost(pruned, shape)
    removed_all = list(source.spec.get("removed_units") or []) + info["removed"]
    spec = base_spec(source, removed_units=removed_all, compressed_by=f"sglp:{cfg.baseline}")
    if run.is_main:
        save_model(run.checkpoints / "model.pt", pruned, spec)
    if history and run.is_main:
        from workbench.plots import plot_history

        plot_history(history, run.plots / "finetune_curve.png", title=f"fine-tuning after {cfg.baseline}")
    kept_units = info["kept"]
    summary = {
        "command": "compress sglp",
        "method": "sglp" if cfg.baseline == "sglp" else f"baseline-{cfg.baseline}",
        "baseline": cfg.baseline,
        "source": str(source.path),
        "dataset": source.spec["dataset"],
        "model": source.spec["name"],
        "seed": cfg.seed,
        "units_before": len(info["units"]),
        "units_after": len(kept_units),
        "units_removed": len(info["removed"]),
        "kept_units": kept_units,
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
    run.write_summary(summary)
    print(
        f"units {summary['units_before']} -> {summary['units_after']}, MACs x{summary['macs_ratio']:.3f}, "
        f"accuracy {summary['acc_before']:.2f}% -> {summary['acc_after_prune']:.2f}% (pruned) -> "
        f"{acc_ft:.2f}% (fine-tuned)"
    )
    return summary


def run_prune(cfg: PruneConfig, run: Run) -> dict:
    """Budget → method → physical removal → report (module docstring of ``compression.filter_pruning``)."""
    import copy

    import torch

    from compression import filter_pruning as fp
    from compression.pruning_common import (
        accuracy,
        base_spec,
        cpu_images_per_second,
        fine_tune,
        load_data,
        load_source,
        val_accuracy,
        val_fields,
    )
    from workbench.checkpoint import load_model, save_model
    from workbench.device import choose_device
    from workbench.flops import model_cost
    from workbench.io import atomic_write_json
    from workbench.seeding import derive_seed

    device = choose_device(cfg.device)
    source = load_source(cfg.model)
    model, shape = source.model.to(device), source.input_shape
    layers = fp.prunable_convs(model, shape)
    knob, plan, _, macs_before = fp.fit_budget(
        model, cfg.method, layers, shape, cfg.target_macs, cfg.criterion, cfg.cpmc_combine, cfg.cpmc_weights
    )
    data = load_data(cfg, source.spec, cfg.seed, source.trained_on)
    train, test = data.train, data.test
    cost_before = model_cost(model, shape)
    acc_before = accuracy(model, test, device, cfg.eval_batch_size)
    val_before = val_accuracy(model, data.val, device, cfg.eval_batch_size)
    original = copy.deepcopy(model).cpu()
    extra: dict = {}
    if cfg.method in fp.MASK_METHODS:
        schedule = fp.make_schedule(
            cfg.method,
            knob,
            layers,
            shape,
            cfg.criterion,
            cfg.scale_bn,
            cfg.alpha0,
            cfg.decay,
            cfg.asrfp_k,
            cfg.ghfp_schedule,
        )
        trainer = fine_tune(model, cfg, cfg.epochs, train, test, device, run, cfg.seed, callbacks=[schedule])
        masked = model
        acc_masked = accuracy(masked, test, device, cfg.eval_batch_size)
        plan = schedule.pruning_plan()
        pruned = fp.pruned_copy(masked, plan, shape)
        x = torch.randn(16, *shape, device=device, generator=None)
        with torch.no_grad():
            diff = (masked.eval()(x) - pruned.eval()(x)).abs().max().item()
        acc_prune = accuracy(pruned, test, device, cfg.eval_batch_size)
        val_prune = val_accuracy(pruned, data.val, device, cfg.eval_batch_size)
        acc_final = acc_prune
        extra = {"acc_masked": acc_masked, "max_abs_diff_masked_vs_pruned": diff, "rate": knob}
        history = trainer.history
        if cfg.finetune_epochs:
            tuned = fine_tune(
                pruned, cfg, cfg.finetune_epochs, train, test, device, run, derive_seed(cfg.seed, "finetune"),
                checkpoint_name=FINETUNE_FILE, step_offset=trainer.global_step,
            )  # fmt: skip
            history = history + tuned.history
            acc_final = accuracy(pruned, test, device, cfg.eval_batch_size)
    else:
        if _resumable(run):
            pruned, _ = load_model(run.checkpoints / PRUNED_FILE)
            saved = json.loads((run.checkpoints / "plan.json").read_text())
            acc_prune, plan, val_prune = saved["acc_after_prune"], saved["plan"], saved.get("val_acc_after_prune")
        else:
            pruned = fp.pruned_copy(model, plan, shape)
            acc_prune = accuracy(pruned, test, device, cfg.eval_batch_size)
            val_prune = val_accuracy(pruned, data.val, device, cfg.eval_batch_size)
            if run.is_main:
                save_model(run.checkpoints / PRUNED_FILE, pruned, base_spec(source))
                atomic_write_json(
                    run.checkpoints / "plan.json",
                    {"plan": plan, "acc_after_prune": acc_prune, "val_acc_after_prune": val_prune},
                )
        run.logger.scalars(
            {f"{cfg.method}/pruned_fraction": fp.pruned_fraction(plan, model, layers), "acc/after_prune": acc_prune},
            0,
        )
        trainer = fine_tune(pruned, cfg, cfg.epochs + cfg.finetune_epochs, train, test, device, run, cfg.seed)
        history = trainer.history
        acc_final = accuracy(pruned, test, device, cfg.eval_batch_size)
        extra = {"knob": knob, "knob_name": "global channel share" if cfg.method == "cpmc" else "band k (sigma)"}
    cost_after = model_cost(pruned, shape)
    speed = cpu_images_per_second({"before": original, "after": pruned}, shape, cfg.speed_batch, cfg.speed_repeats)
    if run.is_main:
        save_model(run.checkpoints / "model.pt", pruned, base_spec(source, compressed_by=f"prune:{cfg.method}"))
    if history and run.is_main:
        from workbench.plots import plot_history

        plot_history(history, run.plots / "training_curve.png", title=f"{cfg.method} on {source.spec['name']}")
    summary = {
        "command": "compress prune",
        "method": cfg.method,
        "source": str(source.path),
        "dataset": source.spec["dataset"],
        "model": source.spec["name"],
        "seed": cfg.seed,
        "target_macs": cfg.target_macs,
        "layers": len(layers),
        "pruned_fraction": fp.pruned_fraction(plan, original, layers),
        "channels_removed": sum(len(v) for v in plan.values()),
        "macs_before": cost_before["macs"],
        "macs_after": cost_after["macs"],
        "macs_ratio": cost_after["macs"] / macs_before,
        "params_before": cost_before["params"],
        "params_after": cost_after["params"],
        "acc_before": acc_before,
        "acc_after_prune": acc_prune,
        "acc_after": acc_final,
        "test_acc": acc_final,
        "acc_drop": acc_before - acc_final,
        **val_fields(data.val, val_before, val_prune, val_accuracy(pruned, data.val, device, cfg.eval_batch_size)),
        "epochs": cfg.epochs,
        "finetune_epochs": cfg.finetune_epochs,
        "cpu_images_per_s_before": speed["before"],
        "cpu_images_per_s_after": speed["after"],
        "cpu_speedup": speed["after"] / speed["before"],
        **extra,
    }
    run.write_summary(summary)
    print(
        f"{cfg.method}: MACs x{summary['macs_ratio']:.3f}, params x{cost_after['params'] / cost_before['params']:.3f}, "
        f"accuracy {acc_before:.2f}% -> {acc_final:.2f}%, CPU speed-up x{summary['cpu_speedup']:.2f}"
    )
    return summary
