"""Activation-based attention transfer (Zagoruyko & Komodakis, arXiv 1612.03928).

Attention map of a feature map ``F`` of shape ``(B, C, H, W)``:
``a = vec(Σ_c |F_c|^p) / ‖vec(Σ_c |F_c|^p)‖₂`` per sample (p = 2 by default), shape ``(B, H·W)``.

Loss: ``(1/B) · Σ_b ‖a_s,b − a_t,b‖₂²``, the batch mean of the squared L2 distance between the
normalised maps (summed over positions). The authors' released code averages over positions as
well, which is this value divided by ``H·W``; ``reduction="elementmean"`` gives that form.
Channel counts may differ between student and teacher; spatial sizes must match unless
``interpolate=True``.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from workbench.distill._checks import ShapeError, ndim_in
from workbench.errors import unknown


def attention_map(feature: torch.Tensor, p: float = 2.0, eps: float = 1e-12) -> torch.Tensor:
    """``normalize_L2(vec(Σ_c |F_c|^p))`` per sample: ``(B, C, H, W) -> (B, H·W)``."""
    ndim_in("attention_map", "feature", feature, (4,))
    return F.normalize(feature.abs().pow(p).sum(dim=1).flatten(1), p=2.0, dim=1, eps=eps)


def attention_transfer_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    p: float = 2.0,
    interpolate: bool = False,
    reduction: Literal["batchmean", "elementmean"] = "batchmean",
) -> torch.Tensor:
    """``(1/B) Σ_b ‖a(F_s)_b − a(F_t)_b‖₂²`` (arXiv 1612.03928).

    Args:
        student: ``(B, C_s, H_s, W_s)``.
        teacher: ``(B, C_t, H_t, W_t)``; not detached here.
        p: exponent in ``Σ_c |F_c|^p``.
        interpolate: when the spatial sizes differ, bilinearly resize the student's un-normalised
            map ``Σ_c |F_c|^p`` to the teacher's size before normalising; without it a size
            mismatch raises.
        reduction: ``"batchmean"`` (sum over positions, mean over batch, the default) or
            ``"elementmean"`` (mean over batch and positions, as in the authors' code).
    """
    ndim_in("attention_transfer_loss", "student", student, (4,))
    ndim_in("attention_transfer_loss", "teacher", teacher, (4,))
    if student.shape[0] != teacher.shape[0]:
        raise ShapeError(
            f"attention_transfer_loss: batch sizes differ, student {tuple(student.shape)} vs "
            f"teacher {tuple(teacher.shape)}"
        )
    s_map = student.abs().pow(p).sum(dim=1, keepdim=True)
    t_map = teacher.abs().pow(p).sum(dim=1, keepdim=True)
    if s_map.shape[-2:] != t_map.shape[-2:]:
        if not interpolate:
            raise ShapeError(
                f"attention_transfer_loss: spatial sizes differ, student {tuple(student.shape)} vs "
                f"teacher {tuple(teacher.shape)}; pair same-resolution features or pass interpolate=True"
            )
        s_map = F.interpolate(s_map, size=t_map.shape[-2:], mode="bilinear", align_corners=False)
    a_s = F.normalize(s_map.flatten(1), dim=1)
    a_t = F.normalize(t_map.flatten(1), dim=1)
    sq = (a_s - a_t).pow(2)
    if reduction == "batchmean":
        return sq.sum(dim=1).mean()
    if reduction == "elementmean":
        return sq.mean()
    raise unknown("reduction", reduction, ("batchmean", "elementmean"))
