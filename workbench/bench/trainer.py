"""``workbench bench trainer``: trainer images/s ÷ a minimal plain PyTorch loop (same model, data, batch)."""

from __future__ import annotations

import statistics

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from workbench.bench import BenchResult, median_ratio, timed
from workbench.models import build_model
from workbench.trainer import Trainer, TrainerConfig


def _data(n: int) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randn(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g))


def plain_loop(model: torch.nn.Module, data: TensorDataset, batch_size: int, lr: float = 0.05) -> None:
    """The reference: DataLoader + forward + cross-entropy + backward + SGD step, nothing else."""
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    model.train()
    for x, y in DataLoader(data, batch_size=batch_size, shuffle=True):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def trainer_epoch(model: torch.nn.Module, data: TensorDataset, batch_size: int, **overrides) -> None:
    cfg = TrainerConfig(epochs=1, batch_size=batch_size, lr=0.05, schedule="none", progress=False, **overrides)
    Trainer(model, cfg, data, None, device=torch.device("cpu"), run=None).fit()


def bench(repeats: int = 3, quick: bool = False) -> list[BenchResult]:
    n, batch = (512, 128) if quick else (2048, 128)
    data = _data(n)
    variants = {"fp32": {}, "bf16": {"precision": "bf16"}, "channels_last": {"channels_last": True}}
    results = []
    model_name = "resnet20"
    # warm-up: first-call allocations and kernels
    trainer_epoch(build_model(model_name, 10, 1), _data(256), batch)
    for label, overrides in variants.items():
        ours, ref = [], []
        for _ in range(repeats):
            t_ref, _ = timed(lambda: plain_loop(build_model(model_name, 10, 1), data, batch))
            t_ours, _ = timed(lambda ov=overrides: trainer_epoch(build_model(model_name, 10, 1), data, batch, **ov))
            ref.append(n / t_ref)
            ours.append(n / t_ours)
        ratio, ratios = median_ratio(ours, ref)
        results.append(
            BenchResult(
                name=f"trainer[{label}] ÷ plain fp32 loop",
                ratio=ratio,
                ratios=ratios,
                goal="≥ 0.95" if label == "fp32" else "report",
                detail={
                    "model": model_name,
                    "images": n,
                    "batch": batch,
                    "trainer_img_s": round(statistics.median(ours), 1),
                    "plain_img_s": round(statistics.median(ref), 1),
                    "threads": torch.get_num_threads(),
                },
            )
        )
    return results
