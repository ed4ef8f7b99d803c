"""eTag: class-incremental learning via embedding distillation and task-oriented generation
(Huang et al., AAAI 2024, arXiv 2304.10103), as an Avalanche strategy.

Every batch is expanded to its 4 rotations (``rotate_batch``, joint labels ``4·y + r``; rotation-major).
With ``k`` = classes seen before the task ÷ classes per incremental task:

- task 0: ``L = Σ_b CE(aux_b, 4·y + r) + CE(head(f[unrotated]), y)``;
- task t > 0, old model = frozen copy from the end of the previous task:
  ``L_kd = k · Σ_{b ∈ branches} T²·KL(softmax(z_old,b/T) ‖ softmax(z_b/T))`` over all rotations (T = 3),
  ``L_dist = k · ‖F_new − F_old‖₂`` (un-squared norm over the whole rotated batch of embeddings),
  ``L_cls = CE(head(f[unrotated]), y)/(k+1) + k/(k+1) · CE(head(G(z, y_old)), y_old)``, ``y_old`` uniform
  over the old classes (one batch per step), ``z ~ N(0, I)``; ``L = L_cls + L_kd + L_dist``.
- after each task, with backbone and head frozen, the CVAE generator ``G`` is trained on the task's
  embeddings (cached once: the backbone is frozen) with ``recon + KL + CE_task + distill``, where
  ``recon = mean_b Σ_d (x̂ − f)²``, ``KL = mean_b −½ Σ (1 + log σ² − μ² − σ²)``,
  ``CE_task = CE(head(x̂), y)/(k+1) + k/(k+1)·CE(head(G(z, y_old)), y_old)`` (the task-oriented term) and
  ``distill = 1e-3 · k · ‖G_t(z, y_old) − G_{t−1}(z, y_old)‖²`` (squared norm over the whole batch, i.e.
  summed over samples, as the released code's ``MSELoss(reduction='sum')``; a batch mean would be
  ``gen_batch_size`` times weaker and lets the old classes' generation drift).
- inference: argmax of the main head on the unrotated image.

BatchNorm statistics are frozen after task 0 by default (``etag.freeze_bn``).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from continual.models import ETagNet, FeatureCVAE
from continual.plugins import mask_unseen
from continual.registry import CIL_METHODS, CILContext, CILMethod
from continual.template import WorkbenchTemplate
from workbench.config import opt
from workbench.distill import embedding_distance, joint_kd_loss, joint_labels, rotate_batch, unrotated
from workbench.models import frozen_copy


@dataclasses.dataclass
class ETagConfig:
    """eTag (arXiv 2304.10103) keys."""

    temperature: float = opt(3.0, "KD temperature T over the auxiliary rotation heads", gt=0)
    kd_weight: float = opt(1.0, "multiplier of L_kd = k·Σ_b T²·KL(old_b ‖ new_b)", ge=0)
    dist_weight: float = opt(1.0, "multiplier of L_dist = k·‖f_new − f_old‖₂ (un-squared, whole rotated batch)", ge=0)
    kd_last_head: bool = opt(False, "also distil the last-stage rotation head (paper: branches after stages 1..S−1)")
    freeze_bn: bool = opt(True, "freeze BatchNorm running statistics after task 0")
    gen_steps: int = opt(
        300, "CVAE generator optimizer steps after each task (on cached features; bounds its cost)", ge=0
    )
    gen_lr: float = opt(1e-3, "generator Adam learning rate (paper 1e-4 with 100-epoch solver training)", gt=0)
    gen_batch_size: int = opt(128, "generator batch size", ge=1)
    gen_hidden: int = opt(0, "generator hidden width (0 = the embedding width, at least 128: 512 on ResNet-18)", ge=0)
    latent_dim: int = opt(0, "generator latent size (0 = min(200, embedding width): 200 on ResNet-18)", ge=0)
    gen_ce_weight: float = opt(1.0, "weight of the task-oriented CE(head(x̂), y) term of the generator", ge=0)
    gen_distill_weight: float = opt(1e-3, "weight of the generator distillation k·‖G_t − G_{t−1}‖² (per k)", ge=0)


def cvae_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """``mean_b −½ Σ_l (1 + log σ² − μ² − σ²)``: KL(N(μ, σ²) ‖ N(0, I)) per sample, batch mean. Shapes (B, L)."""
    return (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)).mean()


def reconstruction_loss(recon: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """``mean_b Σ_d (x̂ − f)²``. Shapes (B, D)."""
    return (recon - f).pow(2).sum(dim=1).mean()


def task_oriented_ce(
    head: nn.Module,
    feats: torch.Tensor,
    y: torch.Tensor,
    k: float,
    old_feats: torch.Tensor | None = None,
    y_old: torch.Tensor | None = None,
    seen: Sequence[int] | None = None,
) -> torch.Tensor:
    """``CE(head(feats), y)/(k+1) + k/(k+1)·CE(head(old_feats), y_old)`` (the second term only when k > 0).

    With ``seen``, the softmax runs over those classes only (future classes of the all-class head are masked).
    """

    def logits(x: torch.Tensor) -> torch.Tensor:
        out = head(x)
        return out if seen is None else mask_unseen(out, seen)

    loss = F.cross_entropy(logits(feats), y) / (k + 1)
    if k > 0 and old_feats is not None:
        loss = loss + k / (k + 1) * F.cross_entropy(logits(old_feats), y_old)
    return loss


def generator_distill(new: torch.Tensor, old: torch.Tensor, k: float, weight: float = 1e-3) -> torch.Tensor:
    """``weight · k · Σ_b ‖new_b − old_b‖²`` between the current and the previous generator's samples (batch sum)."""
    return weight * k * (new - old).pow(2).sum()


