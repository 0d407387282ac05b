#!/usr/bin/env bash
# Real SLURM check: a one-node SLURM cluster on localhost runs the workflow through
# snakemake-executor-plugin-slurm (profiles/slurm), and its products must equal those
# of a local `--cores 2` run of the same config, file by file (.ci/compare_products.py).
#
# Needs root and Debian's slurm-wlm packages (installed here when absent). When it cannot
# run it prints "SKIP" with the reason and exits 77, never 0. Every daemon it starts is
# stopped by PID on exit; a munged already running is used and left alone. SLURM runs on
# private ports with its state under a scratch directory; its config must be at the default
# /etc/slurm/slurm.conf (the plugin's job step strips SLURM_CONF from srun's environment),
# so the check writes it only where none exists (or where a previous run of it wrote it),
# and removes it afterwards.
#
# Environment: PSFMATCH_CI_CACHE (default /var/cache/psfmatch-ci) holds the venv with the
# SLURM plugin between runs; PSFMATCH_SLURM_UNGROUPED=1 adds a run without group jobs (one
# SLURM job per step, 36 jobs: about 2-5 min more) to measure what grouping saves.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
CACHE=${PSFMATCH_CI_CACHE:-/var/cache/psfmatch-ci}
UNGROUPED=${PSFMATCH_SLURM_UNGROUPED:-0}
t0=$(date +%s)
phase() { echo "[slurm-check +$(( $(date +%s) - t0 ))s] $*"; }
skip() { echo; echo "######## SKIP: SLURM check not run: $* ########"; echo; exit 77; }

[ "$(id -u)" -eq 0 ] || skip "needs root (to install and start munge/slurmctld/slurmd)"

# ---------------------------------------------------------------- packages
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
   || ! command -v sbatch >/dev/null || ! [ -x /usr/sbin/munged ]; then
    command -v apt-get >/dev/null || skip "slurm-wlm/munge absent and no apt-get to install them"
    phase "installing munge + slurm (apt)"
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends \
        munge slurmctld slurmd slurm-client >/dev/null; } \
        || skip "apt-get could not install munge slurmctld slurmd slurm-client"
fi
phase "slurm $(dpkg-query -W -f='${Version}' slurmctld 2>/dev/null || slurmctld -V)"

