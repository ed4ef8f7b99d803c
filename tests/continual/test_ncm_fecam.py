"""NCM and FeCAM (Avalanche's classifiers and update plugins, as shipped) through the built strategies, on
hand-made Gaussian features: predictions equal a direct Euclidean nearest-mean / Mahalanobis computation
written here; the backbone does not change after the first task."""

from __future__ import annotations

import pytest
import torch
from cil_helpers import build_cil, tensor_stream, train_task

from continual.run import task_accuracies
from workbench.models import build_model

TASKS = [[0, 1, 2], [3, 4]]
DIM = 4  # images of 1 × 2 × 2 pixels: a linear MLP's embedding is the flattened image itself


def _features(per_class: int = 30, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Positive 4-D Gaussian features, class means close enough (and covariances different enough) that the
    metrics disagree on some points."""
    g = torch.Generator().manual_seed(seed)
    means = 3.0 + 1.0 * torch.rand(5, DIM, generator=g)
    scales = 0.2 + 0.6 * torch.rand(5, DIM, generator=g)
    y = torch.arange(5).repeat_interleave(per_class)
    x = means[y] + scales[y] * torch.randn(len(y), DIM, generator=g)
    return x.clamp_min(0.05).view(-1, 1, 2, 2), y


def _run(method: str, *overrides: str):
    x, y = _features()
    stream = tensor_stream(x, y, TASKS)
    torch.manual_seed(0)
    backbone = build_model("mlp", num_classes=5, in_channels=1, hidden=(), input_size=2)
    s = build_cil(method, stream, backbone, *overrides)
    before = None
    for t in range(len(TASKS)):
        train_task(s, stream, t)
        if t == 0:
            before = {k: v.clone() for k, v in backbone.state_dict().items()}
            s.first_task_acc = task_accuracies(s.eval(stream.scenario.test_stream[:1]), 1)[0]
    for k, v in backbone.state_dict().items():
        assert torch.equal(v, before[k]), f"backbone {k} changed after task 0"
    return s, stream, x.view(len(x), DIM), y


def _predictions(s, x: torch.Tensor) -> torch.Tensor:
    s.model.eval()
    with torch.no_grad():
        return s.model(x.view(-1, 1, 2, 2)).argmax(dim=1)


def _check_eval_path(s, stream, pred: torch.Tensor, y: torch.Tensor) -> None:
    """The run's evaluation (padding, seen-class mask, Avalanche's accuracy) agrees with ``pred`` per task."""
    s.seen_plugin.task = len(TASKS) - 1
    accs = task_accuracies(s.eval(stream.scenario.test_stream), len(TASKS))
    for t, classes in enumerate(TASKS):
        mask = torch.isin(y, torch.tensor(classes))
        assert accs[t] == pytest.approx(100.0 * float((pred[mask] == y[mask]).float().mean()), abs=1e-4)


@pytest.mark.parametrize("normalize", [True, False])
def test_ncm_predicts_the_euclidean_nearest_mean(normalize: bool) -> None:
    s, stream, x, y = _run("ncm", f"ncm.normalize={str(normalize).lower()}")
    f = x / x.norm(dim=1, keepdim=True) if normalize else x
    means = torch.stack([f[y == c].mean(0) for c in range(5)])
    if normalize:
        means = means / means.norm(dim=1, keepdim=True)
    want = ((f[:, None, :] - means[None]) ** 2).sum(-1).argmin(dim=1)
    got = _predictions(s, x)
    assert torch.equal(got, want)
    assert int((want != y).sum()) > 0  # the data is not trivially separable: the metric matters
    _check_eval_path(s, stream, got, y)
    first = torch.isin(y, torch.tensor(TASKS[0]))  # after task 0: 3 class means, output padded to 5 classes
    want0 = ((f[first][:, None, :] - means[TASKS[0]][None]) ** 2).sum(-1).argmin(dim=1)
    assert s.first_task_acc == pytest.approx(100.0 * float((want0 == y[first]).float().mean()), abs=1e-4)


def _shrink(cov: torch.Tensor, g1: float, g2: float) -> torch.Tensor:
    off = cov - torch.diag(torch.diagonal(cov))
    off_mean = off[off != 0].mean()
    eye = torch.eye(len(cov))
    return cov + g1 * torch.diagonal(cov).mean() * eye + g2 * off_mean * (1 - eye)


def test_fecam_predicts_the_mahalanobis_nearest_prototype() -> None:
    g1, g2, beta = 1.0, 0.5, 0.5
    s, stream, x, y = _run("fecam", f"fecam.shrink1={g1}", f"fecam.shrink2={g2}", f"fecam.tukey_power={beta}")
    phi = x**beta
    dists = []
    for c in range(5):
        fc = phi[y == c]
        mu = fc.mean(0)
        d = fc - mu
        cov = d.T @ d / (len(fc) - 1)
        cov = _shrink(_shrink(cov, g1, g2), g1, g2)  # applied twice, as Avalanche's apply_cov_transforms does
        sd = torch.diagonal(cov).sqrt()
        corr = cov / (sd[:, None] * sd[None, :])
        diff = phi / phi.norm(dim=1, keepdim=True) - mu / mu.norm()
        dists.append(((diff @ torch.linalg.pinv(corr)) * diff).sum(1))
    want = torch.stack(dists, 1).argmin(1)
    got = _predictions(s, x)
    assert torch.equal(got, want)
    euclid = ((x[:, None, :] - torch.stack([x[y == c].mean(0) for c in range(5)])[None]) ** 2).sum(-1).argmin(1)
    assert not torch.equal(want, euclid)  # Mahalanobis decides differently from the nearest mean here
    _check_eval_path(s, stream, got, y)
