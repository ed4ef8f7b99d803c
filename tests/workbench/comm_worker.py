"""The 2-process checks of workbench.comm, run once under torchrun by test_comm_ddp.py.

Rank 0 writes a dict of results (numbers and flags) to the file given as argv[1]; the test asserts on it.
"""

import sys
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from workbench import distributed
from workbench.comm import COMM_HOOKS, CountSketchHook
from workbench.runs import Run
from workbench.trainer import Trainer, TrainerConfig


def _data(n: int = 256) -> torch.utils.data.TensorDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 20, generator=g)
    y = (x[:, 0] - x[:, 2] > 0).long()
    return torch.utils.data.TensorDataset(x, y)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(20, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 2))


def _gathered(t: torch.Tensor) -> list[torch.Tensor]:
    out = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(out, t.contiguous())
    return out


def sketch_equals_allreduce(values: str) -> float:
    """Max |grad with the count-sketch hook (c = d, k = d, no momentum) − grad with DDP's all-reduce|,
    with small buckets so the hook has to collect several of them."""
    x, y = _data(64).tensors
    x = x[dist.get_rank() :: 2]
    y = y[dist.get_rank() :: 2]
    grads = []
    for hook in (None, "count-sketch"):
        model = _model()
        ddp = nn.parallel.DistributedDataParallel(model, bucket_cap_mb=0.002)
        if hook:
            d = sum(p.numel() for p in model.parameters())
            cfg = TrainerConfig(comm_hook=hook, sketch_cols=d, sketch_k=d, sketch_momentum=0.0, sketch_values=values)
            COMM_HOOKS[hook]([p for p in model.parameters()], cfg, seed=3).attach(ddp)
        nn.functional.cross_entropy(ddp(x), y).backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    return (grads[0] - grads[1]).abs().max().item()


def error_feedback(values: str) -> dict:
    """One hook step on different per-rank vectors: what was applied and what each rank keeps."""
    torch.manual_seed(100 + dist.get_rank())
    params = [nn.Parameter(torch.zeros(500))]
    cfg = TrainerConfig(comm_hook="count-sketch", sketch_rows=3, sketch_cols=40, sketch_k=25, sketch_momentum=0.5)
    cfg.sketch_values = values
    cfg.validate_trainer()
    hook = CountSketchHook(params, cfg, seed=7)
    hook.step(torch.randn(500))  # fills u and e
    g = torch.randn(500)
    e_before = hook.e + (0.5 * hook.u + g)  # e + u after the momentum update
    u_before = 0.5 * hook.u + g
    delta = hook.step(g)
    applied = delta != 0
    world = dist.get_world_size()
    sum_before, sum_after = sum(_gathered(e_before)), sum(_gathered(hook.e))
    res = {
        "k": int(applied.sum()),
        "delta_same_on_ranks": all(torch.equal(d, delta) for d in _gathered(delta)),
        # Σ_w e_after = Σ_w e_before − P·Δ: the memories hold exactly what was not applied
        "memory_gap": (sum_after - (sum_before - world * delta)).abs().max().item(),
        "momentum_masked": bool((hook.u[applied] == 0).all() and torch.equal(hook.u[~applied], u_before[~applied])),
        "untouched_kept": torch.equal(hook.e[~applied], e_before[~applied]),
    }
    if values == "exact":
        res["exact_values_gap"] = (delta[applied] - sum_before[applied] / world).abs().max().item()
        res["applied_zeroed"] = bool((hook.e[applied] == 0).all())
    return res


def train(hook: str, epochs: int = 3, run: Run | None = None, resume: bool = False, stop_after: int = 0) -> Trainer:
    """Train the MLP for ``epochs`` (cosine schedule); ``stop_after`` ends the run early, as an interruption at
    an epoch boundary would."""
    cfg = TrainerConfig(
        epochs=epochs,
        batch_size=32,
        lr=0.1,
        progress=False,
        comm_hook=hook,
        sketch_ratio=8.0,
        powersgd_start_iter=3,
    )
    trainer = Trainer(_model(), cfg, _data(), None, device=torch.device("cpu"), run=run, seed=0)
    trainer.max_epochs = stop_after or epochs
    trainer.fit(resume=resume)
    return trainer


def flat_params(trainer: Trainer) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in trainer.model.parameters()])


def main(out: str) -> None:
    distributed.init_distributed(torch.device("cpu"))
    rank = dist.get_rank()
    results: dict = {"world": dist.get_world_size()}
    for values in ("exact", "estimate"):
        results[f"allreduce_gap_{values}"] = sketch_equals_allreduce(values)
        results[f"ef_{values}"] = error_feedback(values)
    for hook in COMM_HOOKS.names():
        trainer = train(hook, epochs=5)  # 5 epochs × 8 steps
        w = flat_params(trainer)
        results[f"identical_{hook}"] = all(torch.equal(v, w) for v in _gathered(w))
        results[f"steps_{hook}"] = trainer.global_step
        results[f"summary_{hook}"] = trainer.comm_summary()
        results[f"logs_{hook}"] = {k: v for k, v in trainer.history[-1].items() if k.startswith("comm/")}
    tmp = distributed.broadcast_object(tempfile.mkdtemp() if rank == 0 else None)
    for hook in ("count-sketch", "powersgd"):
        full = flat_params(train(hook, epochs=3))
        run = Run(dir=Path(tmp) / hook, group="t", is_main=rank == 0)
        train(hook, epochs=3, run=run, stop_after=2)
        resumed = flat_params(train(hook, epochs=3, run=run, resume=True))
        results[f"resume_equal_{hook}"] = torch.equal(full, resumed)
        results[f"resume_gap_{hook}"] = (full - resumed).abs().max().item()
        results[f"resume_identical_{hook}"] = all(torch.equal(v, resumed) for v in _gathered(resumed))
    if rank == 0:
        torch.save(results, out)
    distributed.cleanup()


if __name__ == "__main__":
    main(sys.argv[1])
