"""The one supervised training loop of the workbench.

Device choice, bf16/fp16 autocast (GradScaler for fp16), gradient clipping and accumulation, SGD/Adam/AdamW
with step/multistep/cosine schedules and warm-up, optional ``torch.compile`` and channels-last, DDP when
launched by ``torchrun`` (only rank 0 writes), callbacks, periodic evaluation, a progress bar, TensorBoard
scalars, a checkpoint every epoch and on Ctrl-C, and exact resume.

Exactness: the data order of epoch ``e`` comes from a generator seeded by ``(seed, e)`` and the global RNG
is re-seeded from ``(seed, e)`` at the start of each epoch, so a run resumed at an epoch boundary replays
exactly what an uninterrupted run does. A DDP rank takes every ``world``-th index of the same permutation,
so the ranks' batches together are the single-process batch.
"""

from __future__ import annotations

import dataclasses
import math
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from workbench import distributed
from workbench.callbacks import Callback
from workbench.checkpoint import load_checkpoint, save_checkpoint
from workbench.comm import COMM_FORMAT, COMM_HOOKS, SKETCH_VALUES, CommHook, build_hook, validate_comm
from workbench.config import opt
from workbench.data.samplers import SAMPLERS, build_sampler
from workbench.device import PRECISIONS, autocast, grad_scaler
from workbench.errors import WorkbenchError
from workbench.models.features import preserve_modes, unwrap
from workbench.optim import OPTIMIZERS, SCHEDULES, build_optimizer, build_scheduler
from workbench.runs import Run
from workbench.seeding import derive_seed, rng_state, seed_everything, set_rng_state


