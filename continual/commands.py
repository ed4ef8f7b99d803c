"""``workbench cil ...`` commands (light module: Avalanche and torch load only when a command runs)."""

from workbench.command import Command, CommandGroup
from workbench.sweep import COMPARE_SWEEP_KEYS

GROUP = CommandGroup(
    name="cil",
    help="exemplar-free class-incremental learning on Avalanche streams: eTag, IR and Avalanche's baselines",
    commands=[
        Command(
            name="run",
            help="one method on one stream: accuracy matrix, seen-class accuracy, forgetting (--preset BENCHMARK)",
            config="continual.config:CILConfig",
            run="continual.run:run",
            presets="presets",
            name_keys=("benchmark", "method"),
            preset_key="benchmark",
            resume_keys=("max_tasks", "eval_batch_size", "log_every", "data_root"),
        ),
        Command(
            name="compare",
            help="methods × seeds on one stream: mean ± std table, seen-accuracy bands, accuracy-matrix heatmaps",
            config="continual.config:CompareConfig",
            run="continual.compare:run",
            presets="presets",
            name_keys=("benchmark",),
            preset_key="benchmark",
            resume_keys=COMPARE_SWEEP_KEYS,
        ),
    ],
)
