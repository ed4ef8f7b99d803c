import math

import pytest
import torch

from workbench.distill import (
    DecisionAttention,
    ShapeError,
    attention_group_targets,
    decision_loss,
    feature_loss,
    mean_group_targets,
    ramp_weight,
)

M, B, D, A, P = 3, 2, 4, 3, 2
WQ = [[0.5, -1.0, 0.0, 0.25], [0.0, 0.5, 1.0, -0.5]]
WK = [[1.0, 0.0, -0.5, 0.5], [-0.25, 1.0, 0.5, 0.0]]
H = [
    [[1.0, 0.0, 2.0, -1.0], [0.5, 0.5, 0.0, 1.0]],
    [[0.0, 1.0, -1.0, 2.0], [1.0, -1.0, 1.0, 0.0]],
    [[2.0, 1.0, 0.0, 0.0], [-0.5, 0.0, 1.5, 1.0]],
]
Z = [
    [[1.0, 0.0, -1.0], [0.0, 2.0, 1.0]],
    [[0.5, 0.5, 0.0], [1.0, -1.0, 0.0]],
    [[-1.0, 2.0, 0.5], [0.0, 0.0, 3.0]],
]


def _matvec(w, x):
    return [sum(a * b for a, b in zip(row, x)) for row in w]


def _hand_alpha(scale=1.0):
    alpha = []
    for b in range(B):
        rows = []
        for i in range(M):
            q = _matvec(WQ, H[i][b])
            s = [sum(u * v for u, v in zip(q, _matvec(WK, H[j][b]))) * scale for j in range(M)]
            e = [math.exp(v) for v in s]
            rows.append([v / sum(e) for v in e])
        alpha.append(rows)
    return alpha


def _hand_targets(alpha, values):
    width = len(values[0][0])
    return [
        [[sum(alpha[b][i][j] * values[j][b][k] for j in range(M)) for k in range(width)] for b in range(B)]
        for i in range(M)
    ]


def _module(**kw):
    att = DecisionAttention(D, M, proj_dim=P, **kw).double()
    with torch.no_grad():
        att.w_q.weight.copy_(torch.tensor(WQ))
        att.w_k.weight.copy_(torch.tensor(WK))
    return att


def _inputs():
    h = torch.tensor(H, dtype=torch.float64, requires_grad=True)
    z = torch.tensor(Z, dtype=torch.float64, requires_grad=True)
    return h, z


@pytest.mark.parametrize("detach_peers", [False, True])
@pytest.mark.parametrize("scaled", [False, True])
def test_decision_attention_equals_hand_formula(detach_peers, scaled):
    h, z = _inputs()
    targets, alpha = _module(scaled=scaled)(z, h, detach_peers=detach_peers)
    want_alpha = _hand_alpha(1 / math.sqrt(P) if scaled else 1.0)
    assert alpha.shape == (B, M, M) and targets.shape == (M, B, A)
    assert alpha.tolist() == [[pytest.approx(r, rel=1e-12) for r in rows] for rows in want_alpha]
    want_t = _hand_targets(want_alpha, Z)
    for i in range(M):
        for b in range(B):
            assert targets[i, b].tolist() == pytest.approx(want_t[i][b], rel=1e-12)


def test_default_proj_dim_and_decision_source():
    assert DecisionAttention(512, 4).proj_dim == 64 and DecisionAttention(6, 2).proj_dim == 1
    att = DecisionAttention(A, M, proj_dim=2, source="decisions").double()
    h, z = _inputs()
    targets, alpha = att(z)
    q, k = att.w_q(z), att.w_k(z)
    want = torch.softmax(torch.einsum("ibp,jbp->bij", q, k), dim=-1)
    assert torch.allclose(alpha, want)
    assert torch.allclose(targets[1, 0], sum(want[0, 1, j] * z[j, 0] for j in range(M)))
    with pytest.raises(ShapeError, match="needs features"):
        DecisionAttention(D, M)(z.float())


