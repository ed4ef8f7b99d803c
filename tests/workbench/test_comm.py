"""Count-Sketch and the communication keys, in one process (the 2-rank checks are in test_comm_ddp.py)."""

import pytest
import torch

from workbench.comm import COMM_HOOKS, CountSketch, build_hook, sketch_budget
from workbench.config import resolve_config
from workbench.errors import WorkbenchError
from workbench.trainer import Trainer, TrainerConfig


def _reference_sketch(cs: CountSketch, v: torch.Tensor) -> torch.Tensor:
    """S[i, h_i(j)] += s_i(j) v_j, one coordinate at a time."""
    table = torch.zeros(cs.rows, cs.cols, dtype=torch.float64)
    buckets = cs.index.view(cs.rows, cs.dim) - torch.arange(cs.rows).unsqueeze(1) * cs.cols
    for i in range(cs.rows):
        for j in range(cs.dim):
            table[i, buckets[i, j]] += cs.signs[i, j].double() * v[j].double()
    return table


def test_sketch_matches_its_definition_and_hashes_are_balanced_and_seeded():
    cs = CountSketch(dim=300, rows=3, cols=16, seed=5)
    v = torch.randn(300, dtype=torch.float64)
    assert torch.allclose(cs.sketch(v), _reference_sketch(cs, v), atol=1e-12)
    buckets = cs.index.view(3, 300) - torch.arange(3).unsqueeze(1) * 16
    for row in buckets:  # every column gets ⌊d/c⌋ or ⌈d/c⌉ coordinates
        counts = torch.bincount(row, minlength=16)
        assert counts.min() >= 300 // 16 and counts.max() <= -(-300 // 16)
    assert not torch.equal(buckets[0], buckets[1])  # independent rows
    same, other = CountSketch(300, 3, 16, seed=5), CountSketch(300, 3, 16, seed=6)
    assert torch.equal(same.index, cs.index) and torch.equal(same.signs, cs.signs)
    assert not torch.equal(other.index, cs.index)


def test_sketch_is_linear():
    cs = CountSketch(dim=1000, rows=5, cols=64, seed=1)
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(1000, generator=g, dtype=torch.float64), torch.randn(1000, generator=g, dtype=torch.float64)
    assert torch.allclose(cs.sketch(a) + cs.sketch(b), cs.sketch(a + b), atol=1e-12)
    assert torch.allclose(cs.sketch(2.5 * a), 2.5 * cs.sketch(a), atol=1e-12)


def test_sparse_vector_is_recovered_exactly():
    d, k = 100_000, 12
    g = torch.Generator().manual_seed(3)
    support = torch.randperm(d, generator=g)[:k]
    v = torch.zeros(d)
    v[support] = torch.randn(k, generator=g) * 10
    cs = CountSketch(dim=d, rows=5, cols=4000, seed=2)  # 5 × 4000 numbers for 100,000
    est = cs.estimate(cs.sketch(v))
    assert torch.equal(est, v)  # median over rows removes every collision with the other heavy coordinates
    idx, values = cs.heavy(cs.sketch(v), k)
    assert set(idx.tolist()) == set(support.tolist())
    assert torch.equal(values, v[idx])


def test_sketch_with_as_many_columns_as_coordinates_stores_the_vector():
    v = torch.randn(257)
    for rows in (1, 2, 3):
        cs = CountSketch(dim=257, rows=rows, cols=257, seed=rows)
        assert torch.equal(cs.estimate(cs.sketch(v)), v)


def test_estimate_of_a_dense_vector_is_the_median_over_rows():
    cs = CountSketch(dim=50, rows=3, cols=8, seed=0)
    v = torch.randn(50, dtype=torch.float64)
    table = _reference_sketch(cs, v)
    buckets = cs.index.view(3, 50) - torch.arange(3).unsqueeze(1) * 8
    want = torch.stack(
        [torch.stack([cs.signs[i, j].double() * table[i, buckets[i, j]] for i in range(3)]).median() for j in range(50)]
    )
    assert torch.allclose(cs.estimate(table), want, atol=1e-12)