# ---------------------------------------------------------------- scratch + teardown
WORK=$(mktemp -d /tmp/psfmatch-slurm.XXXXXX)
STARTED_PIDS=()
cleanup() {
    local rc=$?
    for pid in "${STARTED_PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${STARTED_PIDS[@]}"; do
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    done
    [ "${#STARTED_PIDS[@]}" -eq 0 ] || echo "[slurm-check] stopped daemons: ${STARTED_PIDS[*]}"
    [ "${WROTE_CONF:-0}" = 1 ] && rm -f /etc/slurm/slurm.conf
    if [ "$rc" -ne 0 ] && [ "$rc" -ne 77 ]; then
        for f in "$WORK"/slurm/slurmctld.log "$WORK"/slurm/slurmd.log \
                 $(find "$WORK" -path '*slurm_logs*' -name '*.log' 2>/dev/null | head -n 4); do
            [ -f "$f" ] && { echo "--- tail $f"; tail -n 30 "$f"; }
        done
        echo "[slurm-check] scratch directory kept for inspection: $WORK"
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT

# ---------------------------------------------------------------- munge
if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    phase "munged already running: using it"
else
    if [ ! -s /etc/munge/munge.key ]; then
        install -d -o munge -g munge -m 0700 /etc/munge
        mungekey --create --keyfile=/etc/munge/munge.key
        chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
    fi
    install -d -o munge -g munge -m 0755 /run/munge
    rm -f /run/munge/munged.pid
    runuser -u munge -- /usr/sbin/munged || skip "munged does not start here"
    for _ in $(seq 1 50); do [ -s /run/munge/munged.pid ] && break; sleep 0.1; done
    STARTED_PIDS+=("$(cat /run/munge/munged.pid)")
    munge -n | unmunge >/dev/null || skip "munge credentials do not work here"
    phase "munged started (pid ${STARTED_PIDS[-1]})"
fi

# ---------------------------------------------------------------- one-node cluster
S=$WORK/slurm
mkdir -p "$S/ctld" "$S/d"
NCPU=$(nproc)
MEM_MB=$(awk '/MemTotal/ {print int($2 / 1024 * 0.8)}' /proc/meminfo)
CONF=/etc/slurm/slurm.conf
MARK="# psfmatch CI slurm.conf"
if [ -e "$CONF" ] && [ "$(head -n 1 "$CONF")" != "$MARK" ]; then
    skip "$CONF exists (a real SLURM set-up?); not overwriting it"
fi
if pgrep -x slurmctld >/dev/null || pgrep -x slurmd >/dev/null; then
    skip "slurmctld/slurmd already running on this machine"
fi
install -d -m 0755 /etc/slurm
WROTE_CONF=1
cat > "$CONF" <<EOF
$MARK
# one node (this machine as "localhost"), no accounting daemon.
ClusterName=psfmatchci
SlurmctldHost=localhost
SlurmctldPort=16817
SlurmdPort=16818
AuthType=auth/munge
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$S/ctld
SlurmdSpoolDir=$S/d
SlurmctldPidFile=$S/slurmctld.pid
SlurmdPidFile=$S/slurmd.pid
SlurmctldLogFile=$S/slurmctld.log
SlurmdLogFile=$S/slurmd.log
# no cgroups: works in VMs and containers without a delegated cgroup tree
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
SwitchType=switch/none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$S/jobcomp.log
# finished jobs stay visible to squeue for 5 min: the plugin's status poll uses squeue
# (no slurmdbd, so no sacct); MinJobAge must exceed 3x the first-check delay
MinJobAge=300
NodeName=localhost CPUs=$NCPU RealMemory=$MEM_MB State=UNKNOWN
PartitionName=ci Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
unset SLURM_CONF
slurmctld || { tail -n 20 "$S/slurmctld.log"; exit 1; }
for _ in $(seq 1 50); do [ -s "$S/slurmctld.pid" ] && break; sleep 0.1; done
STARTED_PIDS+=("$(cat "$S/slurmctld.pid")")
slurmd -N localhost || { tail -n 20 "$S/slurmd.log"; exit 1; }
for _ in $(seq 1 50); do [ -s "$S/slurmd.pid" ] && break; sleep 0.1; done
STARTED_PIDS+=("$(cat "$S/slurmd.pid")")
for _ in $(seq 1 120); do
    [ "$(sinfo -h -o %t 2>/dev/null)" = "idle" ] && break
    sleep 0.5
done
sinfo
[ "$(sinfo -h -o %t)" = "idle" ] || { echo "node never became idle"; exit 1; }
phase "SLURM up: ${NCPU} CPUs, ${MEM_MB} MB (slurmctld $(cat "$S/slurmctld.pid"), slurmd $(cat "$S/slurmd.pid"))"

# ---------------------------------------------------------------- venv with the plugin
# A venv of its own: with the plugin installed, every snakemake start runs `scontrol`,
# which stalls ~9 s when no controller answers; the main .venv stays free of it.
VENV=$CACHE/venv-slurm
if ! "$VENV/bin/python" -c "import snakemake_executor_plugin_slurm, psfmatch" 2>/dev/null; then
    mkdir -p "$CACHE"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q -e "$REPO" snakemake-executor-plugin-slurm
fi
# the cached venv may hold an editable install of another checkout: point it here
"$VENV/bin/pip" install -q --no-deps -e "$REPO"
export PATH=$VENV/bin:$PATH  # sbatch --export=ALL: the jobs' snakemake is this one
phase "venv: snakemake $(snakemake --version), plugin $(pip show snakemake-executor-plugin-slurm | awk '/^Version/ {print $2}')"

# ---------------------------------------------------------------- runs
SMK=(snakemake --snakefile "$REPO/Snakefile")
SLURM_CI=(--slurm-status-command squeue --slurm-init-seconds-before-status-checks 1)
for run in local grouped ungrouped; do python "$REPO/.ci/make_workdir.py" "$WORK/$run" --pairs 2; done
# profiles/slurm without its groups, to measure what grouping saves
mkdir -p "$WORK/profile-ungrouped"
python - "$REPO/profiles/slurm/config.yaml" "$WORK/profile-ungrouped/config.yaml" <<'EOF'
import sys, yaml
profile = yaml.safe_load(open(sys.argv[1]))
profile.pop("groups"); profile.pop("group-components")
yaml.safe_dump(profile, open(sys.argv[2], "w"))
EOF

timed() {  # timed NAME cmd...: run, keep the log, print wall seconds
    local name=$1; shift
    local start end
    start=$(date +%s.%N)
    if ! timeout -s INT -k 60 900 "$@" > "$WORK/$name.log" 2>&1; then
        tail -n 60 "$WORK/$name.log"; echo "FAILED: $name"; return 1
    fi
    end=$(date +%s.%N)
    python -c "print(f'{$end - $start:.1f}')" > "$WORK/$name.seconds"
    phase "$name: $(cat "$WORK/$name.seconds") s"
}
timed local "${SMK[@]}" --directory "$WORK/local" --cores 2 --workflow-profile none
# --cores 1: a group job asks for at most this many CPUs (its parallel steps, the two
# ingests, are then run one after the other); with the default 2, one pair's group fills
# the 2-CPU CI node and the pairs would run one after the other.
timed grouped "${SMK[@]}" --directory "$WORK/grouped" --profile "$REPO/profiles/slurm" "${SLURM_CI[@]}" --cores 1
if [ "$UNGROUPED" = 1 ]; then
        timed ungrouped "${SMK[@]}" --directory "$WORK/ungrouped" --profile "$WORK/profile-ungrouped" "${SLURM_CI[@]}"
fi

# ---------------------------------------------------------------- evidence + comparison
echo "--- sbatch submissions (grouped run):"
grep -E "submitted with SLURM jobid|Job .* has been submitted" "$WORK/grouped.log" | sed 's/^/    /'
n_grouped=$(grep -c "has been submitted with SLURM jobid" "$WORK/grouped.log" || true)
[ "$n_grouped" -ge 1 ] || { echo "no job went through sbatch"; exit 1; }
echo "--- finished SLURM jobs (squeue --states=all):"
squeue --states=all --noheader --format='    %i %T %M %k' | sort -n
failed=0
python "$REPO/.ci/compare_products.py" "$WORK/local/results" "$WORK/grouped/results" || failed=1
if [ "$UNGROUPED" = 1 ]; then
    n_ungrouped=$(grep -c "has been submitted with SLURM jobid" "$WORK/ungrouped.log" || true)
    python "$REPO/.ci/compare_products.py" "$WORK/local/results" "$WORK/ungrouped/results" || failed=1
fi
[ "$failed" -eq 0 ] || { echo "FAIL: SLURM products differ from the local run"; exit 1; }

# ---------------------------------------------------------------- overhead
python - "$WORK" "$n_grouped" "${n_ungrouped:-0}" <<'EOF'
import subprocess
import sys
from pathlib import Path
work, n_grouped, n_ungrouped = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
t = {p.stem: float(p.read_text()) for p in work.glob("*.seconds")}
pairs = 2
print(f"overhead per pair (2 pairs of 512², 2-CPU node): local {t['local'] / pairs:.1f} s/pair")
print(f"  SLURM grouped:   {t['grouped'] / pairs:.1f} s/pair, {n_grouped} sbatch jobs, "
      f"+{(t['grouped'] - t['local']) / pairs:.1f} s/pair over local")
if "ungrouped" in t:
    print(f"  SLURM ungrouped: {t['ungrouped'] / pairs:.1f} s/pair, {n_ungrouped} sbatch jobs, "
          f"+{(t['ungrouped'] - t['local']) / pairs:.1f} s/pair over local")
# Where a group job's time goes: its wall (squeue) against the sum of its steps' own
# walls (Snakemake benchmark files); the rest is starting each step (srun + a Snakemake).
steps = {}
for tsv in (work / "grouped" / "benchmarks").rglob("*.tsv"):
    pair = tsv.stem.split(".")[0]
    seconds = float(tsv.read_text().splitlines()[1].split("\t")[0])
    total, count = steps.get(pair, (0.0, 0))
    steps[pair] = (total + seconds, count + 1)
walls = []
for line in subprocess.run(["squeue", "--states=all", "--noheader", "--format=%M %k"],
                           capture_output=True, text=True).stdout.splitlines():
    elapsed, name = line.split(None, 1)
    if name.startswith("rule_pair"):
        walls.append(sum(int(v) * 60**i for i, v in enumerate(reversed(elapsed.split(":")))))
pair_names = [row.split("\t")[0] for row in
              (work / "grouped" / "config" / "pairs.tsv").read_text().splitlines()[1:]]
pair_steps = [steps[name] for name in pair_names if name in steps]
if walls and pair_steps:
    wall = sum(walls) / len(walls)
    own = sum(s for s, _ in pair_steps) / len(pair_steps)
    n = sum(c for _, c in pair_steps) / len(pair_steps)
    print(f"  a pair's group job: {wall:.0f} s, its {n:.0f} steps' own walls {own:.1f} s: "
          f"{(wall - own) / n:.1f} s per step to start it inside the job")
EOF
phase "PASS: products of the SLURM run(s) equal the local run's"