def test_gradients_reach_attention_maps():
    att = _module()
    h, z = _inputs()
    targets, alpha = att(z, h)
    loss = decision_loss(targets, z).sum() + feature_loss(h, alpha).sum()
    loss.backward()
    for w in (att.w_q.weight, att.w_k.weight):
        assert w.grad is not None and torch.isfinite(w.grad).all() and w.grad.abs().sum() > 0


def _loop_reference_loss(att, h, z, i):
    """Member i's loss built by explicit loops with the peers detached."""
    hs = [h[j] if j == i else h[j].detach() for j in range(M)]
    zs = [z[j] if j == i else z[j].detach() for j in range(M)]
    q = att.w_q(hs[i])
    scores = torch.stack([(q * att.w_k(hs[j])).sum(-1) for j in range(M)], dim=-1)  # (B, M)
    a = scores.softmax(-1)
    t = sum(a[:, j : j + 1] * zs[j] for j in range(M))
    f = sum(a[:, j : j + 1] * hs[j] for j in range(M))
    log_pt, log_pz = (t / 3).log_softmax(-1), (z[i] / 3).log_softmax(-1)
    dec = 9 * (log_pt.exp() * (log_pt - log_pz)).sum(-1).mean()
    return dec + (h[i] - f).pow(2).mean()


@pytest.mark.parametrize("i", range(M))
def test_detach_peers_gradients(i):
    att = _module()
    h, z = _inputs()
    targets, alpha = att(z, h, detach_peers=True)
    loss = decision_loss(targets, z)[i] + feature_loss(h, alpha)[i]
    loss.backward()
    for j in range(M):
        if j == i:
            assert h.grad[j].abs().sum() > 0 and z.grad[j].abs().sum() > 0
        else:
            assert h.grad[j].abs().sum() == 0 and z.grad[j].abs().sum() == 0
    got = [h.grad.clone(), z.grad.clone(), att.w_q.weight.grad.clone(), att.w_k.weight.grad.clone()]
    assert got[2].abs().sum() > 0 and got[3].abs().sum() > 0

    att.zero_grad()
    h2, z2 = _inputs()
    ref = _loop_reference_loss(att, h2, z2, i)
    assert ref.item() == pytest.approx(loss.item(), rel=1e-12)
    ref.backward()
    want = [h2.grad, z2.grad, att.w_q.weight.grad, att.w_k.weight.grad]
    for g, w in zip(got, want):
        assert torch.allclose(g, w, rtol=1e-10, atol=1e-12)


def test_without_detach_peers_gradients_reach_peers():
    att = _module()
    h, z = _inputs()
    targets, alpha = att(z, h, detach_peers=False)
    (decision_loss(targets, z)[0] + feature_loss(h, alpha, detach_peers=False)[0]).backward()
    assert h.grad[1].abs().sum() > 0 and z.grad[2].abs().sum() > 0


def test_mean_group_targets():
    z = torch.tensor(Z, requires_grad=True)
    t = mean_group_targets(z)
    want = [[[(Z[0][b][k] + Z[1][b][k] + Z[2][b][k]) / 3 for k in range(A)] for b in range(B)]] * M
    assert t.tolist() == [[pytest.approx(r) for r in m] for m in want]
    t[1].sum().backward()
    assert z.grad[1].abs().sum() > 0 and z.grad[0].abs().sum() == 0 and z.grad[2].abs().sum() == 0
    z.grad = None
    mean_group_targets(z, detach_peers=False)[1].sum().backward()
    assert torch.allclose(z.grad, torch.full_like(z, 1 / 3))


def test_attention_group_targets_hand_and_errors():
    alpha = torch.tensor([[[1.0, 0.0, 0.0], [0.2, 0.5, 0.3], [0.0, 0.0, 1.0]]] * B, dtype=torch.float64)
    t = attention_group_targets(torch.tensor(Z, dtype=torch.float64), alpha)
    want = [0.2 * Z[0][1][k] + 0.5 * Z[1][1][k] + 0.3 * Z[2][1][k] for k in range(A)]
    assert t[1, 1].tolist() == pytest.approx(want, rel=1e-12)
    assert t[0, 0].tolist() == pytest.approx(Z[0][0])
    with pytest.raises(ShapeError, match=r"\(B, M, M\)"):
        attention_group_targets(torch.zeros(M, B, A), torch.zeros(M, M))
    with pytest.raises(ShapeError):
        DecisionAttention(D, M)(torch.zeros(M, B, A), torch.zeros(M + 1, B, D))


