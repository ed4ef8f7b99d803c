"""Oracle tests of the KD family's training losses (issue 16).

Each test builds tiny networks with fixed weights, computes the loss through the method's own
``Objective``, and recomputes the paper's formula here, independently of ``workbench.distill``: every
term, the weighted total, and the gradient of the total with respect to every trainable parameter
(which pins what is detached: a dropped stop-gradient leaves the value alone but changes the
gradient). Temperatures and weights are non-default and ≠ 1 so that a wrong temperature or weight
shows. Frozen teachers must receive no gradient, and one gradient step on the distillation term must
lower it (a flipped sign raises it).
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from compression.kd.cohort import Cohort
from compression.kd.ctsl_mkt import CTSLObjective
from compression.kd.ddnn_ekd import DDNNObjective, make_depth_selectable, set_depth
from compression.kd.hsakd import BranchTrainingObjective, HSAKDObjective, HSAKDWeights, TeacherWithBranches
from compression.kd.kd import KDObjective, KDWeights
from compression.kd.mcl import MCLObjective, MCLWeights
from compression.kd.mixskd import MixSKDObjective
from workbench.models import AuxiliaryBranches, build_model

C = 5  # classes
STAGES = ("layer1", "layer2", "layer3")


# --- the formulas, written out here ------------------------------------------------------------------------


def log_softmax(z: torch.Tensor) -> torch.Tensor:
    return z - z.logsumexp(dim=-1, keepdim=True)


def kl_T(student: torch.Tensor, teacher: torch.Tensor, T: float) -> torch.Tensor:
    """``T² · mean_rows Σ_c p_t,c (log p_t,c − log p_s,c)``, p = softmax(z / T) (Hinton, arXiv 1503.02531)."""
    log_t, log_s = log_softmax(teacher / T), log_softmax(student / T)
    return T * T * (log_t.exp() * (log_t - log_s)).sum(-1).mean()


def ce(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return -log_softmax(z).gather(1, y[:, None]).mean()


def rot(x: torch.Tensor, r: int) -> torch.Tensor:
    """``x`` rotated by r·90° from the H axis toward the W axis."""
    for _ in range(r):
        x = x.transpose(-2, -1).flip(-2)
    return x


def forward_with(model: nn.Module, x: torch.Tensor, paths) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``model(x)`` and the outputs of the modules at ``paths`` (own hooks, not ``FeatureHooks``)."""
    outs: dict[str, torch.Tensor] = {}
    modules = dict(model.named_modules())
    handles = [modules[p].register_forward_hook(lambda m, i, o, p=p: outs.__setitem__(p, o)) for p in paths]
    try:
        y = model(x)
    finally:
        for h in handles:
            h.remove()
    return y, outs


# --- helpers ---------------------------------------------------------------------------------------------


def small(seed: int, widths=(4, 6, 8)) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("small_cnn", C, 1, widths=widths).eval()


def batch(n: int = 10, seed: int = 0, labels=None) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 8, 8, generator=g)
    y = torch.tensor(labels) if labels is not None else torch.randint(0, C, (n,), generator=g)
    return x, y


def close(a: torch.Tensor, b: torch.Tensor, what: str = "") -> None:
    assert torch.allclose(a.detach().double(), b.detach().double(), rtol=1e-5, atol=1e-6), (
        f"{what}: {a.item()} != {b.item()}"
    )


def trainable(*modules: nn.Module) -> list[nn.Parameter]:
    return [p for m in modules for p in m.parameters() if p.requires_grad]


def same_grads(loss: torch.Tensor, reference: torch.Tensor, params: list[nn.Parameter]) -> None:
    """The gradients of ``loss`` and ``reference`` agree on every parameter (None counts as zero)."""
    g1 = torch.autograd.grad(loss, params, allow_unused=True, retain_graph=True)
    g2 = torch.autograd.grad(reference, params, allow_unused=True, retain_graph=True)
    for i, (a, b) in enumerate(zip(g1, g2, strict=True)):
        a = torch.zeros_like(params[i]) if a is None else a
        b = torch.zeros_like(params[i]) if b is None else b
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6), f"gradient of parameter {i} {tuple(params[i].shape)}"
    assert any(g is not None and g.abs().sum() > 0 for g in g2), "the reference has no gradient at all"


