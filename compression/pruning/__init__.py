"""Pruning of trained models: SGLP layer pruning (``sglp``) and the filter-pruning family (``filters``).

``config`` holds the two commands' keys, ``run`` their prepare → method → report bodies on the shared
``compression.pipeline``, ``compare`` the benchmark protocols. Methods are registered, never dispatched on
strings:

- ``FILTER_METHODS``: a :class:`compression.pruning.filters.FilterMethod` per name (sfp, srfp, asrfp, ghfp,
  cpmc, pfgdf, and Torch-Pruning's criteria tp-l1 ... tp-random from ``tp``): its flat config keys (a
  dataclass merged into ``workbench compress prune``'s config), its knob space for the MACs budget, and how
  it compresses (mask schedule, or one shot then fine-tuning);
- ``SGLP_RULES``: a :class:`compression.pruning.sglp.SelectionRule` per name (sglp and the baselines
  last, random, weight-norm): how it picks the residual units to remove.

A new method is its module (registering itself with ``@FILTER_METHODS.register("name")``), that module's
name in the registry's ``modules`` below, and its test; the CLI choices, ``--help``, the compare protocols
and the registry-wide tests (``tests/compression/test_registries.py``) pick it up.
"""

from __future__ import annotations

from typing import Any

from workbench.registry import Registry

FILTER_METHODS: Registry[Any] = Registry(
    "filter-pruning method", modules=["compression.pruning.filters", "compression.pruning.tp"]
)
SGLP_RULES: Registry[Any] = Registry("unit-selection rule", modules=["compression.pruning.sglp"])
