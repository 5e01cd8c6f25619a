#!/usr/bin/env bash
# Issue 26's measurements say most of RBD's gap to SGD is the size of its expected step, lr x d/D, which grows with
# the number of directions d. This tests it directly: plain RBD +-1 at the paper's lr 0.5 and protocol without
# augmentation (FC-Fashion-MNIST, batch 32, 100 epochs), d = 500 and 1,000 instead of 250 (the only change), into
# results/fc-fmnist-no-augment beside d = 250's three seeds: seed 0 of both, then seeds 1-2 of d = 1,000. Resumes
# where it stopped.
# Usage: setsid nohup bash results/dim.sh > results/logs/dim.out 2>&1 < /dev/null &
set -euo pipefail
cd "$(dirname "$0")/.."
D=(.venv/bin/rbdlib-experiment fc-fmnist --augment none --nice 10 --out results/fc-fmnist-no-augment --epochs 100
   --jobs 2)
"${D[@]}" --seeds 0 --methods rbd:distribution=rademacher,dim=1000 rbd:distribution=rademacher,dim=500
"${D[@]}" --seeds 1 2 --methods rbd:distribution=rademacher,dim=1000
