#!/usr/bin/env bash
# Issue 27: RBD beside Flora, GaLore, GoLore, APOLLO-Mini and MeZO (and AdamW, SGD with momentum, FPD) on one
# character-level transformer (rbdlib.models.CharTransformer, D = 829,568) trained on the Jargon File (Debian's
# jargon-text, public domain), every run at the same budget: 1,000 steps x 16 windows x 128 characters = 2,048,000
# tokens (1.4 passes over the 1,456,881 training characters), validation loss every 50 steps on 128 windows, one thread
# a run, two runs at once. Measured on the project's 2-core AMD EPYC (results/successors.py, 100 steps, load 3-6):
# 0.17 CPU s/step for AdamW, 0.20 for RBD with +-1 bases, 0.66 for RBD with normal bases (hence +-1 bases here),
# 0.18-0.19 for Flora, GaLore, GoLore and APOLLO-Mini, 0.12 for MeZO: 2-4 minutes a run on one core.
# Step 1: learning rates by 250-step runs on seed 100, which no table reports (results/lm-successors/tuning).
# Step 2: each method at its best tuned lr, seeds 0-2 (results/lm-successors). Every run resumes where it stopped.
# Usage: setsid nohup bash results/successors.sh > results/logs/successors.out 2>&1 < /dev/null &
set -euo pipefail
cd "$(dirname "$0")/.."
X=(.venv/bin/python results/successors.py --jobs 2 --nice 10)
R=distribution=rademacher
M=$R,momentum=0.9,memory=coordinates,redraw=100   # the best memory variant of issue 26 (FC-Fashion-MNIST)
lrs() {   # lrs SPEC LR...: SPEC with each lr, e.g. lrs sgd:momentum=0.9 0.1 0.3 -> sgd:momentum=0.9,lr=0.1 ...
  local spec=$1 sep=:; shift
  [[ $spec == *:* ]] && sep=,
  for lr in "$@"; do echo "$spec${sep}lr=$lr"; done
}
TUNE=($(lrs adamw 0.0003 0.001 0.003 0.01) $(lrs sgd:momentum=0.9 0.03 0.1 0.3 1)
      $(lrs rbd:$R 0.3 1 3 10) $(lrs rbd:$M 0.1 0.3 1 3) $(lrs fpd:$R 0.3 1 3 10)
      $(lrs flora:kappa=200 0.03 0.1 0.3 1) $(lrs galore 0.001 0.003 0.01 0.03) $(lrs golore 0.001 0.003 0.01 0.03)
      $(lrs apollo-mini 0.0003 0.001 0.003 0.01) $(lrs mezo 0.00003 0.0001 0.0003 0.001))
"${X[@]}" --tune --methods "${TUNE[@]}"
# Step 1b: where a method's best lr was at the edge of what it had tried, one more lr beyond that edge, until each
# best has a worse (or diverged) neighbour on both sides (results/lm-successors/tuning/table.md): three rounds were
# needed for RBD, RBD with memory and FPD, one for SGD with momentum, Flora (lr 3 diverged) and MeZO.
"${X[@]}" --tune --methods sgd:momentum=0.9,lr=0.01 flora:kappa=200,lr=3 mezo:lr=0.003 \
  $(lrs rbd:$R 30 100 300) $(lrs rbd:$M 10 30 100) $(lrs fpd:$R 30 100 300)
# Chosen (250 steps, seed 100): AdamW 0.001, SGD momentum 0.03, RBD 100, RBD with memory 30, FPD 100, Flora 1,
# GaLore 0.01, GoLore 0.01, APOLLO-Mini 0.001, MeZO 0.001.
"${X[@]}" --lr-from results/lm-successors/tuning --seeds 0 1 2 --methods \
  adamw sgd:momentum=0.9 rbd:$R rbd:$M fpd:$R flora:kappa=200 galore golore apollo-mini mezo
