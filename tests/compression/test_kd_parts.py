"""The KD family's parts on hand-made inputs: terms that vanish when networks agree, frozen backbones,
weight sharing of DDNN sub-networks."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.utils.data import TensorDataset

from compression.kd.cohort import Cohort
from compression.kd.ctsl_mkt import CTSLObjective
from compression.kd.ddnn_ekd import DDNNObjective, make_depth_selectable, set_depth, stage_lengths, used_params
from compression.kd.hsakd import HSAKDObjective, teacher_branches
from compression.kd.kd import KDObjective
from compression.kd.mcl import MCLObjective
from workbench.errors import WorkbenchError
from workbench.flops import count_macs
from workbench.models import AuxiliaryBranches, build_model
from workbench.trainer import TrainerConfig


def small(widths=(4, 8, 16), seed=0):
    torch.manual_seed(seed)
    return build_model("small_cnn", 10, 1, widths=widths)


def batch(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)


def test_kd_term_vanishes_when_student_equals_teacher():
    student = small()
    x, y = batch()
    same = KDObjective(copy.deepcopy(student))(student.eval(), x, y)
    assert same.terms["kd"].abs().item() < 1e-6
    other = KDObjective(small(seed=1))(student, x, y)
    assert other.terms["kd"].item() > 1e-3


def test_hsakd_terms_vanish_when_student_and_branches_equal_the_teachers():
    teacher = small()
    x, y = batch()
    branches = AuxiliaryBranches(teacher, 40).eval()
    objective = HSAKDObjective(copy.deepcopy(teacher), branches, teacher, 10)
    objective.student_branches.load_state_dict(branches.state_dict())
    objective.student_branches.eval()
    out = objective(copy.deepcopy(teacher).eval(), x, y)
    assert out.terms["main_kd"].abs().item() < 1e-6 and out.terms["aux_kd"].abs().item() < 1e-5
    assert len([k for k in out.terms if k.startswith("aux") and k.endswith("_kd") and k != "aux_kd"]) == 3
    # An independently initialised student disagrees.
    assert HSAKDObjective(teacher, branches, small(seed=3), 10)(small(seed=3), x, y).terms["aux_kd"].item() > 1e-3


def test_hsakd_teacher_branches_train_with_the_backbone_frozen_and_are_cached(tmp_path):
    teacher = small(widths=(8, 8, 8)).eval()
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "model.pt").write_bytes(b"stand-in for the teacher's model file")
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.rand(64, 1, 8, 8, generator=g), torch.randint(0, 10, (64,), generator=g))
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    cfg = TrainerConfig(epochs=1, batch_size=32, lr=0.1, progress=False)
    torch.manual_seed(0)
    fresh = AuxiliaryBranches(teacher, 40).state_dict()
    args = (teacher, tmp_path, 10, cfg, data, data, {"dataset": "toy"}, torch.device("cpu"), 0)
    torch.manual_seed(0)
    branches, info = teacher_branches(*args)
    assert not info["cached"] and len(info["acc"]) == 3
    after = teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and BatchNorm statistics unchanged
    trained = branches.state_dict()
    assert any(not torch.equal(fresh[k], trained[k]) for k in fresh)  # the branches did learn
    assert not any(p.requires_grad for p in branches.parameters())
    cached, info2 = teacher_branches(*args)
    assert info2["cached"] and info2["path"] == info["path"]
    assert all(torch.equal(trained[k], v) for k, v in cached.state_dict().items())


def test_mcl_soft_terms_vanish_for_identical_members():
    member = small()
    cohort = Cohort([member, copy.deepcopy(member)])
    objective = MCLObjective(cohort)
    objective.heads[1].load_state_dict(objective.heads[0].state_dict())
    x, y = batch(32)
    out = objective(cohort.eval(), x, y)
    assert out.terms["soft_vcl"].abs().item() < 1e-5 and out.terms["soft_icl"].abs().item() < 1e-5
    assert out.terms["vcl"].item() > 0 and out.terms["icl"].item() > 0
    assert out.logits.shape == (32, 10)


def test_ctsl_mutual_and_relation_vanish_for_identical_members():
    member = small()
    cohort = Cohort([member, copy.deepcopy(member)])
    objective = CTSLObjective(cohort).eval()  # eval: no moving-average update, averages equal the members
    x, y = batch(32)
    out = objective(cohort.eval(), x, y)
    for term in ("mutual", "relation", "self_distill"):
        assert out.terms[term].abs().item() < 1e-5, term
    with pytest.raises(WorkbenchError, match="at least 2"):
        CTSLObjective(Cohort([member]))


def test_cohort_forward_modes():
    cohort = Cohort([small(seed=0), small(seed=1)]).eval()
    x, _ = batch(4)
    every = cohort(x, all_members=True)
    assert every.shape == (2, 4, 10)
    assert torch.allclose(cohort(x), every.mean(0))
    cohort.active = 1
    assert torch.allclose(cohort(x), every[1])


def test_ddnn_subnetworks_share_the_full_networks_weights():
    torch.manual_seed(0)
    model = build_model("resnet20", 10, 1)
    keys = list(model.state_dict())
    make_depth_selectable(model, "resnet20")
    assert list(model.state_dict()) == keys and stage_lengths(model) == [3, 3, 3]
    model.eval()
    x, _ = batch(2)
    outs = {}
    for d in (1, 2, None):
        set_depth(model, d)
        outs[d] = model(x)
    assert not torch.allclose(outs[1], outs[2]) and not torch.allclose(outs[2], outs[None])
    set_depth(model, 1)
    before = model(x)
    with torch.no_grad():  # change a weight of the full network that depth 1 uses: the sub-network changes too
        model.layer1[0].conv1.weight.mul_(1.5)
    changed = model(x)
    assert not torch.allclose(changed, before)
    with torch.no_grad():  # a block that depth 1 skips does not change it
        model.layer1[2].conv1.weight.mul_(3.0)
    assert torch.equal(model(x), changed)
    set_depth(model, None)
    macs = []
    for d in (1, 2, None):
        set_depth(model, d)
        macs.append(count_macs(model, (1, 8, 8)))
    assert macs[0] < macs[1] < macs[2]
    assert used_params(model, 1) < used_params(model, 2) < used_params(model, None)


def test_ddnn_objective_trains_every_depth_and_rejects_plain_cnns():
    torch.manual_seed(0)
    model = make_depth_selectable(build_model("resnet20", 10, 1))
    objective = DDNNObjective(model, [1, 2])
    x, y = batch(8)
    out = objective(model.train(), x, y)
    assert {"ce_full", "ce_d1", "kd_d1", "at_d1", "ce_d2", "kd_d2", "at_d2"} <= set(out.terms)
    out.loss.backward()
    assert model.layer3[2].conv1.weight.grad is not None  # full net trained
    with pytest.raises(WorkbenchError, match="residual"):
        make_depth_selectable(small(), "small_cnn")
    with pytest.raises(WorkbenchError, match="depths"):
        DDNNObjective(model, [3])


def test_ddnn_sub_networks_leave_the_full_networks_bn_statistics_alone():
    torch.manual_seed(0)
    model = make_depth_selectable(build_model("resnet20", 10, 1))
    x, y = batch(8)
    reference = copy.deepcopy(model).train()
    reference(x)  # what a full-network forward alone does to the running statistics
    DDNNObjective(model, [1, 2])(model.train(), x, y)
    for (name, a), b in zip(model.named_buffers(), reference.buffers(), strict=True):
        if "running" in name:
            assert torch.allclose(a, b), name
    mixed, mixed_ref = copy.deepcopy(model), copy.deepcopy(model).train()
    mixed_ref(x)
    DDNNObjective(mixed, [1], sub_bn_stats=True)(mixed.train(), x, y)
    # the depth-1 forward feeds layer2.0 another input: its statistics leak into the shared layer
    assert not torch.allclose(mixed.layer2[0].bn1.running_mean, mixed_ref.layer2[0].bn1.running_mean)


def test_dkd_and_dist_objectives_compose_their_terms_with_the_configured_weights():
    import torch.nn.functional as F

    from compression.kd.dist import DISTObjective
    from compression.kd.dkd import DKDObjective, DKDWarmup
    from workbench.distill import dist_terms, dkd_terms

    teacher, student = small(seed=5), small(seed=6)
    x, y = torch.randn(6, 1, 8, 8), torch.arange(6) % 10
    dkd = DKDObjective(teacher, T=3.0, alpha=0.5, beta=6.0, ce=0.7)
    DKDWarmup(dkd, warmup=4).on_epoch_start(None, 1)
    assert dkd.ramp == 0.5
    out = dkd(student, x, y)
    with torch.no_grad():
        zt, zs = teacher.eval()(x), student(x)
    tckd, nckd = dkd_terms(zs, zt, y, 3.0)
    expected = 0.7 * F.cross_entropy(zs, y) + 0.5 * (0.5 * tckd + 6.0 * nckd)
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    dist = DISTObjective(teacher, T=2.0, beta=1.5, gamma=0.25, ce=0.9)
    inter, intra = dist_terms(zs, zt, 2.0)
    expected = 0.9 * F.cross_entropy(zs, y) + 1.5 * inter + 0.25 * intra
    assert dist(student, x, y).loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert not any(p.requires_grad for p in dkd.teacher.parameters())
