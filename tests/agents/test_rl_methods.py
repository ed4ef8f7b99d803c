"""Oracle tests of every RL distillation method's wiring (OPD-DA, arXiv 2406.05488; METHODS.md §1).

Each expected value is computed here, independently, from the paper's formula with public SB3 calls:
T = 3 (so T² and a forgotten temperature show), τ = 2.5 for DQN, λ_d ≠ λ_f. The methods run through their
own code path: the students' ``train`` (PPO minibatch loss, DQN replay loss) with the group's distiller.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from agents.config import TrainConfig
from agents.group import Group
from agents.registry import METHODS
from agents.rollout import collect_group_rollouts
from workbench.config import resolve_config

T = 3.0
TAU = 2.5
LAMBDA_DEC, LAMBDA_FEAT = 0.7, 0.4


# -- the paper's formulas, written out -------------------------------------------------------------------
def kl_t(target: torch.Tensor, z: torch.Tensor, temp: float) -> torch.Tensor:
    """temp² · mean_b KL(softmax(target/temp) ‖ softmax(z/temp))."""
    p = torch.softmax(target / temp, -1)
    return temp**2 * (p * (torch.log(p) - torch.log_softmax(z / temp, -1))).sum(-1).mean()


def oracle_opd_mean(i, zs, hs, att):
    return kl_t(torch.stack(zs).mean(0), zs[i], T), torch.zeros(())


def oracle_dml(i, zs, hs, att):
    p = [torch.softmax(z, -1) for z in zs]  # T = 1, no T² (DML)
    kls = [(p[j] * (p[j].log() - p[i].log())).sum(-1).mean() for j in range(len(zs)) if j != i]
    return sum(kls) / len(kls), torch.zeros(())


def oracle_opd_da(i, zs, hs, att):
    wq, wk = att.w_q.weight, att.w_k.weight
    q = hs[i] @ wq.t()  # (B, P)
    scores = torch.stack([(q * (h @ wk.t())).sum(-1) for h in hs], dim=-1)  # (B, M): q_i · k_j
    alpha = scores.softmax(-1)
    target = sum(alpha[:, j : j + 1] * zs[j] for j in range(len(zs)))
    feat_target = sum(alpha[:, j : j + 1] * hs[j] for j in range(len(hs)))
    return kl_t(target, zs[i], T), ((hs[i] - feat_target) ** 2).mean()


ORACLES = {"opd-mean": oracle_opd_mean, "dml": oracle_dml, "opd-da": oracle_opd_da}


def test_every_distilling_method_has_an_oracle():
    assert set(ORACLES) == {n for n, e in METHODS.items() if e.distils}


# -- PPO students ----------------------------------------------------------------------------------------
def _ppo_group(method: str, lr: float = 3e-4) -> Group:
    torch.manual_seed(0)
    cfg = resolve_config(
        TrainConfig,
        [
            "env=CartPole-v1",
            "algo=ppo",
            f"method={method}",
            "students=3",
            "n_envs=2",
            "ppo.n_steps=32",
            "ppo.batch_size=64",  # one minibatch per epoch: one gradient step
            "ppo.n_epochs=1",
            f"ppo.learning_rate={lr}",
            "ppo.lr_schedule=constant",
            "ppo.ent_coef=0",
            "ppo.vf_coef=0",
            f"lambda_dec={LAMBDA_DEC}",
            f"lambda_feat={LAMBDA_FEAT}",
            f"temperature={T}",
            f"dqn_tau={TAU}",  # must not touch PPO logits
            f"attention_lr={lr}",
            "seed=4",
            "threads=1",
        ],
    )
    group = Group(cfg, torch.device("cpu"))
    _diversify(group)
    return group


def _diversify(group: Group) -> None:
    """Students with clearly different, non-uniform decisions (fresh heads are near-uniform: KL ~ 1e-6)."""
    gen = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for s in group.students:
            head = s.policy.action_net if hasattr(s.policy, "action_net") else s.policy.q_net.q_net[-1]
            head.weight.copy_(torch.randn(head.weight.shape, generator=gen))
            head.bias.copy_(torch.randn(head.bias.shape, generator=gen))


def _ppo_outputs(student, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and last hidden layer through SB3's public policy calls."""
    policy = student.policy
    logits = policy.get_distribution(obs).distribution.logits
    h = policy.mlp_extractor.forward_actor(policy.extract_features(obs))
    return logits, h


