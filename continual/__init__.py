"""Exemplar-free class-incremental learning on Avalanche streams (``workbench cil ...``).

- ``benchmarks``: protocols (split-fmnist-5, split-digits-5, CIFAR-100 B0/B50, Tiny-ImageNet) as Avalanche streams.
- ``etag``: eTag, embedding distillation and task-oriented generation (arXiv 2304.10103).
- ``ir``: IR, incremental representation with prototypes (arXiv 2403.16221).
- ``strategies``: Avalanche's Naive, LwF, EWC, JointTraining and the two above, built alike.
- ``metrics``: accuracy matrix → seen-class, average incremental and last accuracy, forgetting.
- ``run`` / ``compare`` / ``bench``: the commands.
"""
