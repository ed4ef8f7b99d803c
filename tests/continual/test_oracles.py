"""eTag's and IR's training losses pinned through the methods' own code path (forward + criterion of the built
strategy, after a real first task), against the papers' formulas computed here independently.

Unequal task sizes (3 base classes, then 2) make k = |seen| / |new| = 1.5; T = 2.5, weights ≠ 1. Gradient paths:
the old model (teacher) and eTag's generator receive nothing; one SGD step on the distillation term lowers it.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from cil_helpers import build_cil, gaussian_images, tensor_stream, train_task

from workbench.models import build_model

TASKS = [[0, 1, 2], [3, 4]]
K = 3 / 2
T = 2.5
KD_W, DIST_W, IR_W = 0.7, 1.3, 0.6


def _rotations(x: torch.Tensor) -> torch.Tensor:
    """The 4 rotations of a batch, rotation-major (written here, not the core's ``rotate_batch``)."""
    return torch.cat([torch.rot90(x, r, dims=(-2, -1)) for r in range(4)])


def _kl_t2(student: torch.Tensor, teacher: torch.Tensor, t: float) -> torch.Tensor:
    """``T² · mean_rows Σ_c p_t (log p_t − log p_s)`` with ``p = softmax(z / T)``, written out."""
    log_ps = student / t - torch.logsumexp(student / t, dim=1, keepdim=True)
    log_pt = teacher / t - torch.logsumexp(teacher / t, dim=1, keepdim=True)
    return t * t * (log_pt.exp() * (log_pt - log_ps)).sum(dim=1).mean()


def _ce_over(logits: torch.Tensor, y: torch.Tensor, classes: list[int]) -> torch.Tensor:
    """Cross-entropy with the softmax over ``classes`` only (columns of other classes dropped)."""
    cols = torch.tensor(classes)
    pos = {c: i for i, c in enumerate(classes)}
    target = torch.tensor([pos[int(c)] for c in y])
    sub = logits[:, cols]
    return -(sub - torch.logsumexp(sub, dim=1, keepdim=True)).gather(1, target[:, None]).mean()


def _perturb(model: torch.nn.Module, seed: int = 5) -> None:
    """Move the student away from the old model, so that every distillation term is non-zero."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=g))


def _at_task_one(method: str, *overrides: str):
    """The method's strategy after a real first task, set on a batch of task 1 (as Avalanche sets it)."""
    x, y = gaussian_images(5, 6)
    stream = tensor_stream(x, y, TASKS)
    torch.manual_seed(0)
    backbone = build_model("mlp", num_classes=5, in_channels=1, hidden=(16, 12, 10))
    s = build_cil(method, stream, backbone, *overrides)
    train_task(s, stream, 0)
    s.experience = stream.scenario.train_stream[1]
    if method == "ir":
        s._before_training_exp()
    s.model.train()
    s.is_training = True
    batch = torch.cat([torch.nonzero(y == c).squeeze(1)[:3] for c in (3, 4)])
    s.mbatch = [x[batch], y[batch], torch.zeros(len(batch), dtype=torch.long)]
    _perturb(s.model)
    return s


ETAG = ("etag.temperature=2.5", f"etag.kd_weight={KD_W}", f"etag.dist_weight={DIST_W}", "etag.gen_steps=0")
ETAG += ("etag.gen_hidden=16", "etag.latent_dim=4")


def _etag_terms(s, seed: int = 11) -> tuple[torch.Tensor, dict]:
    """``criterion()`` of the strategy, with the RNG seeded so the test can replay its generator draws."""
    s.mb_output = s.forward()
    torch.manual_seed(seed)
    loss = s.criterion()
    return loss, dict(s.loss_terms)


def _etag_oracle(s, seed: int = 11) -> dict[str, torch.Tensor]:
    """eTag's task-1 terms (arXiv 2304.10103, eqs. of L_kd, L_dist, L_cls) from the networks, written out."""
    x, y = s.mb_x, s.mb_y
    xr = _rotations(x)
    new, old = s.model, s.old_model
    _, f_new, aux_new = new.forward_all(xr)
    with torch.no_grad():
        _, f_old, aux_old = old.forward_all(xr)
    branches = len(aux_new) - 1  # branches after stages 1..S−1 (etag.kd_last_head=false)
    kd = K * sum(_kl_t2(aux_new[b], aux_old[b], T) for b in range(branches))
    dist = K * ((f_new - f_old) ** 2).sum().sqrt()
    seen = TASKS[0] + TASKS[1]
    torch.manual_seed(seed)
    old_classes = torch.tensor(TASKS[0])
    y_old = old_classes[torch.randint(len(old_classes), (len(y),))]
    z = torch.randn(len(y), s.generator.latent)
    with torch.no_grad():
        fake = s.generator.decode(z, y_old)
    head = new.head
    cls = _ce_over(head(f_new[: len(x)]), y, seen) / (K + 1) + K / (K + 1) * _ce_over(head(fake), y_old, seen)
    return {"kd": kd, "dist": dist, "cls": cls, "total": cls + KD_W * kd + DIST_W * dist}


def test_etag_loss_terms_equal_the_paper_formula() -> None:
    s = _at_task_one("etag", *ETAG)
    assert s.old_units() == pytest.approx(K)
    loss, terms = _etag_terms(s)
    want = _etag_oracle(s)
    for name in ("kd", "dist", "cls"):
        assert float(terms[name]) == pytest.approx(float(want[name]), rel=1e-5), name
        assert float(want[name]) > 1e-3
    assert float(loss) == pytest.approx(float(want["total"]), rel=1e-5)


def test_etag_kd_direction_and_temperature_by_gradient() -> None:
    """d(k·T²·KL(p_old ‖ p_new))/dz_new = k·T·(p_new − p_old)/rows: pins direction (teacher = old), T and k."""
    s = _at_task_one("etag", *ETAG)
    s.mb_output = s.forward()
    s._aux = [a.detach().requires_grad_(True) for a in s._aux]
    torch.manual_seed(11)
    s.criterion().backward()
    with torch.no_grad():
        _, _, aux_old = s.old_model.forward_all(_rotations(s.mb_x))
    z_new = s._aux[0]
    rows = len(z_new)
    want = KD_W * K * T * (F.softmax(z_new / T, 1) - F.softmax(aux_old[0] / T, 1)) / rows
    assert torch.allclose(z_new.grad, want, atol=1e-6)
    assert s._aux[-1].grad is None or torch.count_nonzero(s._aux[-1].grad) == 0  # last head: not distilled


def test_etag_teacher_and_generator_receive_nothing() -> None:
    s = _at_task_one("etag", *ETAG)
    loss, _ = _etag_terms(s)
    loss.backward()
    assert all(p.grad is None for p in s.old_model.parameters())
    assert all(not p.requires_grad for p in s.old_model.parameters())
    assert all(p.grad is None for p in s.generator.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in s.model.aux.parameters())


@pytest.mark.parametrize("term", ["kd", "dist"])
def test_etag_one_step_lowers_the_distillation_term(term: str) -> None:
    s = _at_task_one("etag", *ETAG)
    before = _etag_oracle(s)[term]
    s.model.zero_grad()
    before.backward()
    with torch.no_grad():
        for p in s.model.parameters():
            if p.grad is not None:
                p.sub_(0.05 * p.grad)
    _, terms = _etag_terms(s)
    assert float(terms[term]) < float(before) - 1e-4


IR = (f"ir.dist_weight={IR_W}",)


def _ir_oracle(s) -> dict[str, torch.Tensor]:
    """IR's task-1 loss (arXiv 2403.16221): CE of the transient head on rotation joint labels of the task's local
    class ids, plus the space-maintenance term λ·k·‖F_new − F_old‖₂, written out."""
    x, y = s.mb_x, s.mb_y
    xr = _rotations(x)
    local = {c: i for i, c in enumerate(TASKS[1])}
    y_local = torch.tensor([local[int(c)] for c in y])
    labels = torch.cat([4 * y_local + r for r in range(4)])
    f_new = s.model.embed(xr)
    with torch.no_grad():
        f_old = s.old_model.embed(xr)
    logits = s.model.head(f_new)
    ce = -(logits - torch.logsumexp(logits, 1, keepdim=True)).gather(1, labels[:, None]).mean()
    dist = IR_W * K * ((f_new - f_old) ** 2).sum().sqrt()
    return {"ce": ce, "dist": dist, "total": ce + dist}


def test_ir_loss_equals_the_paper_formula_with_a_positive_space_term() -> None:
    s = _at_task_one("ir", *IR)
    s.mb_output = s.forward()
    loss = s.criterion()
    want = _ir_oracle(s)
    assert float(want["dist"]) > 1e-3
    assert float(s.loss_terms["dist"]) == pytest.approx(float(want["dist"]), rel=1e-5)
    assert float(s.loss_terms["ce"]) == pytest.approx(float(want["ce"]), rel=1e-5)
    assert float(loss) == pytest.approx(float(want["total"]), rel=1e-5)


def test_ir_teacher_receives_nothing_and_one_step_lowers_the_space_term() -> None:
    s = _at_task_one("ir", *IR)
    s.mb_output = s.forward()
    s.criterion().backward()
    assert all(p.grad is None for p in s.old_model.parameters())
    assert all(not p.requires_grad for p in s.old_model.parameters())
    before = _ir_oracle(s)["dist"]
    s.model.zero_grad()
    before.backward()
    with torch.no_grad():
        for p in s.model.backbone.parameters():
            if p.grad is not None:
                p.sub_(0.05 * p.grad)
    s.mb_output = s.forward()
    s.criterion()
    assert float(s.loss_terms["dist"]) < float(before) - 1e-4
    assert math.isfinite(float(before))
