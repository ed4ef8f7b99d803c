"""LDC: learnable drift compensation of class prototypes (Gomez-Villa et al., ECCV 2024, arXiv 2407.08536).

The backbone keeps learning on every task (a moving backbone, cold start) and the classifier is a nearest class
mean (NCM) over stored prototypes; LDC moves the old prototypes into the new feature space with a learned map.

- Training on task t: ``L = CE(z[:, C_t], y) + λ_lwf · KD_T(z[:, C_<t], z_old[:, C_<t]) + λ_feat · mean((f − f_old)²)``
  with ``z`` the head's logits, ``C_t`` the task's classes (CE over them only), ``z_old`` / ``f_old`` the frozen
  previous model's logits / embedding, and the released code's LwF term (no T² factor)
  ``KD_T(s, t) = −mean_i Σ_c softmax(t_i/T)_c · log softmax(s_i/T)_c`` over the old classes (λ_lwf = 10, T = 2,
  as in the released ``models/lwf.py``); the feature-distillation term is off by default (``ldc.feat_weight``).
- After task t > 0: a linear projector ``p(f) = W f (+ b)`` is fitted from the previous backbone's embeddings to
  the new backbone's embeddings of the current task's training images, ``min_W mean_i ‖p(f_old,i) − f_new,i‖²``
  (Adam, lr 1e-3, 20 epochs, no bias: the released code's defaults; ``ldc.solver=lstsq`` solves it in closed form),
  and every stored old prototype is moved by it, ``P_c ← p(P_c)``; the prototypes of the new classes are the
  means of their new embeddings, ``P_c = mean_{i: y_i = c} f_new,i``.
- Inference: nearest prototype among the seen classes, on L2-normalised embeddings and prototypes (the released
  code's NCM; ``ldc.metric=l2``: plain Euclidean).

``ldc.compensate=false`` keeps the old prototypes where they were computed (LwF + NCM, the paper's baseline).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from continual.ir import class_prototypes, prototype_scores
from continual.models import embed
from continual.registry import CIL_METHODS, CILContext, CILMethod
from continual.template import WorkbenchTemplate
from workbench.config import opt
from workbench.models import frozen_copy


@dataclasses.dataclass
class LDCConfig:
    """LDC keys (defaults: the released code, github alviur/ldc ``models/lwf.py`` and ``exps/lwf.json``)."""

    lwf_weight: float = opt(10.0, "λ_lwf of the LwF logit-distillation term on the old classes", ge=0)
    temperature: float = opt(2.0, "T of the LwF term", gt=0)
    feat_weight: float = opt(0.0, "λ_feat of the feature-distillation term mean((f − f_old)²) (0: off)", ge=0)
    compensate: bool = opt(True, "move the old prototypes by the learned projector (false: LwF + NCM)")
    solver: str = opt(
        "adam", "projector fit: Adam on mini-batches (paper) or closed-form least squares", ("adam", "lstsq")
    )
    projector_epochs: int = opt(20, "Adam epochs of the projector per task", ge=1)
    projector_lr: float = opt(1e-3, "Adam learning rate of the projector", gt=0)
    bias: bool = opt(False, "affine projector W f + b (the released code: linear, no bias)")
    metric: str = opt(
        "cosine", "NCM metric: L2-normalised (cosine, the released code's) or plain Euclidean", ("cosine", "l2")
    )


def lwf_term(logits: torch.Tensor, old_logits: torch.Tensor, T: float) -> torch.Tensor:
    """``−mean_i Σ_c softmax(t_i/T)_c · log softmax(s_i/T)_c`` (the released code's ``_KD_loss``)."""
    return -(F.softmax(old_logits / T, dim=1) * F.log_softmax(logits / T, dim=1)).sum(dim=1).mean()


def fit_projector(
    old_feats: torch.Tensor,
    new_feats: torch.Tensor,
    *,
    bias: bool = False,
    solver: str = "adam",
    epochs: int = 20,
    lr: float = 1e-3,
    batch_size: int = 128,
    generator: torch.Generator | None = None,
) -> nn.Linear:
    """The linear map ``p`` minimising ``mean_i ‖p(old_i) − new_i‖²`` (both ``(N, D)``): Adam from PyTorch's default
    initialisation on shuffled mini-batches, or the least-squares solution (float64, minimum norm)."""
    dim = old_feats.shape[1]
    proj = nn.Linear(dim, new_feats.shape[1], bias=bias).to(old_feats.device)
    if solver == "lstsq":
        a = old_feats.double()
        if bias:
            a = torch.cat([a, torch.ones(len(a), 1, dtype=a.dtype, device=a.device)], dim=1)
        sol = torch.linalg.lstsq(a.cpu(), new_feats.double().cpu(), driver="gelsd").solution.to(old_feats.device)
        with torch.no_grad():
            proj.weight.copy_(sol[:dim].T)
            if bias:
                proj.bias.copy_(sol[dim])
        return proj.requires_grad_(False)
    if solver != "adam":
        raise ValueError(f"unknown projector solver {solver!r}; valid: adam, lstsq")
    opt_ = torch.optim.Adam(proj.parameters(), lr=lr)
    n = len(old_feats)
    with torch.enable_grad():
        for _ in range(epochs):
            perm = torch.randperm(n, generator=generator).to(old_feats.device)
            for i in range(0, n, batch_size):
                idx = perm[i : i + batch_size]
                loss = F.mse_loss(proj(old_feats[idx]), new_feats[idx])
                opt_.zero_grad(set_to_none=True)
                loss.backward()
                opt_.step()
    return proj.requires_grad_(False)


class LDC(WorkbenchTemplate):
    """LDC as an Avalanche strategy (module doc): the model is the backbone with its head over all classes."""

    def __init__(self, *, model: nn.Module, ldc_cfg: Any, **kwargs: Any) -> None:
        super().__init__(model=model, **kwargs)
        self.cfg = ldc_cfg
        self.prototypes = torch.zeros(self.num_classes, model.feature_dim, device=self.device)
        self.available = torch.zeros(self.num_classes, dtype=torch.bool, device=self.device)
        self.old_model: nn.Module | None = None
        self.projector: nn.Linear | None = None

    def embed(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return embed(model, x)[1]

    def forward(self) -> torch.Tensor:
        if not self.is_training:
            feats = self.embed(self.model, self.mb_x)
            return prototype_scores(feats, self.prototypes, self.available, self.cfg.metric)
        self._logits, self._f = embed(self.model, self.mb_x)
        return self._logits

    def criterion(self) -> torch.Tensor:
        if not self.is_training:
            return torch.zeros((), device=self.device)
        return self.training_loss(self.mb_x, self.mb_y, self._logits, self._f)

    def training_loss(self, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        """The task's training loss (module doc) of a batch whose logits ``z`` and embedding ``f`` are given."""
        new = torch.tensor(self.task_classes[self.task], device=logits.device)
        local = (y.unsqueeze(1) == new.unsqueeze(0)).float().argmax(dim=1)
        ce = F.cross_entropy(logits[:, new], local)
        self.loss_terms = {"ce": ce.detach()}
        if self.old_model is None:
            return ce
        with torch.no_grad():
            old_logits, old_f = embed(self.old_model, x)
        total = ce
        if self.cfg.lwf_weight > 0:
            old = torch.tensor(self.old_classes(), device=logits.device)
            kd = self.cfg.lwf_weight * lwf_term(logits[:, old], old_logits[:, old], self.cfg.temperature)
            self.loss_terms["lwf"] = kd.detach()
            total = total + kd
        if self.cfg.feat_weight > 0:
            fd = self.cfg.feat_weight * F.mse_loss(f, old_f)
            self.loss_terms["feat"] = fd.detach()
            total = total + fd
        return total

    def _after_training_exp(self, **kwargs: Any) -> None:
        classes = self.task_classes[self.task]
        feats, labels = self.train_features(self.model, lambda x: self.embed(self.model, x))
        if self.old_model is not None and self.cfg.compensate and self.available.any():
            old_feats, _ = self.train_features(self.old_model, lambda x: self.embed(self.old_model, x))
            self.compensate(old_feats, feats)
        cls = torch.tensor(classes, device=self.device)
        self.prototypes[cls] = class_prototypes(feats, labels, classes)
        self.available[cls] = True
        self.old_model = frozen_copy(self.model)
        super()._after_training_exp(**kwargs)

    def compensate(self, old_feats: torch.Tensor, new_feats: torch.Tensor) -> None:
        """Fit the projector old → new embeddings of the current task and move every stored prototype by it."""
        c = self.cfg
        g = torch.Generator().manual_seed(int(torch.randint(2**31 - 1, (1,))))
        self.projector = fit_projector(
            old_feats,
            new_feats,
            bias=c.bias,
            solver=c.solver,
            epochs=c.projector_epochs,
            lr=c.projector_lr,
            batch_size=self.train_mb_size,
            generator=g,
        )
        idx = self.available.nonzero().squeeze(1)
        with torch.no_grad():
            self.prototypes[idx] = self.projector(self.prototypes[idx])

    def state(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "prototypes": self.prototypes.cpu(),
            "available": self.available.cpu(),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.prototypes = state["prototypes"].to(self.device)
        self.available = state["available"].to(self.device)
        # the previous model is the model as it was saved, right after its task
        self.old_model = frozen_copy(self.model) if bool(self.available.any()) else None


class LDCMethod(CILMethod):
    section = "ldc"
    keys = LDCConfig
    min_first_task = 2
    paper = "arXiv 2407.08536"
    tiny_overrides = ("ldc.projector_epochs=3",)

    def build(self, ctx: CILContext) -> LDC:
        return LDC(model=ctx.backbone, ldc_cfg=ctx.keys, **ctx.template_kwargs())


CIL_METHODS.register("ldc", LDCMethod())