def generator_loss_terms(
    generator: FeatureCVAE,
    head: nn.Module,
    f: torch.Tensor,
    y: torch.Tensor,
    k: float,
    old_classes: torch.Tensor | None = None,
    prev_generator: FeatureCVAE | None = None,
    distill_weight: float = 1e-3,
    seen: Sequence[int] | None = None,
) -> dict[str, torch.Tensor]:
    """``recon``, ``kl``, ``ce`` (task-oriented) and ``distill`` of one generator batch (see module doc)."""
    recon, mu, logvar = generator(f, y)
    terms = {"recon": reconstruction_loss(recon, f), "kl": cvae_kl(mu, logvar)}
    old_feats = y_old = None
    distill = torch.zeros((), device=f.device)
    if k > 0 and old_classes is not None and len(old_classes):
        y_old = old_classes[torch.randint(len(old_classes), (len(y),), device=f.device)]
        z = torch.randn(len(y), generator.latent, device=f.device)
        old_feats = generator.sample(y_old, z)
        if prev_generator is not None:
            with torch.no_grad():
                target = prev_generator.sample(y_old, z)
            distill = generator_distill(old_feats, target, k, distill_weight)
    terms["ce"] = task_oriented_ce(head, recon, y, k, old_feats, y_old, seen)
    terms["distill"] = distill
    return terms


