"""The group's distillation term: formulas on hand-made tensors, gradient paths, baselines."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from agents.distillation import Distiller, diversity
from workbench.distill import DecisionAttention

M, B, A, D = 3, 2, 3, 4
T = 2.0


def _distiller(method: str, lambda_dec=1.0, lambda_feat=0.5, attention=None) -> Distiller:
    return Distiller(
        students=[None] * M,
        method=method,
        algo="ppo",
        lambda_dec=lambda_dec,
        lambda_feat=lambda_feat,
        temperature=T,
        tau=1.0,
        ramp_steps=0,
        attention=attention,
        attention_lr=0.1,
        step_fn=lambda: 0,
    )


def _attention() -> DecisionAttention:
    att = DecisionAttention(D, M, proj_dim=2)
    with torch.no_grad():
        att.w_q.weight.copy_(torch.tensor([[0.5, -1.0, 0.0, 0.3], [0.2, 0.1, -0.4, 1.0]]))
        att.w_k.weight.copy_(torch.tensor([[1.0, 0.0, 0.5, -0.2], [-0.3, 0.7, 0.2, 0.1]]))
    return att


def _data():
    g = torch.Generator().manual_seed(3)
    z = torch.randn(M, B, A, generator=g)
    h = torch.randn(M, B, D, generator=g)
    return z, h


def _kl_t(target: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    p = torch.softmax(target / T, -1)
    return T * T * (p * (torch.log(p) - torch.log_softmax(logits / T, -1))).sum(-1).mean()


def test_opd_da_term_equals_the_formula_and_trains_attention_not_peers():
    att = _attention()
    d = _distiller("opd-da", attention=att)
    z, h = _data()
    i = 1
    peers_z = z.clone().requires_grad_(True)
    peers_h = h.clone().requires_grad_(True)
    d._peers[i] = (peers_z, peers_h)
    own_z = z[i].clone().requires_grad_(True)
    own_h = h[i].clone().requires_grad_(True)
    loss, terms = d.loss(i, own_z, own_h, np.arange(B))

    # by hand: q_i = W_q h_i, k_j = W_k h_j, alpha_ij = softmax_j(q_i . k_j), t_i = sum_j alpha_ij z_j
    wq, wk = att.w_q.weight.detach(), att.w_k.weight.detach()
    q = h[i] @ wq.t()
    k = h @ wk.t()  # (M, B, P)
    scores = torch.einsum("bp,jbp->bj", q, k)
    alpha = scores.softmax(-1)  # (B, M)
    t = torch.einsum("bj,jba->ba", alpha, z)
    f_target = torch.einsum("bj,jbd->bd", alpha, h)
    expected_dec = _kl_t(t, z[i])
    expected_feat = ((h[i] - f_target) ** 2).mean()
    assert terms["L_dec"] == pytest.approx(expected_dec.item(), rel=1e-5)
    assert terms["L_feat"] == pytest.approx(expected_feat.item(), rel=1e-5)
    assert loss.item() == pytest.approx(expected_dec.item() + 0.5 * expected_feat.item(), rel=1e-5)

    loss.backward()
    assert own_z.grad is not None and own_z.grad.abs().sum() > 0
    assert own_h.grad is not None and own_h.grad.abs().sum() > 0
    assert att.w_q.weight.grad.abs().sum() > 0 and att.w_k.weight.grad.abs().sum() > 0
    for peer in (peers_z, peers_h):  # peers are constants in student i's loss
        assert peer.grad is None or not peer.grad.any()
    alpha_row = d.pop_alpha()[i]
    assert torch.allclose(alpha_row, alpha.mean(0), atol=1e-6)


def test_opd_mean_and_dml_terms():
    z, h = _data()
    i = 0
    for method in ("opd-mean", "dml"):
        d = _distiller(method)
        d._peers[i] = (z, h)
        loss, terms = d.loss(i, z[i].clone(), h[i].clone(), np.arange(B))
        if method == "opd-mean":
            expected = _kl_t(z.mean(0), z[i])
        else:
            logp = torch.log_softmax(z, -1)
            kls = [(logp[j].exp() * (logp[j] - logp[i])).sum(-1).mean() for j in range(M) if j != i]
            expected = sum(kls) / (M - 1)
        assert terms["L_dec"] == pytest.approx(expected.item(), rel=1e-5)
        assert terms["L_feat"] == 0.0
        assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_ramp_scales_the_decision_loss():
    z, h = _data()
    d = _distiller("opd-mean")
    d.ramp_steps = 100
    d.step_fn = lambda: 50
    d._peers[0] = (z, h)
    loss, terms = d.loss(0, z[0].clone(), h[0].clone(), np.arange(B))
    assert terms["ramp"] == pytest.approx(math.exp(-5 * 0.25))
    assert loss.item() == pytest.approx(terms["ramp"] * terms["L_dec"], rel=1e-6)


def test_diversity_is_the_mean_pairwise_l2_distance():
    same = torch.zeros(3, 5, 4)
    assert diversity(same) == 0.0
    logits = torch.tensor([[[10.0, -10.0]], [[-10.0, 10.0]]])  # two one-hot-like policies, distance sqrt(2)
    assert diversity(logits) == pytest.approx(math.sqrt(2), rel=1e-4)