def test_decision_and_feature_loss_hand_values():
    targets = torch.tensor(Z[::-1], dtype=torch.float64)
    z = torch.tensor(Z, dtype=torch.float64, requires_grad=True)
    got = decision_loss(targets, z, T=3.0)
    for i in range(M):
        want = 0.0
        for b in range(B):
            et = [math.exp(v / 3) for v in Z[M - 1 - i][b]]
            ez = [math.exp(v / 3) for v in Z[i][b]]
            pt, pz = [v / sum(et) for v in et], [v / sum(ez) for v in ez]
            want += 9 * sum(p * math.log(p / q) for p, q in zip(pt, pz)) / B
        assert got[i].item() == pytest.approx(want, rel=1e-10)
    assert decision_loss(z.detach(), z).abs().max().item() == pytest.approx(0.0, abs=1e-12)
    got.sum().backward()
    assert torch.isfinite(z.grad).all()

    h = torch.tensor(H, dtype=torch.float64)
    alpha = torch.tensor(_hand_alpha(), dtype=torch.float64)
    fl = feature_loss(h, alpha)
    ft = _hand_targets(_hand_alpha(), H)
    for i in range(M):
        want = sum((H[i][b][k] - ft[i][b][k]) ** 2 for b in range(B) for k in range(D)) / (B * D)
        assert fl[i].item() == pytest.approx(want, rel=1e-10)
    uniform_same = torch.tensor([H[0]] * M, dtype=torch.float64)
    assert feature_loss(uniform_same, alpha).abs().max().item() == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ShapeError):
        decision_loss(torch.zeros(M, B, A), torch.zeros(M, B, A + 1))


def test_ramp_weight():
    assert ramp_weight(0, 100) == pytest.approx(math.exp(-5))
    assert ramp_weight(50, 100) == pytest.approx(math.exp(-5 * 0.25))
    assert ramp_weight(100, 100) == 1.0 and ramp_weight(500, 100) == 1.0
    assert ramp_weight(3, 0) == 1.0


def _hand_alpha_peers_only():
    alpha = []
    for b in range(B):
        rows = []
        for i in range(M):
            q = _matvec(WQ, H[i][b])
            s = {j: sum(u * v for u, v in zip(q, _matvec(WK, H[j][b]))) for j in range(M) if j != i}
            e = {j: math.exp(v) for j, v in s.items()}
            rows.append([e[j] / sum(e.values()) if j != i else 0.0 for j in range(M)])
        alpha.append(rows)
    return alpha


@pytest.mark.parametrize("detach_peers", [False, True])
def test_peers_only_attention_is_the_softmax_over_the_other_members(detach_peers):
    h, z = _inputs()
    targets, alpha = _module(include_self=False)(z, h, detach_peers=detach_peers)
    want = _hand_alpha_peers_only()
    assert alpha.tolist() == [[pytest.approx(r, rel=1e-12, abs=1e-15) for r in rows] for rows in want]
    want_t = _hand_targets(want, Z)
    for i in range(M):
        for b in range(B):
            assert targets[i, b].tolist() == pytest.approx(want_t[i][b], rel=1e-12)
    # the self-target that zeroes the decision loss is out of reach: the loss stays > 0
    assert decision_loss(targets, z, T=2.5).sum().item() > 1e-6


def test_peers_only_attention_trains_its_maps_and_refuses_a_group_of_one():
    att = _module(include_self=False)
    h, z = _inputs()
    targets, _ = att(z, h)
    decision_loss(targets, z, T=2.5).sum().backward()
    assert att.w_q.weight.grad.abs().sum() > 0 and att.w_k.weight.grad.abs().sum() > 0
    assert torch.isfinite(att.w_q.weight.grad).all() and torch.isfinite(h.grad).all()
    with pytest.raises(ShapeError, match="include_self=False needs at least 2 members"):
        DecisionAttention(D, 1, include_self=False)