def test_budget_follows_the_ratio():
    cfg = TrainerConfig(comm_hook="count-sketch", sketch_ratio=10, sketch_rows=3)
    rows, cols, k = sketch_budget(70_000, cfg)
    assert (rows, k, cols) == (3, 1750, 1750)  # budget 7000 = r·c + k with c = k
    assert sketch_budget(70_000, TrainerConfig(sketch_ratio=10)) == (1, 3500, 3500)
    cfg.sketch_values = "estimate"
    rows, cols, k = sketch_budget(70_000, cfg)
    assert rows * cols <= 7000 and cols == 2333 and k == cols // 2
    cfg.sketch_values, cfg.sketch_cols = "exact", 500
    assert sketch_budget(70_000, cfg) == (3, 500, 5500)
    cfg.sketch_cols, cfg.sketch_k = 0, 1000
    assert sketch_budget(70_000, cfg) == (3, 2000, 1000)
    with pytest.raises(WorkbenchError, match="sketch_ratio"):
        sketch_budget(50, TrainerConfig(comm_hook="count-sketch", sketch_ratio=60))


def test_registry_lists_every_hook():
    assert COMM_HOOKS.names() == ("none", "fp16", "bf16", "powersgd", "count-sketch")
    with pytest.raises(WorkbenchError, match="did you mean 'count-sketch'"):
        COMM_HOOKS["count_sketch"]


@pytest.mark.parametrize(
    "override, key",
    [
        ("comm_hook=topk", "comm_hook"),
        ("sketch_rows=0", "sketch_rows"),
        ("sketch_k=-1", "sketch_k"),
        ("sketch_ratio=0.5", "sketch_ratio"),
        ("sketch_momentum=1.0", "sketch_momentum"),
        ("sketch_values=median", "sketch_values"),
        ("sketch_values=estimate", "sketch_rows"),
        ("powersgd_rank=0", "powersgd_rank"),
        ("powersgd_start_iter=1", "powersgd_start_iter"),
    ],
)
def test_bad_comm_keys_are_one_line_errors(override, key):
    with pytest.raises(WorkbenchError, match=key) as err:
        resolve_config(TrainerConfig, [override]).validate_trainer()
    assert "\n" not in str(err.value)


def test_count_sketch_with_fp16_loss_scaling_is_refused():
    with pytest.raises(WorkbenchError, match="precision=fp16"):
        TrainerConfig(comm_hook="count-sketch", precision="fp16").validate_trainer()


def test_single_process_run_ignores_the_hook_with_one_line(capsys):
    data = torch.utils.data.TensorDataset(torch.randn(32, 4), torch.randint(0, 2, (32,)))
    cfg = TrainerConfig(epochs=1, batch_size=16, progress=False, comm_hook="count-sketch")
    trainer = Trainer(torch.nn.Linear(4, 2), cfg, data, device=torch.device("cpu"))
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "comm_hook=count-sketch ignored" in out
    assert trainer.comm is None and trainer.optimizer.param_groups[0]["momentum"] == cfg.momentum
    trainer.fit()
    assert trainer.comm_summary() == {} and not any(k.startswith("comm/") for k in trainer.history[-1])


def test_models_the_hook_cannot_handle_fail_with_one_line():
    sparse = torch.nn.Sequential(torch.nn.Embedding(10, 4, sparse=True), torch.nn.Linear(4, 2))
    with pytest.raises(WorkbenchError, match="sparse gradients"):
        build_hook(sparse, TrainerConfig(comm_hook="powersgd"), seed=0)
    mixed = torch.nn.Sequential(torch.nn.Linear(40, 40), torch.nn.Linear(40, 2).double())
    with pytest.raises(WorkbenchError, match="one floating dtype"):
        build_hook(mixed, TrainerConfig(comm_hook="count-sketch"), seed=0)
