"""The knowledge-distillation family, one module per method, each an ``Objective`` for the workbench Trainer.

- ``kd``: Hinton KD from a trained teacher (arXiv 1503.02531) and the student-alone baseline.
- ``hsakd``: hierarchical self-supervised augmented KD (arXiv 2107.13715).
- ``mixskd``: self-KD from mixup (arXiv 2208.05768).
- ``mcl``: mutual contrastive learning of a cohort (arXiv 2104.12565).
- ``ctsl_mkt``: collaborative teacher-student learning via multiple knowledge transfer (arXiv 2101.08471).
- ``ddnn_ekd``: depth-level dynamic network with embedded KD (arXiv 2103.00793).

Shared pieces: ``teacher`` (loading a ``workbench train`` run), ``cohort`` (several networks trained as one
module); the auxiliary classifiers after each stage are the core's ``workbench.models.AuxiliaryBranches``.
"""

METHODS = ("student", "kd", "hsakd", "mixskd", "mcl", "ctsl-mkt", "ddnn-ekd")
TEACHER_METHODS = ("kd", "hsakd")
COHORT_METHODS = ("mcl", "ctsl-mkt")
