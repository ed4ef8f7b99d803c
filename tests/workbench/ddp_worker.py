"""Trains a small MLP with the workbench trainer; run directly or under torchrun (see test_ddp.py)."""

import sys

import torch
from torch import nn

from workbench import distributed
from workbench.trainer import Trainer, TrainerConfig


def main(out: str) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 20, generator=g)
    y = (x[:, 0] - x[:, 2] > 0).long()
    data = torch.utils.data.TensorDataset(x, y)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 32), nn.Tanh(), nn.Linear(32, 2))
    cfg = TrainerConfig(epochs=2, batch_size=64, lr=0.2, progress=False)
    trainer = Trainer(model, cfg, data, data, device=torch.device("cpu"), seed=0)
    logs = trainer.fit()
    if distributed.is_main():
        torch.save(
            {"weights": [p.detach() for p in model.parameters()], "world": trainer.world, "acc": logs["test/acc"]}, out
        )
    distributed.cleanup()


if __name__ == "__main__":
    main(sys.argv[1])
