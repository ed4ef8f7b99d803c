"""Exemplar-free class-incremental learning on Avalanche streams (``workbench cil ...``).

- ``registry``: ``CIL_METHODS``, the CIL-method registry (a method = its module + one registration + its test).
- ``benchmarks``: protocols (split-fmnist-5, fmnist-b4-3, split-digits-5, CIFAR-100 B0/B50, Tiny-ImageNet).
- ``baselines``: Avalanche's Naive, LwF, EWC, JointTraining as shipped.
- ``etag``: eTag, embedding distillation and task-oriented generation (arXiv 2304.10103).
- ``ir``: IR, incremental representation with prototypes (arXiv 2403.16221).
- ``frozen``: the frozen-backbone template of ``ncm`` (arXiv 1611.07725), ``fecam`` (arXiv 2309.14062),
  ``fetril`` (arXiv 2211.13131) and ``acil`` (arXiv 2205.14922).
- ``strategies``: build a registered method's strategy; its per-task checkpoint state.
- ``metrics``: accuracy matrix → seen-class, average incremental and last accuracy, forgetting, BWT, old/new.
- ``run`` / ``compare`` / ``bench``: the commands.
"""