def no_grad_reaches(*modules: nn.Module) -> None:
    for m in modules:
        for p in m.parameters():
            assert not p.requires_grad and p.grad is None


def step_lowers(objective: nn.Module, model: nn.Module, params, x, y, term: str, lr: float = 0.02) -> None:
    """One SGD step on the objective's loss lowers ``terms[term]``."""
    before = objective(model, x, y)
    grads = torch.autograd.grad(before.loss, params, allow_unused=True)
    with torch.no_grad():
        for p, g in zip(params, grads, strict=True):
            if g is not None:
                p -= lr * g
        after = objective(model, x, y).terms[term]
    assert after < before.terms[term] - 1e-6, f"{term}: {before.terms[term].item()} -> {after.item()}"


# --- KD (Hinton) -----------------------------------------------------------------------------------------


def test_kd_defaults_are_the_cifar100_convention():
    w = KDWeights()
    assert (w.T, w.gamma, w.alpha) == (4.0, 0.1, 0.9)


def test_kd_loss_is_gamma_ce_plus_alpha_T2_kl_from_teacher_to_student():
    teacher, student = small(1), small(2)
    x, y = batch()
    T, gamma, alpha = 2.5, 0.3, 0.7
    objective = KDObjective(teacher, T, gamma, alpha)
    out = objective(student, x, y)
    zs, zt = student(x), objective.teacher(x)
    ce_ref, kd_ref = ce(zs, y), kl_T(zs, zt, T)
    close(out.terms["ce"], ce_ref, "ce")
    close(out.terms["kd"], kd_ref, "kd")
    total = gamma * ce_ref + alpha * kd_ref
    close(out.loss, total, "loss")
    same_grads(out.loss, total, trainable(student))
    out.loss.backward()
    no_grad_reaches(objective.teacher)
    assert torch.equal(objective.teacher(x), teacher(x))  # the teacher kept its weights (a frozen copy)


def test_kd_step_lowers_the_distillation_term():
    teacher, student = small(1), small(2)
    x, y = batch()
    step_lowers(KDObjective(teacher, 3.0, 0.0, 1.0), student, trainable(student), x, y, "kd", lr=0.2)


# --- HSAKD -------------------------------------------------------------------------------------------------


def hsakd_setup(main_rotations: bool = True):
    teacher, student = small(1), small(2)
    torch.manual_seed(3)
    t_branches = AuxiliaryBranches(teacher, 4 * C)
    torch.manual_seed(4)
    T, w_ce, w_aux, w_main = 2.0, 0.6, 0.8, 1.3
    objective = HSAKDObjective(teacher, t_branches, student, C, T, w_ce, w_aux, w_main, main_rotations).eval()
    return objective, student, (T, w_ce, w_aux, w_main)


def hsakd_reference(objective, student, x, y, T, main_rotations=True):
    n = x.shape[0]
    rotated = torch.cat([rot(x, r) for r in range(4)])
    with torch.no_grad():
        zt, ft = forward_with(objective.teacher, rotated, STAGES)
        qt = objective.teacher_branches([ft[p] for p in STAGES])
    zs, fs = forward_with(student, rotated, STAGES)
    qs = objective.student_branches([fs[p] for p in STAGES])
    ce_ref = ce(zs[:n], y)  # CE on the unrotated images
    aux = [kl_T(s, t, T) for s, t in zip(qs, qt, strict=True)]  # 4N rows, 4C joint classes
    main = kl_T(zs, zt, T) if main_rotations else kl_T(zs[:n], zt[:n], T)
    return ce_ref, aux, main


def test_hsakd_defaults():
    w = HSAKDWeights()
    assert w.T == 3.0 and w.main_rotations is True


