"""OPD-DA: online policy distillation with decision-attention on Atari (arXiv 2406.05488), SB3 students."""
