import math

import pytest
import torch
from torch import nn

from workbench.callbacks import Callback
from workbench.data.samplers import EpochSampler
from workbench.optim import lr_factor
from workbench.runs import Run
from workbench.trainer import Trainer, TrainerConfig

CPU = torch.device("cpu")


def mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(20, 16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 2))


def cfg(**kw):
    base = dict(epochs=2, batch_size=32, lr=0.1, progress=False, log_every=1)
    base.update(kw)
    return TrainerConfig(**base)


class StopAfterFirstEpoch(Callback):
    def on_epoch_end(self, trainer, epoch, logs):
        trainer.should_stop = epoch == 0


def weights(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_learns_a_separable_problem(toy_data):
    model = mlp()
    logs = Trainer(model, cfg(epochs=5), toy_data, toy_data, device=CPU).fit()
    assert logs["test/acc"] > 90


def test_resume_continues_exactly(tmp_path, toy_data):
    straight = mlp()
    Trainer(straight, cfg(), toy_data, toy_data, device=CPU, run=Run(tmp_path / "a", "t")).fit()

    run_b = Run(tmp_path / "b", "t")
    first = mlp()
    t1 = Trainer(first, cfg(), toy_data, toy_data, device=CPU, run=run_b, callbacks=[StopAfterFirstEpoch()])
    t1.fit()
    assert t1.epoch == 1
    torch.rand(5)  # disturb the global RNG: the resume must restore it
    resumed = mlp(seed=123)  # different init: the checkpoint must overwrite it
    t2 = Trainer(resumed, cfg(), toy_data, toy_data, device=CPU, run=run_b, callbacks=[StopAfterFirstEpoch()])
    t2.fit(resume=True)
    assert t2.epoch == 2 and t2.global_step == 16
    assert torch.equal(weights(resumed), weights(straight))
    steps = [line["step"] for line in __import__("workbench.tracking", fromlist=["x"]).read_metrics(run_b.dir)]
    assert steps == sorted(steps) and steps[-1] == 16


class InterruptAtStep(Callback):
    """Requests a stop (as SIGTERM does) at optimizer step ``at``, in the middle of an epoch."""

    def __init__(self, at: int) -> None:
        self.at = at

    def on_step_end(self, trainer, step):
        if step == self.at:
            trainer._interrupt.requested = True


def test_an_epoch_interrupted_mid_way_logs_the_mean_over_all_its_batches_after_resume(tmp_path, toy_data):
    from workbench.tracking import read_metrics

    def epoch_rows(run_dir):
        return [m for m in read_metrics(run_dir) if "train/loss" in m]

    Trainer(mlp(), cfg(), toy_data, toy_data, device=CPU, run=Run(tmp_path / "a", "t")).fit()
    run_b = Run(tmp_path / "b", "t")
    with pytest.raises(KeyboardInterrupt):  # step 3 of the 8 batches of epoch 1
        Trainer(mlp(), cfg(), toy_data, toy_data, device=CPU, run=run_b, callbacks=[InterruptAtStep(3)]).fit()
    resumed = Trainer(mlp(seed=5), cfg(), toy_data, toy_data, device=CPU, run=run_b, callbacks=[InterruptAtStep(-1)])
    resumed.fit(resume=True)
    want, got = epoch_rows(tmp_path / "a"), epoch_rows(run_b.dir)
    assert len(got) == len(want) == 2
    for w, g in zip(want, got):
        assert g["step"] == w["step"]
        assert g["train/loss"] == pytest.approx(w["train/loss"], rel=1e-6)
        assert g["train/acc"] == pytest.approx(w["train/acc"], rel=1e-6)


def test_a_second_phase_has_its_own_checkpoint_and_continues_the_curves(tmp_path, toy_data):
    from workbench.tracking import read_metrics

    run = Run(tmp_path / "r", "t")
    first = Trainer(mlp(), cfg(epochs=1), toy_data, toy_data, device=CPU, run=run)
    first.fit()
    second = Trainer(
        mlp(1), cfg(epochs=1), toy_data, toy_data, device=CPU, run=run,
        checkpoint_name="phase2.pt", step_offset=first.global_step,
    )  # fmt: skip
    second.fit()
    assert (run.checkpoints / "last.pt").is_file() and (run.checkpoints / "phase2.pt").is_file()
    epochs = [m for m in read_metrics(run.dir) if "test/acc" in m]
    assert [m["step"] for m in epochs] == [first.global_step, first.global_step + second.global_step]


def test_gradient_accumulation_matches_large_batch(toy_data):
    a, b = mlp(), mlp()
    no_dropout = {"epochs": 1}
    for m in (a, b):
        m[2].p = 0.0
    Trainer(a, cfg(batch_size=64, **no_dropout), toy_data, device=CPU).fit()
    # two batches of 32 per step see the same 64 images as one batch of 64 when the data order matches
    t = Trainer(b, cfg(batch_size=32, grad_accum=2, **no_dropout), toy_data, device=CPU)
    t.fit()
    assert t.global_step == 4
    assert torch.allclose(weights(a), weights(b), atol=1e-6)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_runs_and_learns(toy_data, precision):
    model = mlp()
    logs = Trainer(model, cfg(epochs=4, precision=precision), toy_data, toy_data, device=CPU).fit()
    assert math.isfinite(logs["train/loss"]) and logs["test/acc"] > 80


def test_channels_last_and_grad_clip_on_a_conv_net():
    torch.manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(64, 1, 8, 8), torch.randint(0, 3, (64,)))
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(144, 3))
    t = Trainer(model, cfg(epochs=1, channels_last=True, grad_clip=0.5), data, data, device=CPU)
    logs = t.fit()
    assert math.isfinite(logs["train/loss"]) and t.global_step == 2


def test_sampler_shards_cover_the_single_process_batches():
    single = list(EpochSampler(12, seed=3))
    shards = [list(EpochSampler(12, seed=3, rank=r, world=2)) for r in range(2)]
    for k in range(3):  # global batch 4 = two local batches of 2
        assert sorted(single[4 * k : 4 * k + 4]) == sorted(shards[0][2 * k : 2 * k + 2] + shards[1][2 * k : 2 * k + 2])


def test_lr_schedules_follow_their_formulas():
    assert lr_factor(0, 10, 5, "cosine", warmup_epochs=1) == pytest.approx(0.1)
    assert lr_factor(9, 10, 5, "cosine", warmup_epochs=1) == pytest.approx(1.0)
    assert lr_factor(10, 10, 5, "cosine", warmup_epochs=1) == pytest.approx(1.0)
    assert lr_factor(30, 10, 5, "cosine", warmup_epochs=1) == pytest.approx(0.5 * (1 + math.cos(math.pi * 20 / 40)))
    assert lr_factor(25, 10, 5, "multistep", milestones=[1, 2], gamma=0.1) == pytest.approx(0.01)
    assert lr_factor(35, 10, 5, "step", step_size=2, gamma=0.5) == pytest.approx(0.5)


def test_resume_with_other_callbacks_is_refused(tmp_path, toy_data):
    from workbench.errors import WorkbenchError

    run = Run(tmp_path / "r", "t")
    Trainer(mlp(), cfg(), toy_data, device=CPU, run=run, callbacks=[StopAfterFirstEpoch()]).fit()
    with pytest.raises(WorkbenchError, match="1 callback states for 0 callbacks"):
        Trainer(mlp(), cfg(), toy_data, device=CPU, run=run).fit(resume=True)
