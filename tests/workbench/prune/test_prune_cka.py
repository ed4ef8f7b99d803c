"""Linear CKA: definitions, invariances, estimators, and the one-pass matrix over hooked features."""

from __future__ import annotations

import pytest
import torch

from workbench.errors import WorkbenchError
from workbench.models import build_model
from workbench.models.features import features
from workbench.prune.cka import (
    CKAAccumulator,
    biased_cka_matrix,
    cka_matrix,
    linear_cka,
    naive_cka_matrix,
    unbiased_hsic_matrix,
)


def _rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _formula_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """tr(KHLH) / sqrt(tr(KHKH) tr(LHLH)) with an explicit centring matrix H."""
    x, y = x.reshape(len(x), -1).double(), y.reshape(len(y), -1).double()
    n = x.shape[0]
    h = torch.eye(n, dtype=torch.float64) - torch.ones(n, n, dtype=torch.float64) / n
    k, l = x @ x.T, y @ y.T

    def hsic(a, b):
        return torch.trace(a @ h @ b @ h)

    return float(hsic(k, l) / torch.sqrt(hsic(k, k) * hsic(l, l)))


def _formula_unbiased_hsic(k: torch.Tensor, l: torch.Tensor) -> float:
    """Song et al. (2012) HSIC_1 written term by term with loops over the zero-diagonal Grams."""
    m = k.shape[0]
    kt, lt = k.clone(), l.clone()
    for i in range(m):
        kt[i, i] = 0.0
        lt[i, i] = 0.0
    one = torch.ones(m, 1, dtype=torch.float64)
    t1 = torch.trace(kt @ lt)
    t2 = (one.T @ kt @ one) * (one.T @ lt @ one) / ((m - 1) * (m - 2))
    t3 = 2.0 / (m - 2) * (one.T @ kt @ lt @ one)
    return float((t1 + t2 - t3) / (m * (m - 3)))


@pytest.mark.parametrize("form", ["feature", "gram", "auto"])
def test_cka_of_x_with_itself_is_one(form):
    x = _rand(20, 7)
    assert float(linear_cka(x, x, form=form)) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("form", ["feature", "gram"])
def test_invariant_to_orthogonal_transform_and_isotropic_scaling(form):
    x, y = _rand(30, 6, seed=1), _rand(30, 4, seed=2)
    y = y + x[:, :4]
    q, _ = torch.linalg.qr(_rand(6, 6, seed=3))
    base = float(linear_cka(x, y, form=form))
    assert 0.05 < base < 0.99
    assert float(linear_cka(3.7 * x @ q, y, form=form)) == pytest.approx(base, abs=1e-12)
    assert float(linear_cka(x, 0.2 * y, form=form)) == pytest.approx(base, abs=1e-12)


def test_forms_agree_and_equal_the_formula():
    x, y = _rand(25, 3, 2, 2, seed=4), _rand(25, 5, seed=5)
    y = y + x.reshape(25, -1)[:, :5] ** 2
    want = _formula_cka(x, y)
    assert float(linear_cka(x, y, form="feature")) == pytest.approx(want, abs=1e-12)
    assert float(linear_cka(x, y, form="gram")) == pytest.approx(want, abs=1e-12)
    # Float32 input is cast to float64 before anything is computed.
    assert float(linear_cka(x.float(), y.float())) == pytest.approx(_formula_cka(x.float(), y.float()), abs=1e-12)


def test_bad_inputs_raise():
    with pytest.raises(WorkbenchError, match="same samples"):
        linear_cka(_rand(5, 2), _rand(6, 2))
    with pytest.raises(WorkbenchError, match="unknown CKA form"):
        linear_cka(_rand(5, 2), _rand(5, 2), form="rbf")
    with pytest.raises(WorkbenchError, match="unknown CKA estimator"):
        CKAAccumulator("debiased")
    with pytest.raises(WorkbenchError, match="at least 4"):
        unbiased_hsic_matrix([_rand(3, 2)])


def test_unbiased_hsic_equals_song_formula():
    feats = [_rand(9, 4, seed=6), _rand(9, 2, 3, seed=7), _rand(9, 5, seed=8)]
    got = unbiased_hsic_matrix(feats)
    for i, a in enumerate(feats):
        for j, b in enumerate(feats):
            a2, b2 = a.reshape(9, -1), b.reshape(9, -1)
            assert float(got[i, j]) == pytest.approx(_formula_unbiased_hsic(a2 @ a2.T, b2 @ b2.T), abs=1e-12)


