"""The knowledge-distillation family, one module per method, each an ``Objective`` for the workbench Trainer.

- ``kd``: Hinton KD from a trained teacher (arXiv 1503.02531) and the student-alone baseline.
- ``hsakd``: hierarchical self-supervised augmented KD (arXiv 2107.13715).
- ``mixskd``: self-KD from mixup (arXiv 2208.05768).
- ``mcl``: mutual contrastive learning of a cohort (arXiv 2104.12565).
- ``ctsl_mkt``: collaborative teacher-student learning via multiple knowledge transfer (arXiv 2101.08471).
- ``ddnn_ekd``: depth-level dynamic network with embedded KD (arXiv 2103.00793).
- ``dkd`` and ``dist``: the baselines DKD (arXiv 2203.08679) and DIST (arXiv 2205.10536) from a teacher run.

Each method module registers its :class:`~compression.kd.registry.KDMethod` in ``KD_METHODS``
(``registry``): its config section and defaults, whether it needs a teacher or trains a cohort, how it is
built and reported. ``config`` holds the command's keys (one section per registered method), ``run`` the
command's prepare → method → report body, ``compare`` the benchmark protocols.

Shared pieces: ``teacher`` (loading a ``workbench train`` run), ``cohort`` (several networks trained as one
module); the auxiliary classifiers after each stage are the core's ``workbench.models.AuxiliaryBranches``.
"""

from compression.kd.registry import KD_METHODS

__all__ = ["KD_METHODS"]
