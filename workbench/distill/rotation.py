"""Rotation self-supervised augmented labels (HSAKD, arXiv 2107.13715; used by eTag, arXiv 2304.10103,
and IR, arXiv 2403.16221).

Every batch ``(N, C, H, W)`` is expanded to its rotations by ``r · 90°``, ``r = 0..R−1`` (R = 4),
**rotation-major**: rows ``[r·N, (r+1)·N)`` hold all N images rotated by ``r · 90°``, i.e.
``[x rot 0; x rot 90; x rot 180; x rot 270]``. Rotation ``r`` is ``torch.rot90(x, r, dims=(-2, -1))``
(from the H axis towards the W axis: counter-clockwise as an image is displayed). The joint label
of image ``n`` under rotation ``r`` is ``R·y_n + r``, laid out in the same order, so
``joint_labels(y)[r·N + n] == R·y[n] + r``.
"""

from __future__ import annotations

import torch

from workbench.distill._checks import ShapeError, ndim_in
from workbench.distill.kd import kd_loss
from workbench.errors import WorkbenchError

NUM_ROTATIONS = 4
DEFAULT_T = 3.0


def _check_r(where: str, num_rotations: int) -> None:
    if not 1 <= num_rotations <= NUM_ROTATIONS:
        raise WorkbenchError(f"{where}: num_rotations must be in 1..4 (multiples of 90°), got {num_rotations}")


def rotate_batch(x: torch.Tensor, num_rotations: int = NUM_ROTATIONS) -> torch.Tensor:
    """``(N, C, H, W) -> (R·N, C, H, W)``: ``cat([rot90(x, r) for r in 0..R−1])`` (rotation-major).

    H and W must be equal for the rotations to stack (square images).
    """
    ndim_in("rotate_batch", "x", x, (4,))
    _check_r("rotate_batch", num_rotations)
    if num_rotations > 1 and x.shape[-1] != x.shape[-2]:
        raise ShapeError(f"rotate_batch: images must be square to rotate by 90°, got shape {tuple(x.shape)}")
    return torch.cat([torch.rot90(x, r, dims=(-2, -1)) for r in range(num_rotations)], dim=0)


def joint_labels(y: torch.Tensor, num_rotations: int = NUM_ROTATIONS) -> torch.Tensor:
    """``(N,) -> (R·N,)``: ``cat([R·y + r for r in 0..R−1])``, matching ``rotate_batch``'s order."""
    ndim_in("joint_labels", "y", y, (1,))
    _check_r("joint_labels", num_rotations)
    return torch.cat([num_rotations * y + r for r in range(num_rotations)], dim=0)


def rotation_labels(n: int, num_rotations: int = NUM_ROTATIONS, device: torch.device | None = None) -> torch.Tensor:
    """``(R·N,)`` rotation index ``r`` of every row of ``rotate_batch``'s output."""
    _check_r("rotation_labels", num_rotations)
    return torch.arange(num_rotations, device=device).repeat_interleave(n)


def unrotated(x: torch.Tensor, num_rotations: int = NUM_ROTATIONS) -> torch.Tensor:
    """The rotation-0 slice ``x[:N]`` of a rotation-major ``(R·N, ...)`` tensor (images, logits, features)."""
    _check_r("unrotated", num_rotations)
    if x.dim() < 1 or x.shape[0] % num_rotations:
        raise ShapeError(
            f"unrotated: leading size of shape {tuple(x.shape)} is not a multiple of num_rotations={num_rotations}"
        )
    return x[: x.shape[0] // num_rotations]


def joint_kd_loss(
    student_joint_logits: torch.Tensor, teacher_joint_logits: torch.Tensor, T: float = DEFAULT_T
) -> torch.Tensor:
    """``T² · KL(softmax(z_t/T) ‖ softmax(z_s/T))`` over the joint ``R·C`` classes, mean over ``R·N`` rows.

    Shapes: ``(R·N, R·C)`` both (HSAKD, arXiv 2107.13715; T = 3). Teacher not detached here.
    """
    ndim_in("joint_kd_loss", "student_joint_logits", student_joint_logits, (2,))
    return kd_loss(student_joint_logits, teacher_joint_logits, T)
