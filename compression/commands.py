"""``workbench compress ...`` commands (light module: heavy imports happen when a command runs)."""

from workbench.command import Command, CommandGroup
from workbench.sweep import COMPARE_SWEEP_KEYS

# keys a --resume may change: extending fine-tuning or training, and how it is evaluated, logged and found
_RUN_KEYS = ("eval_every", "eval_batch_size", "log_every", "data_root")

GROUP = CommandGroup(
    name="compress",
    help="model compression: SGLP layer pruning, filter pruning (SFP family, CPMC, PFGDF), knowledge distillation",
    commands=[
        Command(
            name="sglp",
            help="SGLP layer pruning of a trained model: CKA + Fisher segmentation + gradient-norm importance",
            config="compression.pruning.config:SGLPConfig",
            run="compression.pruning.run:run_sglp",
            presets="presets",
            name_keys=("baseline",),
            resume_keys=("finetune_epochs", *_RUN_KEYS),
        ),
        Command(
            name="prune",
            help="filter pruning: sfp | srfp | asrfp | ghfp | cpmc | pfgdf | tp-<criterion>, scope=internal|all, "
            "then physical channel removal",
            config="compression.pruning.config:PruneConfig",
            run="compression.pruning.run:run_prune",
            presets="presets",
            name_keys=("method",),
            resume_keys=("finetune_epochs", *_RUN_KEYS),
        ),
        Command(
            name="kd",
            help="knowledge distillation: kd | hsakd (from a teacher run), mixskd | mcl | ctsl-mkt | ddnn-ekd",
            config="compression.kd.config:KDConfig",
            run="compression.kd.run:run_kd",
            presets="presets",
            name_keys=("method", "student"),
            resume_keys=("epochs", *_RUN_KEYS),
        ),
        Command(
            name="compare",
            help="a protocol's methods over seeds: a mean ± std table and plots (sglp-fmnist, prune-fmnist, kd-fmnist)",
            config="compression.compare:CompareConfig",
            run="compression.compare:run",
            presets="presets",
            name_keys=("protocol",),
            resume_keys=COMPARE_SWEEP_KEYS,
        ),
    ],
)