@pytest.mark.parametrize("main_rotations", [True, False])
def test_hsakd_loss_matches_the_formula_term_by_term(main_rotations):
    objective, student, (T, w_ce, w_aux, w_main) = hsakd_setup(main_rotations)
    x, y = batch(6)
    out = objective(student, x, y)
    ce_ref, aux, main = hsakd_reference(objective, student, x, y, T, main_rotations)
    close(out.terms["ce"], ce_ref, "ce")
    assert len(aux) == 3
    for k, a in enumerate(aux):
        close(out.terms[f"aux{k + 1}_kd"], a, f"aux{k + 1}_kd")
    close(out.terms["aux_kd"], sum(aux), "aux_kd")
    close(out.terms["main_kd"], main, "main_kd")
    total = w_ce * ce_ref + w_aux * sum(aux) + w_main * main
    close(out.loss, total, "loss")
    same_grads(out.loss, total, trainable(student, objective.student_branches))
    out.loss.backward()
    no_grad_reaches(objective.teacher, objective.teacher_branches)
    # the main-head KL over all rotations is not the one over the unrotated rows
    _, _, other = hsakd_reference(objective, student, x, y, T, not main_rotations)
    assert abs(other.item() - main.item()) > 1e-3


def test_hsakd_step_lowers_the_distillation_terms():
    objective, student, (T, _, _, _) = hsakd_setup()
    objective.w_ce = 0.0
    x, y = batch(6)
    params = trainable(student, objective.student_branches)
    for term in ("aux_kd", "main_kd"):
        step_lowers(objective, student, params, x, y, term, lr=0.05)


def test_hsakd_teacher_branches_learn_the_joint_label_4y_plus_r_with_the_backbone_frozen():
    teacher = small(1)
    torch.manual_seed(3)
    model = TeacherWithBranches(teacher, AuxiliaryBranches(teacher, 4 * C)).eval()
    x, y = batch(6)
    out = BranchTrainingObjective()(model, x, y)
    stage_out = {}
    for r in range(4):
        _, f = forward_with(model.backbone, rot(x, r), STAGES)
        stage_out[r] = model.branches([f[p] for p in STAGES])
    for k in range(3):
        logits = torch.cat([stage_out[r][k] for r in range(4)])
        labels = torch.cat([4 * y + r for r in range(4)])
        close(out.terms[f"aux{k + 1}_ce"], ce(logits, labels), f"aux{k + 1}_ce")
    out.loss.backward()
    no_grad_reaches(model.backbone)
    assert all(p.grad is not None for p in model.branches.parameters())


# --- MixSKD ------------------------------------------------------------------------------------------------


def test_mixskd_loss_matches_the_formula_with_its_stop_gradients():
    model = small(2)
    alpha, T, w_logit, w_feat, w_self = 0.7, 2.0, 0.6, 0.9, 1.4
    torch.manual_seed(4)
    objective = MixSKDObjective(model, C, (1, 8, 8), alpha, T, w_logit, w_feat, w_self).eval()
    x, y = batch(6)
    torch.manual_seed(11)
    out = objective(model, x, y)
    # the same draw: λ ~ Beta(α, α), then the pairing permutation
    torch.manual_seed(11)
    a = torch.tensor(alpha)
    lam = float(torch.distributions.Beta(a, a).sample())
    perm = torch.randperm(x.shape[0])
    close(out.terms["lam"], torch.tensor(lam), "lam")
    assert 0.05 < lam < 0.95 and not torch.equal(perm, torch.arange(len(perm)))
    n = x.shape[0]

    def interp(t):
        return lam * t + (1 - lam) * t[perm]

    z, f = forward_with(model, torch.cat([x, interp(x)]), STAGES)
    feats = [f[p] for p in STAGES]
    heads = [*objective.branches(feats[:-1]), z]
    assert len(heads) == 3
    ce_ref = sum(ce(h[:n], y) + lam * ce(h[n:], y) + (1 - lam) * ce(h[n:], y[perm]) for h in heads)
    logit_ref = sum(kl_T(h[n:], interp(h[:n]).detach(), T) + kl_T(interp(h[:n]), h[n:].detach(), T) for h in heads)
    feat_ref = sum(((g[n:] - interp(g[:n])) ** 2).mean() for g in feats)
    st = objective.self_teacher(feats)
    st_ce = ce(st[:n], y) + lam * ce(st[n:], y) + (1 - lam) * ce(st[n:], y[perm])
    st_kd = kl_T(z, st.detach(), T)  # the self-teacher supervises the backbone classifier on [x; x̃]
    for name, ref in [("ce", ce_ref), ("logit_kd", logit_ref), ("feature", feat_ref)]:
        close(out.terms[name], ref, name)
    close(out.terms["self_teacher_ce"], st_ce, "self_teacher_ce")
    close(out.terms["self_teacher_kd"], st_kd, "self_teacher_kd")
    total = ce_ref + w_logit * logit_ref + w_feat * feat_ref + w_self * (st_ce + st_kd)
    close(out.loss, total, "loss")
    same_grads(out.loss, total, trainable(model, objective))


