"""CTSL-MKT: collaborative teacher-student learning via multiple knowledge transfer (Sun et al., arXiv 2101.08471).

A cohort of students; each student ``i`` minimises

    L_i = CE(z_i, y)
        + w_sd  · T²·KL(p̄_i ‖ p_i)                                  (self-distillation)
        + w_rel · mean_{j≠i} [ψ_D(f_i, sg f_j) + w_angle·ψ_A(f_i, sg f_j)]   (instance relations)
        + w_mut · T²·mean_{j≠i} KL(sg p_j ‖ p_i)                      (online mutual distillation)

with ``p = softmax(z/T)``. Self-distillation: the student's own softened outputs from its temporal
(exponential moving) average ``θ̄_i ← d_t·θ̄_i + (1−d_t)·θ_i``, ``d_t = min(d, (1+t)/(10+t))``
(d = 0.999, warmed up over the first updates), so a student teaches itself with
its smoothed past predictions. Instance relations: RKD distance and angle losses (arXiv 1904.05068)
between the pooled embeddings of the student and each peer, i.e. matching their pairwise distance
and angle structure over the batch. The mutual term is deep mutual learning (``dml_loss``).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from compression.kd.cohort import Cohort
from workbench.checkpoint import unwrap_model
from workbench.distill import dml_loss, kd_loss, rkd_angle_loss, rkd_distance_loss
from workbench.errors import WorkbenchError
from workbench.models import FeatureHooks
from workbench.trainer import Objective, ObjectiveOutput


class CTSLObjective(Objective):
    """The CTSL-MKT loss (module docstring); terms ``ce``, ``self_distill``, ``relation``, ``mutual``.

    Owns the members' moving averages (frozen copies, checkpointed with the objective).
    """

    def __init__(
        self,
        cohort: Cohort,
        T: float = 3.0,
        self_distill: float = 1.0,
        relation: float = 1.0,
        angle: float = 2.0,
        mutual: float = 1.0,
        ema: float = 0.999,
    ) -> None:
        super().__init__()
        cohort.require_members("ctsl-mkt")
        if not 0.0 <= ema < 1.0:
            raise WorkbenchError(f"ctsl-mkt.ema must be in [0, 1), got {ema}")
        self.averages = nn.ModuleList(copy.deepcopy(m) for m in cohort.members)
        for p in self.averages.parameters():
            p.requires_grad_(False)
        self.paths = cohort.member_paths(cohort.members[0].feature_path)
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))
        self.T, self.decay = T, ema
        self.w = {"self_distill": self_distill, "relation": relation, "mutual": mutual}
        self.w_angle = angle

    def train(self, mode: bool = True) -> CTSLObjective:
        super().train(mode)
        self.averages.eval()
        return self

    @torch.no_grad()
    def _update_averages(self, cohort: nn.Module) -> None:
        # Warm-up of the decay, min(d, (1+t)/(10+t)), so early averages are not dominated by the initial weights.
        self.updates += 1
        t = float(self.updates)
        decay = min(self.decay, (1.0 + t) / (10.0 + t))
        for avg, member in zip(self.averages, unwrap_model(cohort).members, strict=True):
            for pa, pm in zip(avg.parameters(), member.parameters(), strict=True):
                pa.lerp_(pm.detach(), 1.0 - decay)
            for ba, bm in zip(avg.buffers(), member.buffers(), strict=True):
                ba.copy_(bm)

    def forward(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> ObjectiveOutput:
        if self.training:
            self._update_averages(model)
        with FeatureHooks(model, self.paths) as hooks:
            logits = model(inputs, all_members=True)
            emb = [hooks[p].flatten(1) for p in self.paths]
        with torch.no_grad():
            past = torch.stack([avg(inputs) for avg in self.averages])
        m = logits.shape[0]
        ce = sum(F.cross_entropy(z, targets) for z in logits)
        self_distill = sum(kd_loss(logits[i], past[i], self.T) for i in range(m))
        relation = logits.new_zeros(())
        for i in range(m):
            for j in range(m):
                if i != j:
                    peer = emb[j].detach()
                    pair = rkd_distance_loss(emb[i], peer) + self.w_angle * rkd_angle_loss(emb[i], peer)
                    relation = relation + pair / (m - 1)
        mutual = dml_loss(logits, self.T).sum()
        parts = {"self_distill": self_distill, "relation": relation, "mutual": mutual}
        loss = ce + sum(self.w[k] * v for k, v in parts.items())
        terms = {"ce": ce.detach(), **{k: v.detach() for k, v in parts.items()}}
        return ObjectiveOutput(loss, logits.mean(0), terms)
