#!/usr/bin/env bash
# Stop the one-node SLURM cluster that scripts/slurm-setup.sh started (the packages stay installed).
set -uo pipefail
for daemon in slurmd slurmctld munged; do
    if [ -f "/run/$daemon.pid" ]; then
        kill "$(cat "/run/$daemon.pid")" 2>/dev/null
    fi
done
for daemon in slurmd slurmctld; do
    pid="$(pgrep -x "$daemon" | head -1)"
    [ -n "$pid" ] && kill "$pid" 2>/dev/null
done
pid="$(pgrep -x munged | head -1)"
[ -n "$pid" ] && kill "$pid" 2>/dev/null
echo "SLURM stopped"
