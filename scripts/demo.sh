#!/usr/bin/env bash
# A short end-to-end experiment of each subsystem (a few minutes on 2 CPU cores); prints where the
# TensorBoard logs are. Numbers from runs this short mean nothing.
#
#   scripts/demo.sh                 prepare the data, then run every step
#   scripts/demo.sh data core       only the named steps (data, core, rl, cil, compress)
#
# Environment: WORKBENCH (the command; default .venv/bin/workbench), RUN_ROOT (default runs),
# DEMO_APT=0 (never apt-get install Debian's dataset-fashion-mnist, even as root),
# WORKBENCH_DATA and WORKBENCH_SYSTEM_DATASETS (where datasets are looked up).
# Without Fashion-MNIST the core step trains on sklearn's digits instead, and says so.
set -euo pipefail
cd "$(dirname "$0")/.."
read -r -a WB <<< "${WORKBENCH:-.venv/bin/workbench}"
ROOT=${RUN_ROOT:-runs}

last_run() {  # the newest run directory under $ROOT/<group>/<name>
    ls -d "$ROOT/$1/$2"/*/ | sort | tail -n 1
}

have_fmnist() {
    "${WB[@]}" data prepare fashion-mnist >/dev/null 2>&1
}

step_data() {
    echo "== data: sklearn digits and Fashion-MNIST"
    "${WB[@]}" data prepare digits
    if have_fmnist; then
        "${WB[@]}" data prepare fashion-mnist
        return
    fi
    if [ "${DEMO_APT:-1}" = 1 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "Fashion-MNIST is not here: installing Debian's dataset-fashion-mnist with apt-get"
        export DEBIAN_FRONTEND=noninteractive
        if { apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 ||
             { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1; }; } &&
           have_fmnist; then
            "${WB[@]}" data prepare fashion-mnist
            return
        fi
        echo "apt-get could not install dataset-fashion-mnist"
    fi
    echo "Fashion-MNIST is not on this machine (as root: apt-get install dataset-fashion-mnist; or pass data_root=DIR);"
    echo "the demo uses sklearn digits instead."
}

step_core() {
    if have_fmnist; then
        echo "== core: small CNN on a Fashion-MNIST subset (2 epochs)"
        "${WB[@]}" train --preset demo name=demo run_root="$ROOT"
    else
        echo "== core: small CNN on sklearn digits (2 epochs; Fashion-MNIST is not on this machine, so digits instead)"
        "${WB[@]}" train --preset demo dataset=digits subset=null test_subset=null name=demo run_root="$ROOT"
    fi
}

step_rl() {
    echo "== agents: 3 OPD-DA PPO students on Breakout (2,048 steps each)"
    "${WB[@]}" rl train --preset demo name=demo run_root="$ROOT"
}

step_cil() {
    echo "== continual: eTag and IR on split-digits-5"
    "${WB[@]}" cil run --preset split-digits-5 method=etag name=demo-etag run_root="$ROOT" progress=false
    "${WB[@]}" cil run --preset split-digits-5 method=ir name=demo-ir run_root="$ROOT" progress=false
}

step_compress() {
    echo "== compression: a resnet20 on digits, then SGLP layer pruning and online distillation"
    "${WB[@]}" train dataset=digits model=resnet20 epochs=3 batch_size=64 lr=0.05 name=demo-base run_root="$ROOT" \
        progress=false
    local base
    base=$(last_run train demo-base)
    "${WB[@]}" compress sglp --preset sglp-demo model="$base" name=demo run_root="$ROOT"
    "${WB[@]}" compress kd --preset kd-demo method=mixskd name=demo run_root="$ROOT"
}

steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(data core rl cil compress)
for step in "${steps[@]}"; do
    case "$step" in
        data | core | rl | cil | compress) ;;
        *) echo "error: unknown demo step '$step'; valid: data, core, rl, cil, compress" >&2; exit 2 ;;
    esac
done
first=1
for step in "${steps[@]}"; do
    [ $first = 1 ] || echo
    first=0
    "step_$step"
done

if [ "${steps[*]}" != data ]; then
    echo
    echo "All demo runs are under $ROOT/. Watch them with:"
    echo "  .venv/bin/tensorboard --logdir $ROOT"
fi
