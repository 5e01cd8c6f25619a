#!/usr/bin/env bash
# Start (or resume) every run of results/: reproduce.sh, compartments.sh and width-and-distributions.sh, in one
# session and one process group, so that:
#  - their --nice levels order them against each other: Linux's autogroup scheduler (on when
#    /proc/sys/kernel/sched_autogroup_enabled is 1) shares the CPU equally between sessions and applies niceness
#    only inside one, so scripts started in separate sessions would split the CPU evenly whatever their niceness;
#  - the session itself is niced (its autogroup), so interactive work in other sessions keeps the CPU;
#  - one command stops them all: kill -- -$(cat results/logs/run-all.pid)
# Usage: setsid nohup bash results/run-all.sh > results/logs/run-all.out 2>&1 < /dev/null &
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p results/logs
echo $$ > results/logs/run-all.pid
[ -w /proc/self/autogroup ] && echo 10 > /proc/self/autogroup || true
for s in reproduce compartments width-and-distributions; do
  bash "results/$s.sh" > "results/logs/$s.out" 2>&1 &
done
wait
