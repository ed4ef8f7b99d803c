"""Shared core of the research workbench: config, runs, trainer, data, models, distillation and pruning."""

__version__ = "0.1.0"
