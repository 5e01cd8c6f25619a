#!/usr/bin/env bash
# The commands that produced results/ on the 2-core CPU machine (budgets in results/README.md).
set -euo pipefail
X="${PYTHON:-.venv/bin/python} -m rbdlib.experiments"
$X fc-fmnist --methods sgd fpd rbd --epochs 5 --out results/fc-fmnist
$X fc-fmnist --methods nes --epochs 1 --out results/fc-fmnist-nes
$X fc-fmnist --methods rbd:distribution=rademacher rbd:distribution=uniform rbd:distribution=normal \
   --epochs 1 --out results/fc-fmnist-distributions
$X fc-fmnist --distribution rademacher --methods rbd:compartments=network rbd:compartments=layer \
   rbd:compartments=layer,split_dim=true rbd:compartments=25000 rbd:compartments=25000,split_dim=true \
   --epochs 1 --out results/fc-fmnist-compartments
$X cnn-fmnist --methods sgd fpd rbd --epochs 1 --out results/cnn-fmnist