def _ppo_oracle(group: Group, method: str, i: int, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        outs = [_ppo_outputs(s, obs) for s in group.students]
    zs, hs = [o[0] for o in outs], [o[1] for o in outs]
    with torch.no_grad():
        return ORACLES[method](i, zs, hs, group.attention)


@pytest.mark.parametrize("method", list(ORACLES))
def test_ppo_minibatch_loss_adds_the_distillation_term_and_one_step_lowers_it(method):
    """RL terms switched off (advantages 0, vf_coef = ent_coef = 0), so the PPO loss is the distillation term
    alone: it must equal λ_d·L_dec + λ_f·L_feat from the formula, and one step of student i lowers it."""
    group = _ppo_group(method)
    collect_group_rollouts(group.students)
    i = 1
    s = group.students[i]
    s.rollout_buffer.advantages[:] = 0.0
    obs = torch.as_tensor(s.rollout_buffer.observations.reshape(-1, 4))
    l_dec, l_feat = _ppo_oracle(group, method, i, obs)
    expected = LAMBDA_DEC * l_dec + LAMBDA_FEAT * l_feat
    att_before = [p.detach().clone() for p in group.attention.parameters()] if group.attention else []
    seen = []
    original = s._gradient_step
    s._gradient_step = lambda loss: (seen.append(loss.item()), original(loss))
    s.train()
    assert len(seen) == 1
    if group.attention is not None:  # W_q, W_k took one Adam step of their own (lr = attention_lr)
        for a, p in zip(att_before, group.attention.parameters()):
            assert (p.detach() - a).abs().max() == pytest.approx(3e-4, rel=1e-3)
    assert seen[0] == pytest.approx(expected.item(), rel=1e-4), (seen[0], expected.item())
    assert s.stats["L_dec"][0] == pytest.approx(l_dec.item(), rel=1e-4)
    after_dec, after_feat = _ppo_oracle(group, method, i, obs)
    after = LAMBDA_DEC * after_dec + LAMBDA_FEAT * after_feat
    assert after < expected - 1e-3 * expected.abs(), (method, expected.item(), after.item())


def test_ppo_loss_is_pg_plus_value_plus_entropy_plus_distillation():
    """With the RL terms on, the minibatch loss is SB3's PPO loss + the distillation term (nothing dropped)."""
    group = _ppo_group("opd-mean")
    collect_group_rollouts(group.students)
    i = 0
    s = group.students[i]
    s.ent_coef, s.vf_coef = 0.01, 0.5
    buf = s.rollout_buffer
    obs = torch.as_tensor(buf.observations.reshape(-1, 4))
    adv = torch.as_tensor(buf.advantages.reshape(-1))
    returns = torch.as_tensor(buf.returns.reshape(-1))
    with torch.no_grad():
        dist = s.policy.get_distribution(obs)
        values = s.policy.predict_values(obs).flatten()
    # first step: ratio = 1, so the clipped surrogate is -mean(normalised advantage)
    adv_n = (adv - adv.mean()) / (adv.std() + 1e-8)
    rl = -adv_n.mean() + 0.5 * F.mse_loss(returns, values) - 0.01 * dist.entropy().mean()
    l_dec, _ = _ppo_oracle(group, "opd-mean", i, obs)
    seen = []
    original = s._gradient_step
    s._gradient_step = lambda loss: (seen.append(loss.item()), original(loss))
    s.train()
    assert seen[0] == pytest.approx((rl + LAMBDA_DEC * l_dec).item(), rel=1e-4, abs=1e-6)


# -- DQN students ----------------------------------------------------------------------------------------
def _dqn_group(method: str) -> Group:
    cfg = resolve_config(
        TrainConfig,
        [
            "env=CartPole-v1",
            "algo=dqn",
            f"method={method}",
            "students=2",
            "n_envs=1",
            "dqn.learning_starts=32",
            "dqn.train_freq=32",
            "dqn.gradient_steps=1",
            "dqn.buffer_size=500",
            "dqn.batch_size=16",
            "dqn.optimize_memory_usage=false",
            "dqn.learning_rate=0.01",
            f"lambda_dec={LAMBDA_DEC}",
            f"lambda_feat={LAMBDA_FEAT}",
            f"temperature={T}",
            f"dqn_tau={TAU}",
            "seed=2",
            "threads=1",
        ],
    )
    group = Group(cfg, torch.device("cpu"))
    _diversify(group)
    for _ in range(3):  # fill the replay buffers and train a little, so Q-values are not all alike
        group.iterate()
    return group


@pytest.mark.parametrize("method", list(ORACLES))
def test_dqn_replay_loss_is_td_plus_distillation_of_softmax_q_over_tau(method):
    """DQN decisions are Q/τ (τ = 2.5): loss = Huber TD + λ_d·L_dec(Q/τ) + λ_f·L_feat on the replay batch."""
    group = _dqn_group(method)
    i = 0
    s = group.students[i]
    data = s.replay_buffer.sample(16)
    s.replay_buffer.sample = lambda *a, **k: data
    with torch.no_grad():
        next_q = s.q_net_target(data.next_observations).max(dim=1).values.reshape(-1, 1)
        target_q = data.rewards + (1 - data.dones) * s.gamma * next_q
        q = s.q_net(data.observations)
        td = F.smooth_l1_loss(q.gather(1, data.actions.long()), target_q)
        zs, hs = [], []
        for st in group.students:
            net = st.q_net
            h = net.q_net[:-1](net.extract_features(data.observations, net.features_extractor))
            zs.append(st.q_net(data.observations) / TAU)
            hs.append(h)
        l_dec, l_feat = ORACLES[method](i, zs, hs, group.attention)
    expected = td + LAMBDA_DEC * l_dec + LAMBDA_FEAT * l_feat
    seen = []
    original = s._gradient_step
    s._gradient_step = lambda loss: (seen.append(loss.item()), original(loss))
    s.train(gradient_steps=1, batch_size=16)
    assert seen[0] == pytest.approx(expected.item(), rel=1e-4), (seen[0], expected.item())
    assert s.stats["L_dec"][-1] == pytest.approx(l_dec.item(), rel=1e-4)


def test_dqn_group_outputs_and_diversity_use_q_over_tau():
    from agents.distillation import group_outputs

    group = _dqn_group("opd-mean")
    obs = group.probe_observations(32)
    z, _ = group_outputs(group.students, obs, "dqn", TAU)
    with torch.no_grad():
        q = torch.stack([s.q_net(torch.as_tensor(obs)) for s in group.students])
    torch.testing.assert_close(z, q / TAU)


# -- gradient paths --------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", list(ORACLES))
def test_student_loss_trains_itself_and_the_attention_never_its_peers(method):
    """Student i's distillation loss: gradient into its own parameters and (opd-da) into W_q, W_k, equal to
    the formula's; none into any peer (peers' z_j, h_j are constants)."""
    group = _ppo_group(method)
    collect_group_rollouts(group.students)
    i = 2
    s = group.students[i]
    obs = torch.as_tensor(s.rollout_buffer.observations.reshape(-1, 4))
    d = group.distiller
    d.prepare(i, s.rollout_buffer.observations.reshape(-1, 4))
    for st in group.students:
        st.policy.zero_grad(set_to_none=True)
    d.zero_grad()
    z, h = _ppo_outputs(s, obs)
    loss, _ = d.loss(i, z, h, np.arange(len(obs)))
    loss.backward()
    code_grads = {n: p.grad.clone() for n, p in s.policy.named_parameters() if p.grad is not None}
    for j, peer in enumerate(group.students):
        if j != i:
            assert all(p.grad is None or not p.grad.any() for p in peer.policy.parameters()), f"peer {j} trained"
    att_grads = None
    if group.attention is not None:
        att_grads = [p.grad.clone() for p in group.attention.parameters()]
        assert all(g.abs().sum() > 0 for g in att_grads), "W_q/W_k get no gradient"
    # the same gradients from the formula (peers computed without gradient)
    for st in group.students:
        st.policy.zero_grad(set_to_none=True)
    d.zero_grad()
    with torch.no_grad():
        peers = [_ppo_outputs(st, obs) for st in group.students]
    own = _ppo_outputs(s, obs)
    zs = [own[0] if j == i else peers[j][0] for j in range(3)]
    hs = [own[1] if j == i else peers[j][1] for j in range(3)]
    l_dec, l_feat = ORACLES[method](i, zs, hs, group.attention)
    (LAMBDA_DEC * l_dec + LAMBDA_FEAT * l_feat).backward()
    for n, p in s.policy.named_parameters():
        if n in code_grads:
            torch.testing.assert_close(code_grads[n], p.grad, rtol=1e-4, atol=1e-7, msg=n)
        else:
            assert p.grad is None or not p.grad.any(), n
    assert any(g.abs().sum() > 0 for g in code_grads.values())
    if att_grads is not None:
        for g, p in zip(att_grads, group.attention.parameters()):
            torch.testing.assert_close(g, p.grad, rtol=1e-4, atol=1e-7)


def test_attention_has_its_own_optimizer_and_students_do_not_hold_it():
    group = _ppo_group("opd-da")
    att_params = {id(p) for p in group.attention.parameters()}
    for s in group.students:
        held = {id(p) for g in s.policy.optimizer.param_groups for p in g["params"]}
        assert not held & att_params
    assert {id(p) for g in group.distiller.optimizer.param_groups for p in g["params"]} == att_params
