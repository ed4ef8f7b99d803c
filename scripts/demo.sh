#!/usr/bin/env bash
# A short end-to-end experiment of each subsystem; prints where the TensorBoard logs are.
set -euo pipefail
cd "$(dirname "$0")/.."
WB=.venv/bin/workbench
export WORKBENCH_DEMO=1

echo "== supervised training (core): small CNN on a Fashion-MNIST subset"
$WB train --preset demo name=demo

echo
echo "All demo runs are under runs/. Watch them with:"
echo "  .venv/bin/tensorboard --logdir runs"
