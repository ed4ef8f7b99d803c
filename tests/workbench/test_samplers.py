"""The Trainer's samplers: ``m_per_class`` batches hold m images of each of B/m classes, seeded and resumable."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Subset, TensorDataset

from workbench.callbacks import Callback
from workbench.data.samplers import SAMPLERS, EpochSampler, MPerClassSampler, build_sampler, dataset_targets
from workbench.distill import contrastive_loss
from workbench.errors import WorkbenchError
from workbench.runs import Run
from workbench.trainer import Objective, ObjectiveOutput, Trainer, TrainerConfig, trainer_config


def _labels(classes: int, per_class: int, seed: int = 0) -> torch.Tensor:
    """``classes × per_class`` labels in a shuffled order (so class members are not contiguous)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(classes).repeat_interleave(per_class)
    return y[torch.randperm(len(y), generator=g)]


def _batches(sampler, size: int) -> list[list[int]]:
    order = list(sampler)
    return [order[i : i + size] for i in range(0, len(order), size)]


def _check_m_per_class(batch: list[int], y: torch.Tensor, m: int, k: int) -> None:
    counts = Counter(y[batch].tolist())
    assert len(counts) == k and set(counts.values()) == {m}, counts


@pytest.mark.parametrize(("m", "batch_size"), [(4, 64), (2, 40), (5, 25)])
def test_every_batch_holds_m_images_of_each_of_its_classes(m, batch_size):
    y = _labels(100, 7)
    sampler = MPerClassSampler(y, m, batch_size, seed=3)
    assert len(sampler) == (700 // batch_size) * batch_size  # ⌊N / B⌋ whole batches: about one pass
    batches = _batches(sampler, batch_size)
    assert len(batches) == 700 // batch_size and all(len(b) == batch_size for b in batches)
    for b in batches:
        assert all(0 <= i < 700 for i in b)
        _check_m_per_class(b, y, m, batch_size // m)
        assert len(set(b)) == batch_size  # 7 ≥ m images a class: no image twice in a batch
        for j in range(0, batch_size, m):  # the m images of a class are consecutive
            assert len(set(y[b[j : j + m]].tolist())) == 1
    # over an epoch the classes are visited evenly and the images about once
    per_class = Counter(y[b[j]].item() for b in batches for j in range(0, batch_size, m))
    assert max(per_class.values()) - min(per_class.values(), default=0) <= 1
    assert len(per_class) == min(100, len(batches) * batch_size // m)
    images = Counter(i for b in batches for i in b)
    assert len(images) >= 0.8 * len(sampler) and max(images.values()) <= 2  # m ∤ 7: some repeats


def test_a_class_smaller_than_m_is_drawn_with_replacement():
    y = torch.tensor([0] * 10 + [1] * 2 + [2] * 10)
    sampler = MPerClassSampler(y, 4, 12, seed=0)
    for b in _batches(sampler, 12):
        _check_m_per_class(b, y, 4, 3)


def test_order_is_seeded_per_epoch_and_resumes_mid_epoch():
    y = _labels(20, 6)
    a, b, c = (MPerClassSampler(y, 3, 12, seed=s) for s in (1, 1, 2))
    assert list(a) == list(b) and list(a) != list(c)
    a.set_epoch(1)
    epoch1 = list(a)
    assert epoch1 != list(b)
    b.set_epoch(1, start=36)  # resumed after 3 batches of epoch 1: the same remaining order
    assert list(b) == epoch1[36:] and len(b) == len(epoch1) - 36
    fresh = MPerClassSampler(y, 3, 12, seed=1)
    fresh.set_epoch(1)
    assert list(fresh) == epoch1  # only (seed, epoch) decide the order


def test_ranks_take_whole_classes_and_together_give_the_global_batch():
    y = _labels(30, 5)
    single = _batches(MPerClassSampler(y, 2, 16, seed=4), 16)
    shards = [_batches(MPerClassSampler(y, 2, 16, seed=4, rank=r, world=2), 8) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == len(single)
    for k, batch in enumerate(single):
        assert shards[0][k] + shards[1][k] == batch
        for r in range(2):
            _check_m_per_class(shards[r][k], y, 2, 4)
    with pytest.raises(WorkbenchError, match="multiple of m_per_class=4 times the 2 DDP"):
        MPerClassSampler(y, 4, 12, seed=0, world=2)


def test_bad_settings_are_refused_in_one_line():
    y = _labels(10, 5)
    with pytest.raises(WorkbenchError, match="batch_size=10 must be a multiple of m_per_class=4"):
        MPerClassSampler(y, 4, 10, seed=0)
    with pytest.raises(WorkbenchError, match="needs 16 classes, the data has 10"):
        MPerClassSampler(y, 4, 64, seed=0)
    with pytest.raises(WorkbenchError, match="use sampler=random"):
        dataset_targets(torch.utils.data.Dataset())
    with pytest.raises(WorkbenchError, match="unknown sampler 'm_per_clas'"):
        build_sampler("m_per_clas", TensorDataset(torch.zeros(4, 1), y[:4]), 0, 4)
    cfg = TrainerConfig(sampler="m_per_class", m_per_class=3, batch_size=64)
    with pytest.raises(WorkbenchError, match="batch_size=64 must be a multiple of m_per_class=3"):
        cfg.validate_trainer()


def test_targets_of_subsets_and_tensor_datasets():
    y = _labels(5, 4)
    ds = TensorDataset(torch.zeros(20, 1), y)
    assert torch.equal(dataset_targets(ds), y)
    assert torch.equal(dataset_targets(Subset(ds, [3, 1, 7])), y[[3, 1, 7]])
    assert SAMPLERS.names() == ("random", "m_per_class")
    assert type(build_sampler("random", ds, 0, 4)) is EpochSampler


class _Recorder(Objective):
    """Cross-entropy, recording the labels of every training batch."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[torch.Tensor] = []

    def forward(self, model, inputs, targets):
        if model.training:
            self.batches.append(targets.cpu().clone())
        logits = model(inputs)
        return ObjectiveOutput(F.cross_entropy(logits, targets), logits)


def _toy(classes: int = 100, per_class: int = 5) -> TensorDataset:
    y = _labels(classes, per_class)
    g = torch.Generator().manual_seed(1)
    return TensorDataset(torch.randn(len(y), 8, generator=g), y)


def _train_batches(sampler: str, epochs: int = 2, **keys) -> list[torch.Tensor]:
    data = _toy()
    torch.manual_seed(0)
    cfg = trainer_config(TrainerConfig(batch_size=64, lr=0.01, progress=False, sampler=sampler, **keys), epochs=epochs)
    objective = _Recorder()
    trainer = Trainer(nn.Linear(8, 100), cfg, data, None, device=torch.device("cpu"), objective=objective, seed=5)
    assert trainer.batches_per_epoch == (500 // 64 if sampler == "m_per_class" else 8)
    trainer.fit()
    return objective.batches


def test_trainer_trains_on_m_per_class_batches_and_the_default_is_random():
    assert TrainerConfig().sampler == "random" and TrainerConfig().m_per_class == 4
    batches = _train_batches("m_per_class", m_per_class=4)
    assert len(batches) == 2 * 7
    for y in batches:
        counts = Counter(y.tolist())
        assert len(counts) == 16 and set(counts.values()) == {4}
    again = _train_batches("m_per_class", m_per_class=4)
    assert all(torch.equal(a, b) for a, b in zip(batches, again, strict=True))  # seeded
    random = _train_batches("random")
    assert sum(len(y) for y in random[:8]) == 500  # a permutation: every image once an epoch


def _has_positive(y: torch.Tensor) -> torch.Tensor:
    """Whether each anchor has a positive under MCL's released rule (same label, its own sample excluded)."""
    same = y[:, None] == y[None, :]
    same.fill_diagonal_(False)
    return same.any(1)


def test_mcl_contrastive_loss_has_positives_for_every_anchor_on_100_classes():
    m_batches = _train_batches("m_per_class", epochs=1, m_per_class=4)
    random_batches = _train_batches("random", epochs=1)
    # with random batches of 64 from 100 classes many anchors have no positive (they drop out of the loss)
    assert sum(int((~_has_positive(y)).sum()) for y in random_batches) > 100
    g = torch.Generator().manual_seed(2)
    for y in m_batches:
        assert bool(_has_positive(y).all())
        v = F.normalize(torch.randn(len(y), 16, generator=g), dim=1)
        logits = v @ v.t() / 0.1
        # every anchor contributes: the loss is the mean over all 64 anchors of the released formula
        want = []
        for i in range(len(y)):
            others = [j for j in range(len(y)) if j != i]
            log_prob = logits[i, others] - torch.logsumexp(logits[i, others], 0)
            pos = [k for k, j in enumerate(others) if y[j] == y[i]]
            assert len(pos) == 3  # m − 1 positives
            want.append(-log_prob[pos].mean())
        torch.testing.assert_close(contrastive_loss(logits, y, y, exclude_self=True), torch.stack(want).mean())


class _InterruptAt(Callback):
    """Requests a stop (as SIGTERM does) at optimizer step ``at``, mid-epoch."""

    def __init__(self, at: int) -> None:
        self.at = at

    def on_step_end(self, trainer, step):
        if step == self.at:
            trainer._interrupt.requested = True


def test_a_run_interrupted_mid_epoch_resumes_the_same_m_per_class_batches(tmp_path):
    data = _toy()
    cfg = trainer_config(
        TrainerConfig(batch_size=64, lr=0.05, progress=False, sampler="m_per_class", m_per_class=4), epochs=2
    )

    def trainer(objective, run, at):
        torch.manual_seed(0)
        model = nn.Linear(8, 100)
        return model, Trainer(model, cfg, data, None, device=torch.device("cpu"), run=run, objective=objective,
                              callbacks=[_InterruptAt(at)], seed=5)  # fmt: skip

    straight_obj = _Recorder()
    straight, t = trainer(straight_obj, Run(tmp_path / "a", "t"), -1)
    t.fit()
    first_obj, second_obj = _Recorder(), _Recorder()
    run_b = Run(tmp_path / "b", "t")
    with pytest.raises(KeyboardInterrupt):  # step 10: the 3rd of the 7 batches of epoch 2
        trainer(first_obj, run_b, 10)[1].fit()
    resumed, t2 = trainer(second_obj, run_b, -1)
    t2.fit(resume=True)
    seen = first_obj.batches + second_obj.batches
    assert len(seen) == len(straight_obj.batches) == 14
    assert all(torch.equal(a, b) for a, b in zip(seen, straight_obj.batches, strict=True))
    assert torch.equal(resumed.weight, straight.weight)
