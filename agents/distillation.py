"""The group's distillation term for one student's minibatch (OPD-DA, arXiv 2406.05488).

Student i's loss adds ``λ_d · w(step) · L_dec,i + λ_f · L_feat,i`` (METHODS.md §1), built from the core:

- ``opd-da``: α = DecisionAttention(h) (or of z), ``t_i = Σ_j α_ij z_j``,
  ``L_dec,i = T²·KL(softmax(t_i/T) ‖ softmax(z_i/T))``, ``L_feat,i = MSE(h_i, Σ_j α_ij h_j)``;
- ``opd-mean``: ``t_i = mean_j z_j``, same ``L_dec`` (no feature term);
- ``dml``: ``L_dec,i = mean_{j≠i} KL(p_j ‖ p_i)`` at T = 1 (arXiv 1706.00384).

Decisions are PPO action logits, or ``Q / τ`` for DQN. Peers' ``z_j``, ``h_j`` are constants in student i's
loss (computed without gradient); W_q, W_k learn through α with their own Adam optimizer, stepped after
each student minibatch. For PPO, peers' outputs on student i's rollout are computed once per rollout
(:meth:`Distiller.prepare`), then indexed by each minibatch; for DQN they are computed on each replay
minibatch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from agents.registry import ALGORITHMS, METHODS
from workbench.distill import DecisionAttention, ramp_weight

CHUNK = 512


def decisions_and_features(student, obs: torch.Tensor, algo: str, tau: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Decision ``z`` (logits, or Q/τ) and feature ``h`` of one student on a batch of observations."""
    algorithm = ALGORITHMS[algo]
    raw, h = algorithm.outputs(student, obs)
    return algorithm.decisions(raw, tau), h


def to_tensor(obs: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    """An observation batch as a tensor on ``device`` without copying on CPU (uint8 stays uint8)."""
    if isinstance(obs, torch.Tensor):
        return obs.to(device)
    return torch.as_tensor(obs, device=device)


@torch.no_grad()
def group_outputs(
    students: Sequence, obs: np.ndarray | torch.Tensor, algo: str, tau: float, skip: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every student's ``z`` ``(M, N, A)`` and ``h`` ``(M, N, D)`` on ``obs``, in chunks; row ``skip`` is zeros."""
    device = students[0].device
    zs, hs = [], []
    x_all = to_tensor(obs, device)
    for j, s in enumerate(students):
        if j == skip:
            zs.append(None)
            hs.append(None)
            continue
        parts = [decisions_and_features(s, x_all[k : k + CHUNK], algo, tau) for k in range(0, len(x_all), CHUNK)]
        zs.append(torch.cat([p[0] for p in parts]))
        hs.append(torch.cat([p[1] for p in parts]))
    ref_z = next(z for z in zs if z is not None)
    ref_h = next(h for h in hs if h is not None)
    zs = [torch.zeros_like(ref_z) if z is None else z for z in zs]
    hs = [torch.zeros_like(ref_h) if h is None else h for h in hs]
    return torch.stack(zs), torch.stack(hs)


def diversity(decisions: torch.Tensor) -> float:
    """Mean pairwise L2 distance between members' action distributions: decisions ``(M, B, A)`` logits."""
    p = decisions.softmax(dim=-1)
    m = p.shape[0]
    if m < 2:
        return 0.0
    d = (p.unsqueeze(0) - p.unsqueeze(1)).norm(dim=-1).mean(dim=-1)  # (M, M)
    return float(d.sum() / (m * (m - 1)))


class Distiller:
    """Builds each student's distillation loss and owns the attention module and its optimizer."""

    def __init__(
        self,
        students: Sequence,
        method: str,
        algo: str,
        lambda_dec: float,
        lambda_feat: float,
        temperature: float,
        tau: float,
        ramp_steps: int,
        attention: DecisionAttention | None,
        attention_lr: float,
        step_fn: Callable[[], int],
    ) -> None:
        self.students = list(students)
        self.m = len(self.students)
        self.method = method
        self.algo = algo
        self.entry = METHODS[method]
        self.algorithm = ALGORITHMS[algo]
        self.lambda_dec = lambda_dec
        self.lambda_feat = lambda_feat
        self.T = temperature
        self.tau = tau
        self.ramp_steps = ramp_steps
        self.attention = attention
        self.optimizer = torch.optim.Adam(attention.parameters(), lr=attention_lr) if attention is not None else None
        self.step_fn = step_fn
        self._peers: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.alpha_sum = torch.zeros(self.m, self.m)
        self.alpha_count = torch.zeros(self.m)

    def prepare(self, i: int, obs: np.ndarray) -> None:
        """Peers' ``z_j``, ``h_j`` on student i's flattened rollout ``obs`` ``(N, ...)``, once per rollout."""
        self._peers[i] = group_outputs(self.students, obs, self.algo, self.tau, skip=i)

    def _stack(self, i: int, own: torch.Tensor, peers: torch.Tensor) -> torch.Tensor:
        rows = [own if j == i else peers[j] for j in range(self.m)]
        return torch.stack(rows)

    def loss(
        self,
        i: int,
        z: torch.Tensor,
        h: torch.Tensor,
        batch_inds: np.ndarray | None,
        obs: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """``(λ_d·w·L_dec + λ_f·L_feat, logged terms)`` of student i on a minibatch.

        ``z`` ``(B, A)`` (raw logits or Q-values) and ``h`` ``(B, D)`` carry student i's gradient. Peers come
        from :meth:`prepare` indexed by ``batch_inds`` (PPO), or are computed here on ``obs`` (DQN).
        """
        z = self.algorithm.decisions(z, self.tau)
        if batch_inds is not None:
            peer_z, peer_h = self._peers[i]
            idx = torch.as_tensor(batch_inds, device=peer_z.device)
            peer_z, peer_h = peer_z[:, idx], peer_h[:, idx]
        else:
            peer_z, peer_h = group_outputs(self.students, obs, self.algo, self.tau, skip=i)
        decisions = self._stack(i, z, peer_z)
        features = self._stack(i, h, peer_h)
        l_dec, l_feat, alpha = self.entry.terms(i, decisions, features, self.T, self.attention)
        if l_feat is None:
            l_feat = torch.zeros((), device=z.device)
        if alpha is not None:
            self.alpha_sum[i] += alpha[:, i, :].detach().mean(dim=0).cpu()
            self.alpha_count[i] += 1
        w = ramp_weight(self.step_fn(), self.ramp_steps)
        total = self.lambda_dec * w * l_dec + self.lambda_feat * l_feat
        return total, {"L_dec": l_dec.item(), "L_feat": l_feat.item(), "ramp": w}

    def zero_grad(self) -> None:
        if self.optimizer is not None:
            self.optimizer.zero_grad(set_to_none=True)

    def step(self) -> None:
        if self.optimizer is not None:
            self.optimizer.step()

    def pop_alpha(self) -> torch.Tensor | None:
        """The mean attention matrix since the last call (row i: student i's weights over the group)."""
        if self.attention is None or not bool((self.alpha_count > 0).any()):
            return None
        alpha = self.alpha_sum / self.alpha_count.clamp(min=1).unsqueeze(1)
        self.alpha_sum.zero_()
        self.alpha_count.zero_()
        return alpha

    def release(self, i: int) -> None:
        self._peers.pop(i, None)