# --- MCL ---------------------------------------------------------------------------------------------------


def supcon(s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Released supervised contrastive loss: the anchor's own column is out of positives and denominator;
    anchors without a positive are skipped."""
    losses = []
    for i in range(len(y)):
        others = [j for j in range(len(y)) if j != i]
        positives = [j for j in others if y[j] == y[i]]
        if not positives:
            continue
        log_den = s[i, others].logsumexp(0)
        losses.append(-torch.stack([s[i, p] - log_den for p in positives]).mean())
    return torch.stack(losses).mean()


LABELS = [0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 4, 4]  # class 3 has one sample: an anchor without positives


def mcl_setup(members: int = 3):
    cohort = Cohort([small(10 + i) for i in range(members)]).eval()
    torch.manual_seed(5)
    w = dict(tau=0.2, T=2.0, vcl=0.3, icl=0.45, soft_vcl=0.7, soft_icl=1.1)
    objective = MCLObjective(cohort, **w, embed_dim=16).eval()
    return cohort, objective, w


def test_mcl_defaults_are_the_authors():
    w = MCLWeights()
    assert (w.tau, w.T, w.vcl, w.icl, w.soft_vcl, w.soft_icl) == (0.1, 3.0, 0.1, 0.1, 1.0, 1.0)
    assert w.icl_self_positive is False


def test_mcl_loss_matches_the_released_formula_with_detached_peers():
    cohort, objective, w = mcl_setup(3)
    x, y = batch(len(LABELS), labels=LABELS)
    out = objective(cohort, x, y)
    m = len(cohort.members)
    logits, emb = [], []
    for member, head in zip(cohort.members, objective.heads, strict=True):
        z, f = forward_with(member, x, ["flatten"])
        logits.append(z)
        v = head(f["flatten"].flatten(1))
        emb.append(v / v.norm(dim=1, keepdim=True))
    s = [[emb[a] @ emb[b].t() / w["tau"] for b in range(m)] for a in range(m)]
    pairs = [(a, b) for a in range(m) for b in range(m) if a != b]
    ce_ref = sum(ce(z, y) for z in logits)
    vcl = sum(supcon(s[a][a], y) for a in range(m))
    icl = sum(supcon(s[a][b], y) for a, b in pairs) / (m - 1)
    soft_vcl = sum(kl_T(s[a][a], s[b][b].detach(), w["T"]) for a, b in pairs) / (m - 1)
    soft_icl = sum(kl_T(s[a][b], s[b][a].detach(), w["T"]) for a, b in pairs) / (m - 1)
    for name, ref in [("ce", ce_ref), ("vcl", vcl), ("icl", icl), ("soft_vcl", soft_vcl), ("soft_icl", soft_icl)]:
        close(out.terms[name], ref, name)
    total = ce_ref + w["vcl"] * vcl + w["icl"] * icl + w["soft_vcl"] * soft_vcl + w["soft_icl"] * soft_icl
    close(out.loss, total, "loss")
    same_grads(out.loss, total, trainable(cohort, objective))
    # The anchor's own sample in the other member as a positive (the earlier choice) is a different loss.
    objective.icl_self_positive = True
    assert abs(objective(cohort, x, y).terms["icl"].item() - icl.item()) > 1e-3


def test_mcl_step_lowers_the_soft_contrastive_terms():
    cohort, objective, _ = mcl_setup(2)
    objective.w = {"vcl": 0.0, "icl": 0.0, "soft_vcl": 20.0, "soft_icl": 20.0}
    x, y = batch(len(LABELS), labels=LABELS)
    params = trainable(cohort, objective)
    step_lowers(objective, cohort, params, x, y, "soft_icl", lr=0.002)
    step_lowers(objective, cohort, params, x, y, "soft_vcl", lr=0.002)


# --- CTSL-MKT ----------------------------------------------------------------------------------------------


def rkd_distance(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """RKD distance (arXiv 1904.05068): Huber(δ=1) between mean-normalised pairwise distances, i ≠ j."""
    pairs = [(i, j) for i in range(len(s)) for j in range(len(s)) if i != j]
    ds = torch.stack([(s[i] - s[j]).norm() for i, j in pairs])
    dt = torch.stack([(t[i] - t[j]).norm() for i, j in pairs])
    return F.smooth_l1_loss(ds / ds.mean(), dt / dt.mean(), beta=1.0)


def rkd_angle(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """RKD angle: Huber(δ=1) between cos∠(x_i − x_j, x_k − x_j) over distinct triplets (i, j, k)."""
    b = len(s)
    triplets = [(i, j, k) for i in range(b) for j in range(b) for k in range(b) if len({i, j, k}) == 3]

    def cos(x, i, j, k):
        return F.cosine_similarity(x[i] - x[j], x[k] - x[j], dim=0)

    return F.smooth_l1_loss(
        torch.stack([cos(s, *tr) for tr in triplets]), torch.stack([cos(t, *tr) for tr in triplets]), beta=1.0
    )


def test_ctsl_loss_matches_the_formula_with_detached_peers():
    cohort = Cohort([small(20 + i) for i in range(3)]).eval()
    w = dict(T=2.0, self_distill=0.4, relation=0.6, angle=1.5, mutual=0.8, ema=0.99)
    objective = CTSLObjective(cohort, **w).eval()  # eval: no moving-average update in this call
    for i, avg in enumerate(objective.averages):  # moving averages that differ from the members
        avg.load_state_dict(small(30 + i).state_dict())
    x, y = batch(6)
    with torch.no_grad():  # the targets before the call: in eval mode the call must not move the averages
        past = [avg(x) for avg in objective.averages]
    out = objective(cohort, x, y)
    m = 3
    z, e = [], []
    for member in cohort.members:
        zi, f = forward_with(member, x, ["flatten"])
        z.append(zi)
        e.append(f["flatten"].flatten(1))
    pairs = [(i, j) for i in range(m) for j in range(m) if i != j]
    ce_ref = sum(ce(zi, y) for zi in z)
    self_ref = sum(kl_T(z[i], past[i], w["T"]) for i in range(m))
    rel_ref = sum(rkd_distance(e[i], e[j].detach()) + w["angle"] * rkd_angle(e[i], e[j].detach()) for i, j in pairs) / (
        m - 1
    )
    mut_ref = sum(kl_T(z[i], z[j].detach(), w["T"]) for i, j in pairs) / (m - 1)
    for name, ref in [("ce", ce_ref), ("self_distill", self_ref), ("relation", rel_ref), ("mutual", mut_ref)]:
        close(out.terms[name], ref, name)
    total = ce_ref + w["self_distill"] * self_ref + w["relation"] * rel_ref + w["mutual"] * mut_ref
    close(out.loss, total, "loss")
    same_grads(out.loss, total, trainable(cohort, objective))
    out.loss.backward()
    no_grad_reaches(objective.averages)


def test_ctsl_moving_average_follows_its_warmed_up_decay():
    cohort = Cohort([small(20), small(21)]).eval()
    objective = CTSLObjective(cohort, ema=0.5)
    start = [copy.deepcopy(a.state_dict()) for a in objective.averages]
    with torch.no_grad():  # members move away from the averages' start
        for p in cohort.parameters():
            p.add_(0.1)
    x, y = batch(6)
    objective.train()
    objective(cohort, x, y)  # update 1: d = min(0.5, 2/11)
    d = 2 / 11
    for avg, member, old in zip(objective.averages, cohort.members, start, strict=True):
        for (name, pa), pm in zip(avg.named_parameters(), member.parameters(), strict=True):
            assert torch.allclose(pa, d * old[name] + (1 - d) * pm, atol=1e-6), name
    mid = [copy.deepcopy(a.state_dict()) for a in objective.averages]
    objective(cohort, x, y)  # update 2: d = min(0.5, 3/12)
    d = 3 / 12
    for avg, member, old in zip(objective.averages, cohort.members, mid, strict=True):
        for (name, pa), pm in zip(avg.named_parameters(), member.parameters(), strict=True):
            assert torch.allclose(pa, d * old[name] + (1 - d) * pm, atol=1e-6), name


def test_ctsl_step_lowers_the_mutual_term():
    cohort = Cohort([small(20), small(21)]).eval()
    objective = CTSLObjective(cohort, T=2.0, self_distill=0.0, relation=0.0, mutual=30.0).eval()
    x, y = batch(6)
    step_lowers(objective, cohort, trainable(cohort), x, y, "mutual", lr=0.002)


# --- DDNN-EKD ----------------------------------------------------------------------------------------------


def attention(f: torch.Tensor) -> torch.Tensor:
    a = f.pow(2).sum(1).flatten(1)
    return a / a.norm(dim=1, keepdim=True)


def ddnn_setup(kl=0.7, at=3.0):
    torch.manual_seed(7)
    model = make_depth_selectable(build_model("resnet20", num_classes=C, in_channels=1), "resnet20").eval()
    with torch.no_grad():  # non-zero BN affine parameters so every block matters
        for mod in model.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.2, 0.2)
    return model, DDNNObjective(model, [1, 2], T=2.5, kl=kl, at=at)


def test_ddnn_loss_matches_the_formula_with_the_full_network_as_detached_teacher():
    model, objective = ddnn_setup()
    x, y = batch(6)
    out = objective(model, x, y)
    T, w_kl, w_at = 2.5, 0.7, 3.0
    set_depth(model, None)
    z_full, f_full = forward_with(model, x, STAGES)
    total = ce(z_full, y)
    close(out.terms["ce_full"], total, "ce_full")
    for k in (1, 2):
        set_depth(model, k)
        z_k, f_k = forward_with(model, x, STAGES)
        set_depth(model, None)
        ce_k = ce(z_k, y)
        kd_k = kl_T(z_k, z_full.detach(), T)
        at_k = sum(((attention(f_k[p]) - attention(f_full[p]).detach()) ** 2).mean() for p in STAGES)
        assert kd_k.item() > 1e-4 and at_k.item() > 1e-6
        close(out.terms[f"ce_d{k}"], ce_k, f"ce_d{k}")
        close(out.terms[f"kd_d{k}"], kd_k, f"kd_d{k}")
        close(out.terms[f"at_d{k}"], at_k, f"at_d{k}")
        total = total + ce_k + w_kl * kd_k + w_at * at_k
    close(out.loss, total, "loss")
    same_grads(out.loss, total, trainable(model))


def test_ddnn_step_moves_the_sub_network_toward_the_full_networks_outputs():
    """The full network's outputs share the weights and move too, so the KL is measured against the
    full network's outputs before the step (the target the step was taken toward)."""
    model, objective = ddnn_setup(kl=50.0, at=0.0)
    x, y = batch(6)
    before = objective(model, x, y)
    with torch.no_grad():
        target = model(x)
    params = trainable(model)
    grads = torch.autograd.grad(before.loss, params)
    with torch.no_grad():
        for p, g in zip(params, grads, strict=True):
            p -= 1e-4 * g
        set_depth(model, 1)
        after = kl_T(model(x), target, 2.5)
        set_depth(model, None)
    assert after < before.terms["kd_d1"] - 1e-5, f"{before.terms['kd_d1'].item()} -> {after.item()}"


def test_mixskd_released_recipe_matches_the_authors_training_script():
    model = small(2)
    alpha, T, w_logit, w_feat, w_self = 0.7, 2.0, 0.6, 0.9, 1.4
    torch.manual_seed(4)
    objective = MixSKDObjective(model, C, (1, 8, 8), alpha, T, w_logit, w_feat, w_self, recipe="released").eval()
    x, y = batch(6)
    torch.manual_seed(11)
    out = objective(model, x, y)
    torch.manual_seed(11)
    a = torch.tensor(alpha)
    lam = float(torch.distributions.Beta(a, a).sample())
    perm = torch.randperm(x.shape[0])
    n = x.shape[0]

    def interp(t):
        return lam * t + (1 - lam) * t[perm]

    z, f = forward_with(model, torch.cat([x, interp(x)]), STAGES)
    aux, finals = [], []
    for k, branch in enumerate(objective.branches.branches):  # branch k continues from stage k to the end
        g = branch.body(f[STAGES[k]])
        finals.append(g)
        aux.append(branch.fc(g.mean((2, 3))))
    finals.append(f[STAGES[-1]])
    ce_ref = sum(ce(h[:n], y) for h in [*aux, z])  # CE on the original images only
    logit_ref = sum(kl_T(h[n:], interp(h[:n]).detach(), T) + kl_T(interp(h[:n]), h[n:].detach(), T) for h in aux)
    feat_ref = sum(((g[n:] - interp(g[:n])) ** 2).mean() for g in finals)  # final features of every path
    st_int = objective.self_teacher([interp(g[:n]) for g in finals])
    st_mix = objective.self_teacher([g[n:] for g in finals])

    def mixed_ce(logits):
        return lam * ce(logits, y) + (1 - lam) * ce(logits, y[perm])

    st_ce = mixed_ce(st_int) + mixed_ce(st_mix)
    # crossed: the self-teacher on the mixed image's features teaches the backbone's interpolated logits,
    # the self-teacher on the interpolated features teaches the backbone on the mixed image
    st_kd = kl_T(interp(z[:n]), st_mix.detach(), T) + kl_T(z[n:], st_int.detach(), T)
    for name, ref in [("ce", ce_ref), ("logit_kd", logit_ref), ("feature", feat_ref)]:
        close(out.terms[name], ref, name)
    close(out.terms["self_teacher_ce"], st_ce, "self_teacher_ce")
    close(out.terms["self_teacher_kd"], st_kd, "self_teacher_kd")
    total = ce_ref + w_logit * logit_ref + w_feat * feat_ref + w_self * (st_ce + st_kd)
    close(out.loss, total, "loss")
    same_grads(out.loss, total, trainable(model, objective))


def test_mixskd_step_lowers_the_consistency_term():
    model = small(2)
    torch.manual_seed(4)
    objective = MixSKDObjective(model, C, (1, 8, 8), 0.7, 2.0, 30.0, 0.0, 0.0).eval()
    x, y = batch(6)
    params = trainable(model, objective)
    torch.manual_seed(11)
    before = objective(model, x, y)
    grads = torch.autograd.grad(before.loss, params, allow_unused=True)
    with torch.no_grad():
        for p, g in zip(params, grads, strict=True):
            if g is not None:
                p -= 0.02 * g
        torch.manual_seed(11)  # the same λ and pairing
        after = objective(model, x, y).terms["logit_kd"]
    assert after < 0.99 * before.terms["logit_kd"], f"{before.terms['logit_kd'].item()} -> {after.item()}"


def test_frozen_parts_stay_in_eval_mode_when_the_trainer_calls_train():
    """The Trainer calls ``objective.train()``: teachers, teacher branches and moving averages keep their
    BatchNorm running statistics (eval mode) whatever it says."""
    objective, _, _ = hsakd_setup()
    objective.train()
    assert not objective.teacher.training and not objective.teacher_branches.training
    assert objective.student_branches.training
    kd = KDObjective(small(1)).train()
    assert not kd.teacher.training
    ctsl = CTSLObjective(Cohort([small(20), small(21)])).train()
    assert not any(avg.training for avg in ctsl.averages)
