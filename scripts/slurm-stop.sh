#!/usr/bin/env bash
# Stop the one-node SLURM cluster that scripts/slurm-setup.sh started (the packages stay installed), by the
# daemons' pid files.
set -uo pipefail
for pidfile in /run/slurmd.pid /run/slurmctld.pid /run/munge/munged.pid; do
    if [ -s "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null; then
        echo "stopped $(basename "$pidfile" .pid)"
    fi
done
