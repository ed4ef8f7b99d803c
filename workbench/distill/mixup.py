"""Mixup interpolation targets (mixup: Zhang et al., arXiv 1710.09412; MixSKD: Yang et al., arXiv 2208.05768).

A batch is paired with a permutation of itself: image ``i`` with image ``π(i)``, and mixed as
``x̃_i = λ·x_i + (1−λ)·x_π(i)`` with ``λ ~ Beta(α, α)``. MixSKD treats the same interpolation of the
pair's network outputs (logits, feature maps) as a target for the mixed image's outputs, and the mixed
image's outputs as a target for the interpolation ("both directions"):

    L_logit = T²·KL(sg(softmax(z_int/T)) ‖ softmax(z̃/T)) + T²·KL(sg(softmax(z̃/T)) ‖ softmax(z_int/T)),
    z_int = λ·z_i + (1−λ)·z_π(i)   (logit interpolation)
    L_feat  = mean((F̃ − F_int)²)   with gradients to both sides.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from workbench.distill._checks import ShapeError, positive, same_shape
from workbench.distill.kd import kd_loss


def sample_lambda(alpha: float) -> float:
    """``λ ~ Beta(α, α)`` (α > 0), drawn with torch's global RNG (which the trainer seeds every epoch)."""
    positive("sample_lambda", "alpha", alpha)
    a = torch.tensor(float(alpha))
    return float(torch.distributions.Beta(a, a).sample())


def interpolate(t: torch.Tensor, lam: float, perm: torch.Tensor) -> torch.Tensor:
    """``λ·t + (1−λ)·t[perm]`` along the batch axis: mixed images, or the interpolation targets of outputs."""
    if perm.shape != t.shape[:1]:
        raise ShapeError(f"interpolate: perm has shape {tuple(perm.shape)}, tensor has batch {t.shape[0]}")
    return lam * t + (1.0 - lam) * t[perm]


def mixup_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, lam: float, perm: torch.Tensor) -> torch.Tensor:
    """``λ·CE(z̃, y) + (1−λ)·CE(z̃, y[perm])``: the cross-entropy of a mixed batch against its mixed labels."""
    return lam * F.cross_entropy(logits, targets) + (1.0 - lam) * F.cross_entropy(logits, targets[perm])


def mixup_consistency_loss(mixed_logits: torch.Tensor, interpolated_logits: torch.Tensor, T: float) -> torch.Tensor:
    """Both-direction KL between the mixed image's logits and the interpolated logits (module docstring).

    Each direction treats the other side as a detached target, so both sides learn. Shapes ``(B, C)``.
    """
    same_shape("mixup_consistency_loss", "mixed_logits", mixed_logits, "interpolated_logits", interpolated_logits)
    return kd_loss(mixed_logits, interpolated_logits.detach(), T) + kd_loss(
        interpolated_logits, mixed_logits.detach(), T
    )


def mixup_feature_loss(mixed_feature: torch.Tensor, interpolated_feature: torch.Tensor) -> torch.Tensor:
    """``mean((F̃ − F_int)²)``; gradients reach both sides (the symmetric, both-direction form)."""
    same_shape("mixup_feature_loss", "mixed_feature", mixed_feature, "interpolated_feature", interpolated_feature)
    return F.mse_loss(mixed_feature, interpolated_feature)
