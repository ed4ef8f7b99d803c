#!/usr/bin/env bash
# Install and start a one-node SLURM cluster on this machine (Debian/Ubuntu, as root), for testing
# `workbench sweep ... launcher=slurm` and `pytest -m slurm`. Stop it with scripts/slurm-stop.sh.
#
# The node is this host with all its CPUs and memory, one partition `debug` (default). No cgroups
# (proctrack/linuxproc, task/none: containers often lack a writable cgroup tree), no accounting daemon
# (job states come from squeue and the jobcomp file; sacct reads the latter).
set -euo pipefail

if [ "$(id -u)" != "0" ]; then
    echo "error: run as root (apt-get and the SLURM daemons need it)" >&2
    exit 2
fi

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
fi

host="$(hostname -s)"
cpus="$(nproc)"
mem_mb="$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)"
conf_dir=/etc/slurm
mkdir -p "$conf_dir" /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge
# a cgroup.conf from the package makes slurmd try cgroup/v2 and fail in containers
rm -f "$conf_dir/cgroup.conf"

cat >"$conf_dir/slurm.conf" <<EOF
ClusterName=workbench
SlurmctldHost=$host
AuthType=auth/munge
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=/var/log/slurm/jobcomp.log
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
SlurmdTimeout=300
KillWait=30
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF

# munge: one key, the daemon as the munge user
if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
fi
chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge 2>/dev/null || true
chmod 400 /etc/munge/munge.key
if ! pgrep -x munged >/dev/null; then
    runuser -u munge -- /usr/sbin/munged
fi
munge -n | unmunge >/dev/null

pgrep -x slurmctld >/dev/null || slurmctld
pgrep -x slurmd >/dev/null || slurmd
for _ in $(seq 30); do
    if sinfo -h -o %T 2>/dev/null | grep -qE "idle|mix|alloc"; then
        break
    fi
    sleep 1
done
scontrol update nodename="$host" state=resume 2>/dev/null || true
sinfo
srun -N1 -n1 hostname
echo "SLURM is up: partition debug, node $host ($cpus CPUs, $mem_mb MB)"
