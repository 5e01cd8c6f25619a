#!/usr/bin/env bash
# Two shorter comparisons beyond Table 1 (FC-Fashion-MNIST, paper protocol, 1 seed), resumable like reproduce.sh.
# 1. Where compartments grow (issue 14): the FC network's hidden layer at 128, 512 and 2048 units
#    (D = 101,770 / 407,050 / 1,628,170) at fixed d = 250 and lr 0.5, +-1 bases, 5 epochs: one basis; layers at
#    equal coordinates and equal expected step (125 each, lr x 2); layers and 25,000-parameter chunks at equal
#    cost (250 directions each, the same d x D random numbers per step as one basis).
# 2. Distributions at equal step (issue 10): uniform U(-1, 1) entries have variance 1/3, so at the same lr their
#    expected step is a third of normal or +-1 ones; uniform with lr x 3 compares them at equal expected step.
set -euo pipefail
cd "$(dirname "$0")/.."
X="${PYTHON:-.venv/bin/python} -m rbdlib.experiments"
mkdir -p results/logs
R=rbd:distribution=rademacher
methods=()
for w in 128 512 2048; do
  methods+=("$R,width=$w" "$R,width=$w,compartments=layer,split_dim=true,lr=1.0" "$R,width=$w,compartments=layer"
            "$R,width=$w,compartments=25000")
done
$X fc-fmnist --epochs 5 --jobs 1 --nice 19 --out results/fc-fmnist-width --methods "${methods[@]}" \
   >> results/logs/fc-fmnist-width.log 2>&1 &
$X fc-fmnist --epochs 10 --jobs 1 --nice 19 --out results/fc-fmnist-distributions --methods \
   rbd:distribution=rademacher rbd:distribution=uniform rbd:distribution=uniform,lr=1.5 rbd:distribution=normal \
   >> results/logs/fc-fmnist-distributions.log 2>&1 &
wait
