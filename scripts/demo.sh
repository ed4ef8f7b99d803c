#!/usr/bin/env bash
# A short end-to-end experiment of each subsystem (a few minutes on 2 CPU cores);
# prints where the TensorBoard logs are. Numbers from runs this short mean nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
WB=.venv/bin/workbench
ROOT=${RUN_ROOT:-runs}

last_run() {  # the newest run directory under $ROOT/<group>/<name>
    ls -d "$ROOT/$1/$2"/*/ | sort | tail -n 1
}

echo "== core: small CNN on a Fashion-MNIST subset (2 epochs)"
$WB train --preset demo name=demo run_root="$ROOT"

echo; echo "== agents: 3 OPD-DA PPO students on Breakout (2,048 steps each)"
$WB rl train --preset demo name=demo run_root="$ROOT"

echo; echo "== continual: eTag and IR on split-digits-5"
$WB cil run --preset split-digits-5 method=etag name=demo-etag run_root="$ROOT" progress=false
$WB cil run --preset split-digits-5 method=ir name=demo-ir run_root="$ROOT" progress=false

echo; echo "== compression: a resnet20 on digits, then SGLP layer pruning and online distillation"
$WB train dataset=digits model=resnet20 epochs=3 batch_size=64 lr=0.05 name=demo-base run_root="$ROOT" progress=false
BASE=$(last_run train demo-base)
$WB compress sglp --preset sglp-demo model="$BASE" name=demo run_root="$ROOT"
$WB compress kd --preset kd-demo method=mixskd name=demo run_root="$ROOT"

echo
echo "All demo runs are under $ROOT/. Watch them with:"
echo "  .venv/bin/tensorboard --logdir $ROOT"
