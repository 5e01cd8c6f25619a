#!/usr/bin/env bash
# Table 1's Fashion-MNIST rows at the paper's budget (100 epochs, batch 32, augmentation, paper learning rates,
# d = 250, 10,000 validation images). Each command resumes its unfinished runs from their last epoch
# (results/<folder>/_runs/*/checkpoint.pt), so run this script again in every session until all are complete.
# Every run is a worker process with one thread at a low priority (--nice), so interactive work keeps the CPU.
# Start it through results/run-all.sh: Linux's autogroup scheduler shares the CPU equally between sessions and
# applies niceness only inside one, so the scripts' priorities hold only when they run in one session. The +-1 FC
# runs (about half an hour of a core each) go first (nice 10), the long ones (normal bases, the CNN: 2-3 h of a
# core each) beside them at nice 14, and the CNN ablation last (nice 19).
set -euo pipefail
cd "$(dirname "$0")/.."
X="${PYTHON:-.venv/bin/python} -m rbdlib.experiments"
mkdir -p results/logs
# FC-Fashion-MNIST: SGD and RBD with +-1 bases (our fast variant), 3 seeds each
$X fc-fmnist --methods sgd rbd:distribution=rademacher --seeds 0 1 2 --jobs 2 --nice 10 \
   --out results/fc-fmnist >> results/logs/fc-fmnist-a.log 2>&1 &
# FC-Fashion-MNIST as the paper ran it: NES, RBD and FPD with normal bases, 1 seed. Nice 10: at 108 CPU s per
# epoch these two are the longest single runs, so they go first (the others fill the CPU they leave)
$X fc-fmnist --methods nes rbd fpd --seeds 0 --jobs 2 --nice 10 \
   --out results/fc-fmnist >> results/logs/fc-fmnist-b.log 2>&1 &
# CNN-Fashion-MNIST: SGD, and RBD and FPD with +-1 bases (normal ones would take ~3 h each here), 1 seed
$X cnn-fmnist --methods sgd rbd:distribution=rademacher fpd:distribution=rademacher --seeds 0 --jobs 3 --nice 14 \
   --out results/cnn-fmnist >> results/logs/cnn-fmnist.log 2>&1 &
# Ablation for the rows more than 1.5 points from the paper: SGD without the augmentation
$X fc-fmnist --methods sgd --seeds 0 --no-augment --jobs 1 --nice 19 \
   --out results/fc-fmnist-no-augment >> results/logs/fc-fmnist-no-augment.log 2>&1 &
# The same ablation for RBD (+-1 bases), whose row ends further from the paper than SGD's
$X fc-fmnist --methods rbd:distribution=rademacher --seeds 0 --no-augment --jobs 1 --nice 19 \
   --out results/fc-fmnist-no-augment >> results/logs/fc-fmnist-no-augment-rbd.log 2>&1 &
# ... and SGD with the pad-and-crop alone (no brightness shift): which part of the augmentation costs the points
$X fc-fmnist --methods sgd --seeds 0 --augment crop-only --jobs 1 --nice 19 \
   --out results/fc-fmnist-crop-only >> results/logs/fc-fmnist-crop-only.log 2>&1 &
# FPD's ablations, with +-1 bases (a seventh of the cost; plain +-1 FPD with the augmentation is their control):
# the reference code's FPD, whose coordinates are never reset (its gradient is taken at theta + P c_prev), and FPD
# without the augmentation
$X fc-fmnist --methods fpd:distribution=rademacher fpd:distribution=rademacher,reset_coords=false --seeds 0 \
   --jobs 2 --nice 10 --out results/fc-fmnist-fpd-ablations >> results/logs/fc-fmnist-fpd-ablations.log 2>&1 &
$X fc-fmnist --methods fpd:distribution=rademacher --seeds 0 --no-augment --jobs 1 --nice 10 \
   --out results/fc-fmnist-no-augment >> results/logs/fc-fmnist-no-augment-fpd.log 2>&1 &
# The CNN's RBD and FPD (+-1) without the augmentation: the FC rows all come within 1.2 points of the paper without it
$X cnn-fmnist --methods rbd:distribution=rademacher fpd:distribution=rademacher --seeds 0 --no-augment --jobs 2 \
   --nice 19 --out results/cnn-fmnist-no-augment >> results/logs/cnn-fmnist-no-augment.log 2>&1 &
wait