def test_unbiased_minibatch_estimate_converges_to_full_batch():
    """Both estimators are consistent: their gap, averaged over 4 seeds, shrinks as n grows."""
    mean_gap = {}
    for n in (128, 1024, 4096):
        gaps = []
        for seed in range(4):
            w = _rand(6, 4, seed=100 * seed)
            x = _rand(n, 6, seed=100 * seed + 1)
            y = torch.tanh(x @ w) + 0.5 * _rand(n, 4, seed=100 * seed + 2)
            full = biased_cka_matrix([x, y])[0, 1]
            acc = CKAAccumulator("unbiased")
            for b in range(0, n, 128):
                acc.update([x[b : b + 128], y[b : b + 128]])
            gaps.append(abs(float(acc.compute()[0, 1] - full)))
        mean_gap[n] = sum(gaps) / len(gaps)
    assert mean_gap[4096] < mean_gap[1024] < mean_gap[128]
    assert mean_gap[4096] < 0.3 * mean_gap[128]


@pytest.mark.parametrize("widths", [(3, 4, 2), (40, 50, 64)])
def test_biased_matrix_equals_pairwise(widths):
    feats = [_rand(32, w, seed=30 + i) for i, w in enumerate(widths)]
    feats[1] = feats[1] + 0.3 * torch.cat([feats[0]] * 20, dim=1)[:, : widths[1]]
    want = torch.tensor([[_formula_cka(a, b) for b in feats] for a in feats], dtype=torch.float64)
    torch.testing.assert_close(biased_cka_matrix(feats), want, atol=1e-12, rtol=0)
    torch.testing.assert_close(naive_cka_matrix(feats), want, atol=1e-12, rtol=0)
    # Gram rows produced in several chunks give the same matrix.
    torch.testing.assert_close(biased_cka_matrix(feats, budget_bytes=1), want, atol=1e-12, rtol=0)


def _loader(n_batches: int, batch: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(batch, 3, 8, 8, generator=g), torch.zeros(batch, dtype=torch.long)) for _ in range(n_batches)]


def test_cka_matrix_on_hooked_paths_equals_per_pair_naive():
    torch.manual_seed(0)
    model = build_model("resnet20", num_classes=10).train()
    paths = ["layer1.0", "layer1.2", "layer2.1", "layer3.2", "flatten"]
    loader = _loader(4, 8, seed=1)
    got = cka_matrix(model, paths, loader, device="cpu")
    assert model.training  # mode restored
    model.eval()
    with torch.no_grad():
        outs = [features(model, x, paths) for x, _ in loader]
    feats = [torch.cat([o[p] for o in outs]) for p in paths]
    want = torch.tensor([[_formula_cka(a, b) for b in feats] for a in feats], dtype=torch.float64)
    assert got.dtype == torch.float64 and got.shape == (5, 5)
    torch.testing.assert_close(got, want, atol=1e-10, rtol=0)
    torch.testing.assert_close(naive_cka_matrix(feats), want, atol=1e-10, rtol=0)
    # max_batches reads only the first batches.
    head = [torch.cat([o[p] for o in outs[:2]]) for p in paths]
    torch.testing.assert_close(cka_matrix(model, paths, loader, "cpu", max_batches=2), naive_cka_matrix(head))


def test_cka_matrix_unbiased_accumulates_batch_hsic():
    torch.manual_seed(0)
    model = build_model("small_cnn", num_classes=10).eval()
    paths = ["layer1", "layer2", "layer3"]
    loader = _loader(3, 6, seed=2) + _loader(1, 3, seed=3)  # the last batch (3 samples) is skipped
    got = cka_matrix(model, paths, loader, device="cpu", estimator="unbiased")
    total = torch.zeros(3, 3, dtype=torch.float64)
    with torch.no_grad():
        for x, _ in loader[:3]:
            o = features(model, x, paths)
            mats = [o[p].reshape(len(x), -1).double() for p in paths]
            for i in range(3):
                for j in range(3):
                    total[i, j] += _formula_unbiased_hsic(mats[i] @ mats[i].T, mats[j] @ mats[j].T)
    want = total / torch.outer(total.diagonal().sqrt(), total.diagonal().sqrt())
    torch.testing.assert_close(got, want, atol=1e-10, rtol=0)
