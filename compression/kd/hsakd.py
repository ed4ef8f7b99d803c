"""HSAKD: hierarchical self-supervised augmented knowledge distillation (Yang et al., arXiv 2107.13715).

Every image is seen under the four rotations ``r·90°`` and labelled with the joint label ``4·y + r``
(``rotate_batch`` / ``joint_labels``). Auxiliary branches after each stage of teacher and student
(``AuxiliaryBranches``, ``4·C`` outputs) predict the joint label.

1. Teacher branches: trained with ``Σ_k CE(q_k^T(x_r), 4·y + r)`` while the teacher backbone is frozen
   (no gradient, BatchNorm statistics fixed), then cached in the teacher's run directory.
2. Student: ``L = CE(z_S(x), y) + Σ_k T²·KL(q_k^T ‖ q_k^S) + T²·KL(p^T ‖ p^S)``, T = 3, where the branch KL
   runs over all four rotations (``R·N`` rows, ``R·C`` joint classes) and so does the main-head KL
   (``R·N`` rows, C classes), as the authors' released training code does; the CE is on the unrotated
   images only. ``hsakd.main_rotations=false`` restricts the main-head KL to the unrotated rows (the
   workbench's earlier choice).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from compression.kd.kd import FrozenTeacherObjective
from compression.kd.registry import KD_METHODS, Built, KDContext, KDMethod, new_student
from workbench.checkpoint import load_checkpoint, save_checkpoint
from workbench.config import opt
from workbench.distill import joint_kd_loss, joint_labels, kd_loss, rotate_batch, unrotated
from workbench.errors import WorkbenchError
from workbench.models import AuxiliaryBranches, FeatureHooks, frozen_copy
from workbench.trained import MODEL_FILE
from workbench.trainer import Objective, ObjectiveOutput, Trainer, TrainerConfig, trainer_config

NUM_ROTATIONS = 4
BRANCHES_FORMAT = "workbench-hsakd-branches/1"


@dataclasses.dataclass
class HSAKDWeights:
    """HSAKD (arXiv 2107.13715)."""

    T: float = opt(3.0, "temperature of the branch and main-head KL", gt=0)
    ce: float = opt(1.0, "weight of the cross-entropy on unrotated images")
    aux: float = opt(1.0, "weight of Σ_k T²·KL between matching teacher/student branches (all rotations)")
    main: float = opt(1.0, "weight of T²·KL between the main heads")
    main_rotations: bool = opt(
        True, "main-head KL over all four rotations (released code); false: over the unrotated images only"
    )
    aux_epochs: int = opt(0, "epochs training the teacher's branches, backbone frozen (0 = epochs)")
    aux_lr: float = opt(0.0, "learning rate of the teacher's branches (0 = lr)")


def check_rotatable(image_size: tuple[int, int] | list[int]) -> None:
    """HSAKD rotates images by 90°: they must be square."""
    h, w = image_size
    if h != w:
        raise WorkbenchError(f"hsakd rotates images by 90° and needs square images, got {h}x{w}; use method=kd")


class TeacherWithBranches(nn.Module):
    """A frozen backbone (always in eval mode, run without gradients) and trainable auxiliary branches.

    ``forward(x)`` returns the branches' logits on ``x`` (a list, one ``(N, 4·C)`` tensor per branch).
    """

    def __init__(self, backbone: nn.Module, branches: AuxiliaryBranches) -> None:
        super().__init__()
        self.backbone = frozen_copy(backbone)
        self.branches = branches

    def train(self, mode: bool = True) -> TeacherWithBranches:
        super().train(mode)
        self.backbone.eval()
        return self

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        with torch.no_grad(), FeatureHooks(self.backbone, self.branches.paths) as feats:
            self.backbone(x)
            stage_outputs = [feats[p] for p in self.branches.paths]
        return self.branches(stage_outputs)


class BranchTrainingObjective(Objective):
    """``Σ_k CE(q_k(rotate(x)), 4·y + r)`` for a ``TeacherWithBranches``; terms ``aux{k}_ce``."""

    def forward(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> ObjectiveOutput:
        labels = joint_labels(targets, NUM_ROTATIONS)
        outputs = model(rotate_batch(inputs, NUM_ROTATIONS))
        ces = [F.cross_entropy(q, labels) for q in outputs]
        terms = {f"aux{k + 1}_ce": ce.detach() for k, ce in enumerate(ces)}
        return ObjectiveOutput(torch.stack(ces).sum(), None, terms)


@torch.no_grad()
def branch_accuracy(model: TeacherWithBranches, dataset: Dataset, device: torch.device, batch_size: int) -> list[float]:
    """Joint-label accuracy (%) of every branch on the four rotations of ``dataset``."""
    model.eval()
    correct: list[int] = []
    total = 0
    for inputs, targets in DataLoader(dataset, batch_size=batch_size):
        inputs, targets = inputs.to(device), targets.to(device)
        labels = joint_labels(targets, NUM_ROTATIONS)
        outs = model(rotate_batch(inputs, NUM_ROTATIONS))
        correct = correct or [0] * len(outs)
        for k, q in enumerate(outs):
            correct[k] += int((q.argmax(1) == labels).sum())
        total += labels.numel()
    return [100.0 * c / max(total, 1) for c in correct]


def _cache_key(teacher_dir: Path, trainer_cfg: TrainerConfig, data_key: dict[str, Any], seed: int) -> dict[str, Any]:
    stat = (teacher_dir / MODEL_FILE).stat()
    loop = {k: getattr(trainer_cfg, k) for k in ("epochs", "batch_size", "optimizer", "lr", "momentum", "weight_decay")}
    loop.update(schedule=trainer_cfg.schedule, milestones=list(trainer_cfg.milestones), gamma=trainer_cfg.gamma)
    return {"model_file": [stat.st_size, stat.st_mtime_ns], "loop": loop, "data": data_key, "seed": seed}


def teacher_branches(
    teacher: nn.Module,
    teacher_dir: str | Path,
    num_classes: int,
    trainer_cfg: TrainerConfig,
    train_data: Dataset,
    test_data: Dataset | None,
    data_key: dict[str, Any],
    device: torch.device,
    seed: int,
) -> tuple[AuxiliaryBranches, dict[str, Any]]:
    """The teacher's trained auxiliary branches, from the cache in its run directory or trained now.

    Training runs the workbench Trainer on ``TeacherWithBranches`` (backbone frozen). The cache file
    ``checkpoints/hsakd_branches-<key>.pt`` (atomic, read with ``weights_only``) is keyed by the teacher's
    model file, the training loop settings, the data selection and ``seed`` (derived from the teacher run's
    seed by the caller, so every student of one teacher shares the branches).

    Returns ``(frozen branches, {"cached": bool, "acc": [joint accuracy per branch], "path": str})``.
    """
    teacher_dir = Path(teacher_dir)
    key = _cache_key(teacher_dir, trainer_cfg, data_key, seed)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    path = teacher_dir / "checkpoints" / f"hsakd_branches-{digest}.pt"
    branches = AuxiliaryBranches(teacher, NUM_ROTATIONS * num_classes)
    info: dict[str, Any] = {"path": str(path)}
    if path.is_file():
        data = load_checkpoint(path, fmt=BRANCHES_FORMAT, map_location="cpu")
        try:
            branches.load_state_dict(data["state_dict"])
        except RuntimeError:
            raise WorkbenchError(f"cached HSAKD branches {path} do not fit the teacher; delete the file") from None
        info.update(cached=True, acc=list(data.get("acc", [])))
        return frozen_copy(branches), info
    model = TeacherWithBranches(teacher, branches)
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    Trainer(model, trainer_cfg, train_data, None, device=device, objective=BranchTrainingObjective(), seed=seed).fit()
    after = model.backbone.state_dict()
    if any(not torch.equal(before[k], after[k].to(before[k].device)) for k in before):
        raise RuntimeError("the teacher backbone changed while its HSAKD branches were trained")
    acc = branch_accuracy(model, test_data, device, trainer_cfg.eval_batch_size) if test_data is not None else []
    state = {k: v.detach().cpu() for k, v in branches.state_dict().items()}
    save_checkpoint(path, {"key": key, "state_dict": state, "acc": acc}, fmt=BRANCHES_FORMAT)
    info.update(cached=False, acc=acc)
    return frozen_copy(branches), info


def branch_trainer_config(cfg: TrainerConfig, epochs: int, lr: float) -> TrainerConfig:
    """The student's loop settings with the branch-training epochs and learning rate (0 = the student's)."""
    return trainer_config(cfg, epochs=epochs or cfg.epochs, lr=lr or cfg.lr)


class HSAKDObjective(FrozenTeacherObjective):
    """The HSAKD student loss (module docstring); terms ``ce``, ``aux_kd`` (sum), ``aux{k}_kd``, ``main_kd``.

    Args:
        teacher / teacher_branches: frozen.
        student: used only to shape the student's branches (which this objective owns and trains).
        num_classes: C; branches predict ``4·C`` joint classes.
        T: temperature. ce / aux / main: weights of the three terms (defaults: ``HSAKDWeights``).
        main_rotations: the main-head KL over all ``R·N`` rotated rows (default), or the ``N`` unrotated ones.
    """

    def __init__(
        self,
        teacher: nn.Module,
        teacher_branches: AuxiliaryBranches,
        student: nn.Module,
        num_classes: int,
        T: float = HSAKDWeights.T,
        ce: float = HSAKDWeights.ce,
        aux: float = HSAKDWeights.aux,
        main: float = HSAKDWeights.main,
        main_rotations: bool = HSAKDWeights.main_rotations,
    ) -> None:
        super().__init__(teacher)
        self.teacher_branches = frozen_copy(teacher_branches)
        self.student_branches = AuxiliaryBranches(student, NUM_ROTATIONS * num_classes)
        if len(self.student_branches.paths) != len(self.teacher_branches.paths):
            raise WorkbenchError(
                f"hsakd pairs branches stage by stage: the student has {len(self.student_branches.paths)} stages, "
                f"the teacher {len(self.teacher_branches.paths)}; pick a student with as many stages"
            )
        self.T, self.w_ce, self.w_aux, self.w_main = T, ce, aux, main
        self.main_rotations = main_rotations

    def train(self, mode: bool = True) -> HSAKDObjective:
        super().train(mode)
        self.teacher_branches.eval()
        return self

    def forward(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> ObjectiveOutput:
        rotated = rotate_batch(inputs, NUM_ROTATIONS)
        with torch.no_grad(), FeatureHooks(self.teacher, self.teacher_branches.paths) as t_feats:
            t_logits = self.teacher(rotated)
            t_aux = self.teacher_branches([t_feats[p] for p in self.teacher_branches.paths])
        with FeatureHooks(model, self.student_branches.paths) as s_feats:
            s_logits = model(rotated)
            s_aux = self.student_branches([s_feats[p] for p in self.student_branches.paths])
        logits = unrotated(s_logits, NUM_ROTATIONS)
        ce = F.cross_entropy(logits, targets)
        aux_kds = [joint_kd_loss(s, t, self.T) for s, t in zip(s_aux, t_aux, strict=True)]
        aux_kd = torch.stack(aux_kds).sum()
        if self.main_rotations:
            main_kd = kd_loss(s_logits, t_logits, self.T)
        else:
            main_kd = kd_loss(logits, unrotated(t_logits, NUM_ROTATIONS), self.T)
        loss = self.w_ce * ce + self.w_aux * aux_kd + self.w_main * main_kd
        terms = {"ce": ce.detach(), "aux_kd": aux_kd.detach(), "main_kd": main_kd.detach()}
        terms.update({f"aux{k + 1}_kd": v.detach() for k, v in enumerate(aux_kds)})
        return ObjectiveOutput(loss, logits, terms)


class HSAKD(KDMethod):
    """HSAKD from the teacher run; the teacher's branches are trained once per teacher and cached."""

    section = "hsakd"
    weights = HSAKDWeights
    needs_teacher = True

    def build(self, ctx: KDContext) -> Built:
        from workbench.runs import load_summary
        from workbench.seeding import derive_seed

        cfg, info, teacher = ctx.cfg, ctx.info, ctx.teacher
        model = new_student(ctx)
        check_rotatable(info.image_size)
        if len(teacher.stage_names) != len(model.stage_names):
            raise WorkbenchError(
                f"hsakd pairs branches stage by stage: student '{cfg.student}' has {len(model.stage_names)} "
                f"stages, teacher '{ctx.teacher_spec['name']}' {len(teacher.stage_names)}; pick a student with as many"
            )
        w = ctx.weights
        branches, binfo = teacher_branches(
            teacher,
            cfg.teacher,
            info.num_classes,
            branch_trainer_config(cfg, w.aux_epochs, w.aux_lr),
            ctx.train,
            ctx.test,
            {"dataset": cfg.dataset, "subset": cfg.subset, "augment": cfg.augment},
            ctx.device,
            # The branches belong to the teacher: seeded by the teacher run's seed, shared by every student.
            derive_seed(int((load_summary(cfg.teacher) or {}).get("seed", 0)), "hsakd-teacher-branches"),
        )
        ctx.summary["teacher_aux_acc"] = binfo.get("acc", [])
        ctx.summary["teacher_aux_cached"] = binfo["cached"]
        objective = HSAKDObjective(
            teacher, branches, model, info.num_classes, w.T, w.ce, w.aux, w.main, w.main_rotations
        )
        return Built(model, objective)


KD_METHODS.register("hsakd", HSAKD())
