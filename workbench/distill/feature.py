"""Feature mimicry: MSE between student and teacher features, with an optional learned projector.

CLIP-KD (arXiv 2307.12732) finds plain feature MSE the strongest single distillation loss, so
``FeatureMimicry`` uses no projector when the widths already match; a projector (1x1 conv
for ``(B, C, H, W)`` maps, linear for ``(B, D)`` vectors, in the style of FitNets,
arXiv 1412.6550) maps the student width to the teacher width when they differ.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from workbench.distill._checks import ShapeError, ndim_in, same_shape
from workbench.errors import unknown


def feature_mse(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """``mean((F_s − F_t)²)`` over every element (batch, channels, positions).

    Shapes: any, equal. The teacher is not detached here.
    """
    same_shape("feature_mse", "student", student, "teacher", teacher)
    return F.mse_loss(student, teacher)


class FeatureProjector(nn.Module):
    """Learned map from the student width to the teacher width.

    ``(B, C_s, H, W) -> (B, C_t, H, W)`` by a 1x1 convolution when ``spatial`` is true,
    ``(B, D_s) -> (B, D_t)`` by a linear layer otherwise.
    """

    def __init__(self, in_dim: int, out_dim: int, spatial: bool = True, bias: bool = False) -> None:
        super().__init__()
        self.spatial = spatial
        self.proj: nn.Module = (
            nn.Conv2d(in_dim, out_dim, kernel_size=1, bias=bias) if spatial else nn.Linear(in_dim, out_dim, bias=bias)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ndim_in("FeatureProjector", "input", x, (4,) if self.spatial else (2,))
        return self.proj(x)


class FeatureMimicry(nn.Module):
    """``MSE(P(F_s), F_t)``, ``P`` a ``FeatureProjector`` or the identity.

    Args:
        student_dim: student channels (4-D) or width (2-D).
        teacher_dim: teacher channels or width.
        spatial: inputs are ``(B, C, H, W)`` maps (True) or ``(B, D)`` vectors (False).
        projector: ``"auto"`` (a projector only when the widths differ, the default),
            ``"always"`` or ``"never"`` (widths must then match).
    """

    def __init__(
        self,
        student_dim: int,
        teacher_dim: int,
        spatial: bool = True,
        projector: Literal["auto", "always", "never"] = "auto",
    ) -> None:
        super().__init__()
        if projector not in ("auto", "always", "never"):
            raise unknown("projector mode", projector, ("auto", "always", "never"))
        if projector == "never" and student_dim != teacher_dim:
            raise ShapeError(
                f"FeatureMimicry: student width {student_dim} != teacher width {teacher_dim} with "
                "projector='never'; use projector='auto'"
            )
        use = projector == "always" or (projector == "auto" and student_dim != teacher_dim)
        self.spatial = spatial
        self.projector: nn.Module = FeatureProjector(student_dim, teacher_dim, spatial) if use else nn.Identity()

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        """Return the scalar loss; ``student`` ``(B, C_s[, H, W])``, ``teacher`` ``(B, C_t[, H, W])``."""
        want = (4,) if self.spatial else (2,)
        ndim_in("FeatureMimicry", "student", student, want)
        ndim_in("FeatureMimicry", "teacher", teacher, want)
        return feature_mse(self.projector(student), teacher)
