"""Supervised compression: SGLP layer pruning, the KD family and the filter-pruning family."""

from pathlib import Path

PRESETS_DIR = Path(__file__).resolve().parent / "presets"