class ETag(WorkbenchTemplate):
    """eTag as an Avalanche ``SupervisedTemplate``: rotation-expanded forward, eTag's loss as ``criterion``,
    generator training and the old-model snapshot after each experience."""

    def __init__(self, *, model: ETagNet, etag_cfg: Any, **kwargs: Any) -> None:
        super().__init__(model=model, freeze_bn=etag_cfg.freeze_bn, **kwargs)
        self.cfg = etag_cfg
        backbone = model.backbone
        dim = backbone.feature_dim
        hidden = etag_cfg.gen_hidden or max(dim, 128)
        latent = etag_cfg.latent_dim or min(200, dim)
        self.generator = FeatureCVAE(dim, self.num_classes, hidden, latent)
        self.generator.to(self.device)
        self.old_model: ETagNet | None = None
        self.generator_seconds: list[float] = []
        self._xr: torch.Tensor | None = None

    def forward(self) -> torch.Tensor:
        if not self.is_training:
            return self.model(self.mb_x)
        self._xr = rotate_batch(self.mb_x)
        self._logits, self._f, self._aux = self.model.forward_all(self._xr)
        return unrotated(self._logits)

    def criterion(self) -> torch.Tensor:
        if not self.is_training:
            return F.cross_entropy(self.mb_output, self.mb_y)
        y = self.mb_y
        if self.old_model is None:
            aux_ce = sum(F.cross_entropy(a, joint_labels(y)) for a in self._aux)
            ce = F.cross_entropy(mask_unseen(self.mb_output, self.seen_classes()), y)
            self.loss_terms = {"ce": ce.detach(), "aux_ce": aux_ce.detach()}
            return ce + aux_ce
        k = self.old_units()
        with torch.no_grad():
            _, f_old, aux_old = self.old_model.forward_all(self._xr)
        heads = range(len(self._aux) if self.cfg.kd_last_head else len(self._aux) - 1)
        l_kd = k * sum(joint_kd_loss(self._aux[b], aux_old[b], self.cfg.temperature) for b in heads)
        l_dist = k * embedding_distance(self._f, f_old)
        old = torch.tensor(self.old_classes(), device=self.device)
        y_old = old[torch.randint(len(old), (len(y),), device=self.device)]
        with torch.no_grad():
            fake = self.generator.sample(y_old)
        l_cls = task_oriented_ce(self.model.head, unrotated(self._f), y, k, fake, y_old, self.seen_classes())
        self.loss_terms = {"cls": l_cls.detach(), "kd": torch.as_tensor(l_kd).detach(), "dist": l_dist.detach()}
        return l_cls + self.cfg.kd_weight * l_kd + self.cfg.dist_weight * l_dist

    def _after_training_exp(self, **kwargs: Any) -> None:
        import time

        start = time.perf_counter()
        self.train_generator()
        self.generator_seconds.append(time.perf_counter() - start)
        self.old_model = frozen_copy(self.model)
        super()._after_training_exp(**kwargs)

    def train_generator(self) -> dict[str, float]:
        """Fit the CVAE on the task's cached embeddings (``gen_steps`` Adam steps), backbone and head frozen."""
        if self.cfg.gen_steps == 0:
            return {}
        backbone = self.model.backbone
        from continual.models import embed

        feats, labels = self.train_features(self.model, lambda x: embed(backbone, x)[1])
        head = frozen_copy(self.model.head)
        k = self.old_units()
        old = torch.tensor(self.old_classes(), device=self.device, dtype=torch.long)
        prev = frozen_copy(self.generator) if k > 0 else None
        gen = self.generator.train()
        opt = torch.optim.Adam(gen.parameters(), lr=self.cfg.gen_lr)
        n, bs = len(labels), min(self.cfg.gen_batch_size, len(labels))
        terms: dict[str, torch.Tensor] = {}
        perm, pos = torch.randperm(n, device=self.device), 0
        for _ in range(self.cfg.gen_steps):
            if pos + bs > n:
                perm, pos = torch.randperm(n, device=self.device), 0
            idx = perm[pos : pos + bs]
            pos += bs
            terms = generator_loss_terms(
                gen, head, feats[idx], labels[idx], k, old, prev, self.cfg.gen_distill_weight, self.seen_classes()
            )
            loss = terms["recon"] + terms["kl"] + self.cfg.gen_ce_weight * terms["ce"] + terms["distill"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        last = {f"gen/{name}": float(v.detach()) for name, v in terms.items()}
        gen.eval()
        self.generator_terms = last
        return last

    def state(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "generator": self.generator.state_dict(),
            "old_model": None if self.old_model is None else self.old_model.state_dict(),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.generator.load_state_dict(state["generator"])
        if state.get("old_model") is not None:
            old = copy.deepcopy(self.model)
            old.load_state_dict(state["old_model"])
            self.old_model = frozen_copy(old)


class ETagMethod(CILMethod):
    """eTag on the backbone plus its rotation branches (``ETagNet``)."""

    section = "etag"
    keys = ETagConfig
    paper = "arXiv 2304.10103"
    tiny_overrides = ("etag.gen_steps=20", "etag.gen_hidden=64")

    def build(self, ctx: CILContext) -> ETag:
        net = ETagNet(ctx.backbone, ctx.stream.num_classes)
        return ETag(model=net, etag_cfg=ctx.keys, **ctx.template_kwargs())


CIL_METHODS.register("etag", ETagMethod())
