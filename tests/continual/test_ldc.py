"""LDC (arXiv 2407.08536) on hand-made data: the projector recovers an exact affine map (= a least-squares solution
computed here) and moves the stored prototypes by it, toward the old classes' true means under the new backbone;
new prototypes are class means; predictions are the nearest (normalised) mean; the training loss equals its
formula written here with non-trivial weights, and the old model gets no gradient; ``ldc.compensate=false`` leaves
the old prototypes where they were."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from cil_helpers import build_cil, tensor_stream, train_task
from torch import nn

from continual.ldc import fit_projector
from continual.models import embed
from continual.run import task_accuracies
from workbench.models import build_model
from workbench.models.features import FeatureModel

TASKS = [[0, 1, 2], [3, 4]]


def _affine(n: int = 60, dim: int = 5, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    old = torch.randn(n, dim, generator=g, dtype=torch.float64)
    A = torch.randn(dim, dim, generator=g, dtype=torch.float64)
    b = torch.randn(dim, generator=g, dtype=torch.float64)
    return old, A, b


def _direct_lstsq(old: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
    """``[W | b]`` minimising ``Σ‖W old_i + b − new_i‖²`` (the minimum-norm one: ``pinv([old | 1]) new``)."""
    a = torch.cat([old, torch.ones(len(old), 1, dtype=old.dtype)], dim=1)
    return (torch.linalg.pinv(a) @ new).T


@pytest.mark.parametrize("bias", [True, False])
def test_least_squares_projector_recovers_the_exact_map(bias: bool) -> None:
    old, A, b = _affine()
    b = b if bias else torch.zeros_like(b)
    new = old @ A.T + b
    p = fit_projector(old.float(), new.float(), bias=bias, solver="lstsq")
    want = _direct_lstsq(old, new)
    assert torch.allclose(p.weight.double(), want[:, :-1], atol=1e-4)
    assert torch.allclose(p.weight.double(), A, atol=1e-4)
    if bias:
        assert torch.allclose(p.bias.double(), b, atol=1e-4)
    else:
        assert p.bias is None
    protos = torch.randn(3, 5, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(p(protos.float()).double(), protos @ A.T + b, atol=1e-4)


def test_adam_projector_converges_to_the_least_squares_map() -> None:
    old, A, b = _affine(n=200)
    new = (old @ A.T + b).float()
    p = fit_projector(old.float(), new, bias=True, epochs=400, lr=1e-2, batch_size=32)
    want = _direct_lstsq(old, new.double())
    assert torch.allclose(p.weight.double(), want[:, :-1], atol=2e-2)
    assert torch.allclose(p.bias.double(), want[:, -1], atol=2e-2)
    assert not any(q.requires_grad for q in p.parameters())


def _blobs(per_class: int = 30, seed: int = 0, noise: float = 0.4) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    means = 2.0 * torch.randn(5, 1, 2, 2, generator=g)
    y = torch.arange(5).repeat_interleave(per_class)
    return means[y] + noise * torch.randn(len(y), 1, 2, 2, generator=g), y


def _strategy(*overrides: str):
    x, y = _blobs()
    stream = tensor_stream(x, y, TASKS)
    torch.manual_seed(0)
    backbone = build_model("mlp", num_classes=5, in_channels=1, hidden=(16,), input_size=2)
    s = build_cil("ldc", stream, backbone, "epochs=5", *overrides)
    return s, stream, x, y


def _embed(model, x: torch.Tensor) -> torch.Tensor:
    was = model.training
    model.eval()
    with torch.no_grad():
        f = embed(model, x)[1]
    model.train(was)
    return f


class AffineBody(FeatureModel):
    """Embedding ``f = W x + b`` (a linear body) under a linear head: any change of the body moves every embedding
    by one affine map, ``f_new = W_new W_old⁻¹ (f_old − b_old) + b_new``, so the true drift is known."""

    def __init__(self, dim: int = 4, num_classes: int = 5) -> None:
        super().__init__()
        self.body = nn.Linear(dim, dim)
        self.flatten = nn.Identity()
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.body(x.flatten(1))))


def _affine_run(*overrides: str):
    x, y = _blobs(noise=1.0)  # the current task's images span the input space (a well-posed fit)
    stream = tensor_stream(x, y, TASKS)
    torch.manual_seed(0)
    s = build_cil("ldc", stream, AffineBody(), "epochs=5", "lr=0.01", *overrides)
    train_task(s, stream, 0)
    before, previous = s.prototypes.clone(), s.old_model
    train_task(s, stream, 1)
    assert s.old_model is not previous
    f_all = _embed(s.model, x)
    truth = torch.stack([f_all[y == c].mean(0) for c in TASKS[0]])  # old classes' means under the new body
    return s, x, y, before, previous, truth


def test_compensation_moves_prototypes_by_the_least_squares_map_onto_the_true_new_means() -> None:
    s, x, y, before, previous, truth = _affine_run("ldc.solver=lstsq", "ldc.bias=true")
    xt = x[torch.isin(y, torch.tensor(TASKS[1]))]
    old_f, new_f = _embed(previous, xt).double(), _embed(s.model, xt).double()
    want = _direct_lstsq(old_f, new_f)  # fitted old → new on the current task's images
    assert torch.allclose(s.projector.weight.double(), want[:, :-1], atol=1e-4)
    assert torch.allclose(s.projector.bias.double(), want[:, -1], atol=1e-4)
    old = torch.tensor(TASKS[0])
    moved = before[old].double() @ want[:, :-1].T + want[:, -1]
    assert torch.allclose(s.prototypes[old].double(), moved, atol=1e-4)
    drift = (before[old] - truth).norm()
    assert drift > 0.1  # the body did move
    assert torch.allclose(s.prototypes[old], truth, atol=1e-4 * max(1.0, float(truth.abs().max())))


def test_adam_projector_moves_prototypes_toward_the_true_new_means() -> None:
    # Adam (the paper's solver) on an affine projector, given enough steps for 60 images in batches of 8
    s, x, y, before, previous, truth = _affine_run("ldc.projector_epochs=500", "ldc.projector_lr=0.02", "ldc.bias=true")
    old = torch.tensor(TASKS[0])
    assert (s.prototypes[old] - truth).norm() < 0.1 * (before[old] - truth).norm()


def test_prototypes_are_class_means_and_prediction_is_the_nearest_mean() -> None:
    s, stream, x, y = _strategy("ldc.metric=cosine")
    train_task(s, stream, 0)
    train_task(s, stream, 1)
    f = _embed(s.model, x)
    for c in TASKS[1]:  # new classes: the mean of their embeddings under the current backbone
        assert torch.allclose(s.prototypes[c], f[y == c].mean(0), atol=1e-5)
    assert bool(s.available.all())
    nf, npr = F.normalize(f, dim=1), F.normalize(s.prototypes, dim=1)
    direct = torch.cdist(nf, npr).argmin(dim=1)
    s.model.eval()
    s.is_training = False
    with torch.no_grad():
        s.mbatch = [x, y, torch.zeros_like(y)]
        pred = s.forward().argmax(dim=1)
    assert torch.equal(pred, direct)
    s.seen_plugin.task = len(TASKS) - 1
    accs = task_accuracies(s.eval(stream.scenario.test_stream), len(TASKS))
    for t, classes in enumerate(TASKS):
        mask = torch.isin(y, torch.tensor(classes))
        assert accs[t] == pytest.approx(100.0 * float((direct[mask] == y[mask]).float().mean()), abs=1e-4)


def test_l2_metric_is_plain_euclidean_nearest_mean() -> None:
    s, stream, x, y = _strategy("ldc.metric=l2")
    train_task(s, stream, 0)
    f = _embed(s.model, x)
    s.model.eval()
    s.is_training = False
    with torch.no_grad():
        s.mbatch = [x, y, torch.zeros_like(y)]
        scores = s.forward()
    seen = torch.tensor(TASKS[0])
    assert torch.equal(seen[scores[:, seen].argmax(1)], seen[torch.cdist(f, s.prototypes[seen]).argmin(1)])
    assert bool((scores[:, TASKS[1]] < scores[:, seen].min()).all())  # unseen classes never win


def test_training_loss_equals_its_formula_and_the_old_model_gets_no_gradient() -> None:
    lam, T, lam_f = 3.5, 3.0, 0.7
    s, stream, x, y = _strategy(f"ldc.lwf_weight={lam}", f"ldc.temperature={T}", f"ldc.feat_weight={lam_f}")
    train_task(s, stream, 0)
    s.experience = stream.scenario.train_stream[1]
    with torch.no_grad():  # the backbone has moved away from the previous one
        for p in s.model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    s.model.train()
    xb, yb = x[y >= 3][::3], y[y >= 3][::3]
    logits, f = embed(s.model, xb)
    loss = s.training_loss(xb, yb, logits, f)
    with torch.no_grad():
        old_logits, old_f = embed(s.old_model, xb)
    new, old = TASKS[1], TASKS[0]
    ce = F.cross_entropy(logits[:, new], yb - 3)
    p_old = torch.softmax(old_logits[:, old] / T, dim=1)
    kd = -(p_old * torch.log_softmax(logits[:, old] / T, dim=1)).sum(1).mean()
    fd = ((f - old_f) ** 2).mean()
    want = ce + lam * kd + lam_f * fd
    assert float(kd.detach()) > 0 and float(fd.detach()) > 1e-3
    assert torch.allclose(loss, want, atol=1e-6)
    assert torch.allclose(s.loss_terms["lwf"], lam * kd) and torch.allclose(s.loss_terms["feat"], lam_f * fd)
    loss.backward()
    assert all(p.grad is None and not p.requires_grad for p in s.old_model.parameters())
    assert all(p.grad is not None for p in s.model.parameters())
    # task 0: cross-entropy over the first task's classes only
    s.experience = stream.scenario.train_stream[0]
    s.old_model = None
    x0, y0 = x[y < 3][::3], y[y < 3][::3]
    logits0, f0 = embed(s.model, x0)
    assert torch.allclose(s.training_loss(x0, y0, logits0, f0), F.cross_entropy(logits0[:, :3], y0), atol=1e-6)


def test_old_prototypes_stay_put_without_compensation() -> None:
    s, stream, x, y = _strategy("ldc.compensate=false")
    train_task(s, stream, 0)
    before = s.prototypes.clone()
    train_task(s, stream, 1)
    assert s.projector is None
    assert torch.equal(s.prototypes[TASKS[0]], before[TASKS[0]])
    on, *_ = _strategy()
    train_task(on, stream, 0)
    train_task(on, stream, 1)
    assert not torch.allclose(on.prototypes[TASKS[0]], before[TASKS[0]])