@dataclasses.dataclass
class TrainerConfig:
    """The training-loop keys shared by every supervised command."""

    epochs: int = opt(10, "training epochs", ge=1)
    batch_size: int = opt(128, "global batch size (split across DDP ranks)", ge=1)
    optimizer: str = opt("sgd", "optimizer", choices=OPTIMIZERS)
    lr: float = opt(0.1, "base learning rate", gt=0)
    momentum: float = opt(0.9, "SGD momentum", ge=0, lt=1, requires={"optimizer": ("sgd",)})
    nesterov: bool = opt(False, "Nesterov momentum (SGD)", requires={"optimizer": ("sgd",)})
    weight_decay: float = opt(5e-4, "weight decay", ge=0)
    schedule: str = opt("cosine", "learning-rate schedule", choices=SCHEDULES)
    milestones: list[int] = opt([], "epochs where multistep multiplies the lr by gamma", ge=1)
    step_size: int = opt(30, "epochs between decays of the step schedule", ge=1)
    gamma: float = opt(0.1, "decay factor of step/multistep", gt=0)
    warmup_epochs: float = opt(0.0, "linear warm-up length in epochs", ge=0)
    grad_clip: float = opt(0.0, "clip the global gradient norm to this value (0 = off)", ge=0)
    grad_accum: int = opt(1, "optimizer step every N batches", ge=1)
    precision: str = opt("fp32", "autocast precision", choices=PRECISIONS)
    compile: bool = opt(False, "torch.compile the model")
    channels_last: bool = opt(False, "channels-last memory format for 4-D inputs")
    eval_every: int = opt(1, "evaluate every N epochs (and after the last)", ge=1)
    eval_batch_size: int = opt(512, "batch size of evaluation", ge=1)
    num_workers: int = opt(0, "DataLoader worker processes", ge=0)
    sampler: str = opt(
        "random",
        "training order: random (a permutation per epoch) or m_per_class (batches of B/m classes x m images)",
        choices=SAMPLERS.names(),
    )
    m_per_class: int = opt(
        4, "images per class in a batch (sampler=m_per_class)", ge=1, requires={"sampler": ("m_per_class",)}
    )
    log_every: int = opt(50, "log training scalars every N optimizer steps", ge=1)
    progress: bool = opt(True, "show a progress bar")
    # --- gradient communication under torchrun (workbench.comm; ignored by single-process runs) ---
    comm_hook: str = opt("none", "DDP gradient communication hook", choices=COMM_HOOKS.names())
    sketch_ratio: float = opt(10.0, "count-sketch: dense ÷ sent numbers per step (sizes unset cols/k)")
    sketch_rows: int = opt(1, "count-sketch: hash rows (estimate = median over rows; ≥ 3 for estimate)")
    sketch_cols: int = opt(0, "count-sketch: columns per row (0 = from sketch_ratio)")
    sketch_k: int = opt(0, "count-sketch: heavy coordinates applied per step (0 = from sketch_ratio)")
    sketch_values: str = opt("exact", "count-sketch: top-k values (2nd all-reduce | estimates)", SKETCH_VALUES)
    sketch_error_feedback: bool = opt(True, "count-sketch: keep what was not applied for later steps")
    sketch_momentum: float | None = opt(None, "count-sketch: momentum kept in the hook (null = take SGD's)")
    sketch_start_iter: int = opt(0, "count-sketch: dense all-reduce for the first N steps")
    powersgd_rank: int = opt(1, "powersgd: rank of the low-rank approximation")
    powersgd_warm_start: bool = opt(True, "powersgd: reuse last step's Q matrices")
    powersgd_start_iter: int = opt(10, "powersgd: dense all-reduce for the first N steps (≥ 2)")
    # --- end of gradient communication keys ---

    def validate_trainer(self) -> None:
        for key in ("epochs", "batch_size", "grad_accum", "eval_every", "eval_batch_size", "log_every"):
            if getattr(self, key) < 1:
                raise WorkbenchError(f"bad value for '{key}': {getattr(self, key)}; must be ≥ 1")
        if self.lr <= 0:
            raise WorkbenchError(f"bad value for 'lr': {self.lr}; must be > 0")
        SAMPLERS[self.sampler]  # an unknown name: the registry's one-line error
        if self.sampler == "m_per_class" and (self.m_per_class < 1 or self.batch_size % self.m_per_class):
            raise WorkbenchError(
                f"sampler=m_per_class: batch_size={self.batch_size} must be a multiple of "
                f"m_per_class={self.m_per_class}"
            )
        validate_comm(self)


@dataclass
class ObjectiveOutput:
    """What an objective returns for one batch: the loss to minimise, logits for accuracy, named terms."""

    loss: torch.Tensor
    logits: torch.Tensor | None = None
    terms: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)


