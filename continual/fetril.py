"""FeTrIL: feature translation for exemplar-free class-incremental learning (Petit et al., WACV 2023,
arXiv 2211.13131).

The backbone is trained on the first task and frozen (:class:`~continual.frozen.FrozenBackbone`). After every
task, on the frozen embeddings of the task's unaugmented training images: the mean ``μ_c`` of every new class
is stored; every old class ``o`` gets pseudo-features by translating the real features of one new class ``c``
by the difference of the class means,

    ``f̂_o = f_c + μ_o − μ_c``  (one pseudo-feature per real feature of class ``c``),

with ``c`` the new class whose mean is nearest to ``μ_o`` (``fetril.pick=closest``, the paper's FeTrIL¹) or a
random new class (``random``). A linear classifier over all seen classes is then trained from scratch on real
(new) + pseudo (old) features — the paper uses a linear SVM; here a linear layer with cross-entropy
(``fetril.clf_*``; named deviation, see README).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from continual.frozen import Embedder, FrozenBackbone
from continual.plugins import mask_unseen
from continual.registry import CIL_METHODS, CILContext, CILMethod
from workbench.config import opt


@dataclasses.dataclass
class FeTrILConfig:
    """FeTrIL keys."""

    pick: str = opt("closest", "new class translated to each old class (closest mean: FeTrIL¹)", ("closest", "random"))
    clf_epochs: int = opt(30, "epochs of the linear classifier on real + pseudo features, per task", ge=1)
    clf_lr: float = opt(1e-2, "Adam learning rate of the linear classifier", gt=0)
    clf_batch_size: int = opt(256, "batch size of the linear classifier", ge=1)
    normalize: bool = opt(True, "L2-normalise features before the classifier (the paper's SVM input)")


def pseudo_features(
    feats: torch.Tensor,
    labels: torch.Tensor,
    means: dict[int, torch.Tensor],
    old_classes: list[int],
    new_classes: list[int],
    pick: str = "closest",
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(F̂, ŷ)``: for every old class ``o``, ``f + μ_o − μ_c`` for every real feature ``f`` of the chosen new
    class ``c`` (nearest mean, or random), labelled ``o``."""
    out, out_y = [], []
    new_means = torch.stack([means[c] for c in new_classes])
    for o in old_classes:
        if pick == "closest":
            c = new_classes[int(torch.cdist(means[o][None], new_means).argmin())]
        else:
            c = new_classes[int(torch.randint(len(new_classes), (1,), generator=generator))]
        real = feats[labels == c]
        out.append(real + means[o] - means[c])
        out_y.append(torch.full((len(real),), o, dtype=torch.long, device=feats.device))
    if not out:
        return feats.new_zeros(0, feats.shape[1]), labels.new_zeros(0)
    return torch.cat(out), torch.cat(out_y)


class FeTrILNet(nn.Module):
    """Backbone (trained on task 0 with its head) + a linear classifier over frozen features (eval)."""

    def __init__(self, backbone: nn.Module, num_classes: int, normalize: bool) -> None:
        super().__init__()
        self.feature_extractor = Embedder(backbone)
        self.backbone = backbone
        self.classifier = nn.Linear(backbone.feature_dim, num_classes)
        self.normalize = normalize

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.feature_extractor(x)

    def classify(self, f: torch.Tensor) -> torch.Tensor:
        return self.classifier(F.normalize(f, dim=1) if self.normalize else f)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x) if self.training else self.classify(self.features(x))


class FeTrIL(FrozenBackbone):
    """FeTrIL as an Avalanche strategy (module doc)."""

    def __init__(self, *, model: FeTrILNet, fetril_cfg: Any, **kwargs: Any) -> None:
        super().__init__(model=model, backbone=model.backbone, **kwargs)
        self.cfg = fetril_cfg
        self.means: dict[int, torch.Tensor] = {}
        self.fit_sizes: dict[str, int] = {}

    def fit(self) -> None:
        feats, labels = self.train_features(self.model, self.model.features)
        new = self.task_classes[self.task]
        for c in new:
            self.means[c] = feats[labels == c].mean(dim=0)
        g = torch.Generator().manual_seed(int(torch.randint(2**31 - 1, (1,))))
        pf, py = pseudo_features(feats, labels, self.means, self.old_classes(), new, self.cfg.pick, g)
        self.fit_sizes = {"real": len(labels), "pseudo": len(py)}
        self.train_classifier(torch.cat([feats, pf]), torch.cat([labels, py]))

    def train_classifier(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """A fresh linear classifier trained with cross-entropy over the seen classes (Adam, mini-batches)."""
        clf = self.model.classifier
        clf.reset_parameters()
        opt = torch.optim.Adam(clf.parameters(), lr=self.cfg.clf_lr)
        seen = self.seen_classes()
        n, bs = len(y), self.cfg.clf_batch_size
        for _ in range(self.cfg.clf_epochs):
            perm = torch.randperm(n, device=x.device)
            for i in range(0, n, bs):
                idx = perm[i : i + bs]
                loss = F.cross_entropy(mask_unseen(self.model.classify(x[idx]), seen), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

    def state(self) -> dict[str, Any]:
        return {
            **super().state(),
            "classifier": self.model.classifier.state_dict(),
            "means": {int(c): m.cpu() for c, m in self.means.items()},
        }

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        self.model.classifier.load_state_dict(state["classifier"])
        self.means = {int(c): m.to(self.device) for c, m in state["means"].items()}


class FeTrILMethod(CILMethod):
    section = "fetril"
    keys = FeTrILConfig
    min_first_task = 2
    paper = "arXiv 2211.13131"

    def build(self, ctx: CILContext) -> FeTrIL:
        model = FeTrILNet(ctx.backbone, ctx.stream.num_classes, ctx.keys.normalize)
        return FeTrIL(model=model, fetril_cfg=ctx.keys, **ctx.template_kwargs())


CIL_METHODS.register("fetril", FeTrILMethod())