class Objective(nn.Module):
    """The training objective: ``forward(model, inputs, targets) -> ObjectiveOutput``.

    It is a module so that objectives with trainable parts (projectors, auxiliary heads) have their
    parameters optimised and checkpointed with the model. Frozen parts (a teacher) set ``requires_grad``
    to False and are skipped by the optimizer.
    """

    def forward(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> ObjectiveOutput:
        logits = model(inputs)
        return ObjectiveOutput(F.cross_entropy(logits, targets), logits)


@torch.no_grad()
def evaluate_classifier(
    model: nn.Module,
    dataset: Dataset,
    device: torch.device,
    batch_size: int = 512,
    precision: str = "fp32",
    channels_last: bool = False,
    num_workers: int = 0,
) -> dict[str, float]:
    """Top-1 accuracy (%) and mean cross-entropy of ``model`` on ``dataset``."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, correct, count
    with preserve_modes(model, train=False):
        for inputs, targets in loader:
            inputs, targets = _to_device(inputs, device, channels_last), targets.to(device)
            with autocast(device, precision):
                logits = model(inputs)
            sums[0] += F.cross_entropy(logits.float(), targets, reduction="sum")
            sums[1] += (logits.argmax(1) == targets).sum()
            sums[2] += targets.numel()
    loss, correct, total = sums.tolist()
    return {"acc": 100.0 * correct / max(1.0, total), "loss": loss / max(1.0, total)}


def _to_device(x: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


class Trainer:
    """Train ``model`` on ``train_data`` with ``cfg``; evaluate on ``eval_data``; log and checkpoint to ``run``.

    Args:
        model: the network (unwrapped; the trainer adds DDP / compile wrappers itself).
        cfg: loop settings.
        train_data / eval_data: map-style datasets of ``(input, label)``.
        device: where to train.
        run: run directory for logs and checkpoints (``None``: no files written).
        objective: loss computation (default cross-entropy).
        callbacks: hooks for extra losses, mask schedules, logging.
        seed: master seed (data order, per-epoch RNG).
        checkpoint_name: file under the run's ``checkpoints/`` (a second training phase in the same run
            uses its own, e.g. fine-tuning after pruning).
        step_offset: added to the optimizer step in the logs, so a second phase continues the curves.
    """

    def __init__(
        self,
        model: nn.Module,
        cfg: TrainerConfig,
        train_data: Dataset,
        eval_data: Dataset | None = None,
        *,
        device: torch.device,
        run: Run | None = None,
        objective: Objective | None = None,
        callbacks: Sequence[Callback] = (),
        seed: int = 0,
        checkpoint_name: str = "last.pt",
        step_offset: int = 0,
    ) -> None:
        cfg.validate_trainer()
        self.cfg, self.run, self.seed = cfg, run, seed
        self.checkpoint_name, self.step_offset = checkpoint_name, step_offset
        self.device = distributed.local_device(device)
        distributed.init_distributed(self.device)
        self.world, self.rank = distributed.world_size(), distributed.rank()
        self.is_main = self.rank == 0
        if cfg.batch_size % self.world:
            raise WorkbenchError(f"batch_size={cfg.batch_size} must be divisible by the {self.world} DDP processes")
        self.model = model.to(self.device)
        if cfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.objective = (objective or Objective()).to(self.device)
        self.callbacks = list(callbacks)
        self.train_data, self.eval_data = train_data, eval_data
        self.sampler = build_sampler(
            cfg.sampler, train_data, seed, cfg.batch_size, self.rank, self.world, m_per_class=cfg.m_per_class
        )
        self.local_batch = cfg.batch_size // self.world
        self.batches_per_epoch = math.ceil(len(self.sampler) / self.local_batch)
        self.steps_per_epoch = math.ceil(self.batches_per_epoch / cfg.grad_accum)
        momentum, nesterov = self._comm_setup()
        params = list(self.model.parameters()) + list(self.objective.parameters())
        self.optimizer = build_optimizer(params, cfg.optimizer, cfg.lr, cfg.weight_decay, momentum, nesterov)
        self.scheduler = build_scheduler(
            self.optimizer,
            self.steps_per_epoch,
            cfg.epochs,
            cfg.schedule,
            warmup_epochs=cfg.warmup_epochs,
            milestones=cfg.milestones,
            step_size=cfg.step_size,
            gamma=cfg.gamma,
        )
        self.scaler = grad_scaler(self.device, cfg.precision)
        self.train_model = self._wrap(self.model)
        self.epoch = 0  # epochs completed
        self.batch_in_epoch = 0  # batches of the current epoch already trained (mid-epoch checkpoints)
        # the running sums of an epoch interrupted mid-way (loss·n, correct, n; terms·n; seen; seconds), so that
        # the resumed epoch logs the mean over all of its batches, not only those trained after the resume
        self._epoch_partial: dict[str, Any] | None = None
        self.global_step = 0  # optimizer steps
        self.max_epochs = cfg.epochs
        self.should_stop = False
        self.history: list[dict[str, float]] = []
        self._pending_logs: dict[str, float] = {}
        self._interrupt = DeferredInterrupt()

    # ----------------------------------------------------------------- setup
    def _wrap(self, model: nn.Module) -> nn.Module:
        wrapped = model
        if self.world > 1 and any(p.requires_grad for p in model.parameters()):
            ids = [self.device.index] if self.device.type == "cuda" else None
            wrapped = nn.parallel.DistributedDataParallel(model, device_ids=ids)
            self.comm = build_hook(model, self.cfg, derive_seed(self.seed, "comm-hook"))
            self.comm.attach(wrapped)
        if self.cfg.compile:
            wrapped = torch.compile(wrapped)
        return wrapped

    # ----------------------------------------------------------------- gradient communication (workbench.comm)
    def _comm_setup(self) -> tuple[float, bool]:
        """The optimizer's (momentum, nesterov): a hook with momentum correction takes SGD's momentum over."""
        cfg = self.cfg
        self.comm: CommHook | None = None  # built with the DDP wrapper in _wrap
        self._comm_logged = (0, 0, 0)
        if self.world == 1:
            if cfg.comm_hook != "none" and self.is_main:
                print(
                    f"comm_hook={cfg.comm_hook} ignored: single process (it compresses DDP's all-reduce under torchrun)"
                )
            return cfg.momentum, cfg.nesterov
        momentum = COMM_HOOKS[cfg.comm_hook].optimizer_momentum(cfg)
        return momentum, cfg.nesterov and momentum > 0

    def _comm_logs(self) -> dict[str, float]:
        """Bytes one rank handed to collectives per optimizer step since the last call, and dense ÷ sent."""
        if self.comm is None:
            return {}
        c, (sent0, dense0, steps0) = self.comm, self._comm_logged
        self._comm_logged = (c.sent_bytes, c.dense_bytes, c.steps)
        steps = max(1, c.steps - steps0)
        sent, dense = c.sent_bytes - sent0, c.dense_bytes - dense0
        return {
            "comm/bytes_per_step": sent / steps,
            "comm/compression_ratio": dense / max(1, sent),
            "comm/bytes_total": float(c.sent_bytes),
        }

    def comm_summary(self) -> dict[str, Any]:
        """The run's communication numbers for summary.json (empty for single-process runs)."""
        if self.comm is None:
            return {}
        c = self.comm
        return {
            "comm_hook": self.cfg.comm_hook,
            "comm_bytes_per_step": c.sent_bytes / max(1, c.steps),
            "comm_compression_ratio": c.dense_bytes / max(1, c.sent_bytes),
            "comm_bytes_total": c.sent_bytes,
        }

    def _comm_state_path(self, path: Path) -> Path:
        return path.with_name(f"{path.stem}.comm-rank{self.rank}.pt")

    def _save_comm_state(self) -> None:
        """Each rank writes its own hook state (error memory, momentum, PowerSGD's Q) beside the checkpoint."""
        if self.comm is None or not self.comm.stateful or self.checkpoint_path is None:
            return
        payload = {
            "hook": self.cfg.comm_hook,
            "world": self.world,
            "global_step": self.global_step,
            "batch_in_epoch": self.batch_in_epoch,
            "state": self.comm.state_dict(),
        }
        save_checkpoint(self._comm_state_path(self.checkpoint_path), payload, fmt=COMM_FORMAT)

    def _load_comm_state(self, path: Path, state: dict[str, Any]) -> None:
        counters = state.get("comm")
        if self.comm is None:
            return
        if counters is not None:
            self.comm.sent_bytes, self.comm.dense_bytes, self.comm.steps = counters
            self._comm_logged = tuple(counters)
        if not self.comm.stateful:
            return
        side = load_checkpoint(self._comm_state_path(Path(path)), fmt=COMM_FORMAT)
        found = (side["hook"], side["world"], side["global_step"], side["batch_in_epoch"])
        wanted = (self.cfg.comm_hook, self.world, self.global_step, self.batch_in_epoch)
        if found != wanted:
            raise WorkbenchError(
                f"hook state {self._comm_state_path(Path(path))} is (hook, processes, step, batch) = {found}, "
                f"the run needs {wanted}; resume with the comm_hook and process count that wrote it"
            )
        try:
            self.comm.load_state_dict(side["state"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise WorkbenchError(
                f"hook state {path} does not fit this model ({str(exc).splitlines()[0][:120]})"
            ) from None

    # ----------------------------------------------------------------- logging
    def log(self, values: dict[str, float]) -> None:
        """Add scalars to the next logged step (callbacks use this)."""
        self._pending_logs.update(values)

    # ----------------------------------------------------------------- checkpoints
    @property
    def checkpoint_path(self) -> Path | None:
        return None if self.run is None else self.run.checkpoints / self.checkpoint_name

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": unwrap(self.model).state_dict(),
            "objective": self.objective.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "callbacks": [cb.state_dict() for cb in self.callbacks],
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "global_step": self.global_step,
            "rng": rng_state(),
            "history": self.history,
            "epoch_partial": self._epoch_partial if self.batch_in_epoch else None,
            "comm": None if self.comm is None else [self.comm.sent_bytes, self.comm.dense_bytes, self.comm.steps],
        }

    def save_checkpoint(self) -> None:
        self._save_comm_state()
        if self.is_main and self.checkpoint_path is not None:
            save_checkpoint(self.checkpoint_path, self.state_dict())

    def load_checkpoint(self, path: str | Path | None = None) -> None:
        """Restore everything :meth:`state_dict` saved (model, optimizer, scheduler, scaler, RNG, counters)."""
        path = path or self.checkpoint_path
        if path is None:
            raise WorkbenchError("nothing to resume: this trainer has no run directory")
        # RNG states must stay on the CPU; load_state_dict moves model and optimizer tensors itself.
        state = load_checkpoint(path, map_location="cpu")
        try:
            if len(state["callbacks"]) != len(self.callbacks):
                raise ValueError(f"{len(state['callbacks'])} callback states for {len(self.callbacks)} callbacks")
            unwrap(self.model).load_state_dict(state["model"])
            self.objective.load_state_dict(state["objective"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.scaler.load_state_dict(state["scaler"])
            for cb, cb_state in zip(self.callbacks, state["callbacks"]):
                cb.load_state_dict(cb_state)
            self.epoch, self.batch_in_epoch = state["epoch"], state["batch_in_epoch"]
            self.global_step, self.history = state["global_step"], list(state["history"])
            self._epoch_partial = state.get("epoch_partial")
            set_rng_state(state["rng"])
        except (RuntimeError, ValueError, KeyError, TypeError) as exc:
            raise WorkbenchError(
                f"checkpoint {path} does not match this model/config ({str(exc).splitlines()[0][:120]}); "
                "resume with the command and settings that wrote it"
            ) from None
        self._load_comm_state(Path(path), state)
        if self.run is not None:
            self.run.resume_logging_at(self.step_offset + self.global_step)

    # ----------------------------------------------------------------- loop
    def fit(self, resume: bool = False) -> dict[str, float]:
        """Train until ``cfg.epochs`` (or ``should_stop``); returns the last epoch's logs."""
        if resume:
            self.load_checkpoint()
        for cb in self.callbacks:
            cb.on_fit_start(self)
        logs: dict[str, float] = dict(self.history[-1]) if self.history else {}
        with DeferredInterrupt() as interrupt:
            self._interrupt = interrupt
            while self.epoch < self.max_epochs and not self.should_stop:
                logs = self._run_epoch()
        for cb in self.callbacks:
            cb.on_fit_end(self)
        if self.run is not None:
            self.run.logger.flush()
        return logs

    def _batches(self, epoch: int, start_batch: int) -> DataLoader:
        self.sampler.set_epoch(epoch, start_batch * self.local_batch)
        return DataLoader(
            self.train_data,
            batch_size=self.local_batch,
            sampler=self.sampler,
            num_workers=self.cfg.num_workers,
            pin_memory=self.device.type == "cuda",
            drop_last=False,
            generator=torch.Generator().manual_seed(derive_seed(self.seed, "workers", epoch)),
        )

    def _run_epoch(self) -> dict[str, float]:
        epoch, cfg = self.epoch, self.cfg
        if self.batch_in_epoch == 0:
            seed_everything(derive_seed(self.seed, "epoch", epoch))
        self.train_model.train()
        for cb in self.callbacks:
            cb.on_epoch_start(self, epoch)
        loader = self._batches(epoch, self.batch_in_epoch)
        bar = tqdm(
            total=self.batches_per_epoch,
            initial=self.batch_in_epoch,
            desc=f"epoch {epoch + 1}/{self.max_epochs}",
            disable=not (cfg.progress and self.is_main),
            mininterval=0.5 if sys.stderr.isatty() else 30.0,
            leave=False,
            dynamic_ncols=True,
        )
        sums = torch.zeros(3, device=self.device)  # loss·n, correct, n
        term_sums: dict[str, torch.Tensor] = {}
        start, seen = time.perf_counter(), 0
        partial = self._epoch_partial if self.batch_in_epoch else None
        if partial is not None:  # resumed mid-epoch: continue the interrupted epoch's sums
            sums += partial["sums"].to(self.device)
            term_sums = {k: v.to(self.device) for k, v in partial["terms"].items()}
            seen, start = partial["seen"], start - partial["seconds"]
        self._epoch_partial = None
        self.optimizer.zero_grad(set_to_none=True)
        for inputs, targets in loader:
            inputs = _to_device(inputs, self.device, cfg.channels_last)
            targets = targets.to(self.device, non_blocking=True)
            out = self._train_batch(inputs, targets)
            n = targets.shape[0]
            seen += n
            sums[0] += out.loss.detach() * n
            sums[2] += n
            if out.logits is not None and out.logits.shape[0] == n:
                sums[1] += (out.logits.detach().argmax(1) == targets).sum()
            for k, v in out.terms.items():
                term_sums[k] = term_sums.get(k, 0) + v.detach() * n
            self.batch_in_epoch += 1
            bar.update(1)
            if self.batch_in_epoch % cfg.log_every == 0 and self.is_main:
                bar.set_postfix(loss=f"{out.loss.item():.3f}")
            if self._interrupt.requested and self._at_step_boundary():
                bar.close()
                self._epoch_partial = {
                    "sums": sums.detach().cpu(),
                    "terms": {k: torch.as_tensor(v).detach().cpu() for k, v in term_sums.items()},
                    "seen": seen,
                    "seconds": time.perf_counter() - start,
                }
                self.save_checkpoint()
                raise KeyboardInterrupt
        bar.close()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        elapsed = time.perf_counter() - start
        distributed.all_reduce_sum(sums)
        logs = {
            "train/loss": (sums[0] / sums[2].clamp_min(1)).item(),
            "train/acc": (100.0 * sums[1] / sums[2].clamp_min(1)).item(),
            "lr": self.optimizer.param_groups[0]["lr"],
            "throughput/images_per_s": seen * self.world / max(elapsed, 1e-9),
            "time/epoch_s": elapsed,
            **self._comm_logs(),
        }
        for k, v in term_sums.items():
            logs[f"train/{k}"] = (v / max(seen, 1)).item()
        for cb in self.callbacks:
            cb.on_train_epoch_end(self, epoch, logs)
        self.epoch += 1
        self.batch_in_epoch = 0
        if self.eval_data is not None and (self.epoch % cfg.eval_every == 0 or self.epoch == self.max_epochs):
            logs.update({f"test/{k}": v for k, v in self.evaluate().items()})
        for cb in self.callbacks:
            cb.on_epoch_end(self, epoch, logs)
        logs.update(self._pending_logs)
        self._pending_logs = {}
        logs["epoch"] = self.epoch
        self.history.append(logs)
        if self.run is not None:
            self.run.logger.scalars(logs, self.step_offset + self.global_step)
        self.save_checkpoint()
        return logs

    def _train_batch(self, inputs: torch.Tensor, targets: torch.Tensor) -> ObjectiveOutput:
        cfg = self.cfg
        last_of_step = self._at_step_boundary(self.batch_in_epoch + 1)
        group_start = (self.batch_in_epoch // cfg.grad_accum) * cfg.grad_accum
        group_size = min(cfg.grad_accum, self.batches_per_epoch - group_start)
        sync = last_of_step or self.world == 1
        ctx = self.train_model.no_sync() if (not sync and hasattr(self.train_model, "no_sync")) else _null()
        with ctx:
            with autocast(self.device, cfg.precision):
                out = self.objective(self.train_model, inputs, targets)
                loss = out.loss
                for cb in self.callbacks:
                    for name, term in cb.extra_loss(self, (inputs, targets), out).items():
                        out.terms[name] = term
                        loss = loss + term
            out.loss = loss
            self.scaler.scale(loss / group_size).backward()
        if not last_of_step:
            return out
        if self.world > 1:
            self._average_objective_grads()
        self.scaler.unscale_(self.optimizer)
        for cb in self.callbacks:
            cb.on_after_backward(self)
        if cfg.grad_clip > 0:
            params = [p for group in self.optimizer.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.comm is not None:
            self.comm.account_step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.global_step += 1
        for cb in self.callbacks:
            cb.on_step_end(self, self.global_step)
        if self.run is not None and self.global_step % cfg.log_every == 0:
            self.run.logger.scalars(
                {"train/step_loss": loss.item(), "train/step_lr": self.optimizer.param_groups[0]["lr"]},
                self.step_offset + self.global_step,
            )
        return out

    def _at_step_boundary(self, batches_done: int | None = None) -> bool:
        """Whether ``batches_done`` batches of this epoch end an optimizer step (accumulation group)."""
        done = self.batch_in_epoch if batches_done is None else batches_done
        return done % self.cfg.grad_accum == 0 or done == self.batches_per_epoch

    def _average_objective_grads(self) -> None:
        """DDP averages the model's gradients; the objective's own trainable parts are averaged here."""
        grads = [p.grad for p in self.objective.parameters() if p.requires_grad and p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.flatten() for g in grads])
        distributed.all_reduce_sum(flat)
        flat /= self.world
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()

    def evaluate(self) -> dict[str, float]:
        """Accuracy and loss on the eval set (rank 0 evaluates, the others wait)."""
        result: dict[str, float] = {}
        if self.is_main and self.eval_data is not None:
            result = evaluate_classifier(
                unwrap(self.model),
                self.eval_data,
                self.device,
                self.cfg.eval_batch_size,
                self.cfg.precision,
                self.cfg.channels_last,
                self.cfg.num_workers,
            )
        return distributed.broadcast_object(result)


class DeferredInterrupt:
    """Turns the first Ctrl-C or SIGTERM (a scheduler's stop) into a flag checked between optimizer steps;
    a second signal stops at once.

    The trainer then saves a consistent checkpoint (no half-applied step, no lost accumulated gradients)
    and raises KeyboardInterrupt.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def _handler(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> DeferredInterrupt:
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._handler) for sig in self.SIGNALS}
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def trainer_config(cfg: TrainerConfig, **changes: Any) -> TrainerConfig:
    """A plain ``TrainerConfig`` holding the loop keys of ``cfg`` (any command config that inherits it), with
    ``changes`` applied, e.g. ``trainer_config(cfg, epochs=cfg.finetune_epochs)`` for a second training phase."""
    values = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(TrainerConfig)}
    values.update(changes)
    return TrainerConfig(**values)
