#!/usr/bin/env bash
# The commands that produced results/ on the 2-core CPU machine (budgets stated in results/README.md).
set -euo pipefail
X="${PYTHON:-.venv/bin/python} -m rbdlib.experiments"
$X fc-fmnist --methods sgd fpd rbd --epochs 2 --out results/fc-fmnist
$X cnn-fmnist --methods sgd fpd rbd --epochs 1 --out results/cnn-fmnist
$X fc-fmnist --methods nes --epochs 1 --out results/fc-fmnist-nes
$X fc-fmnist --methods rbd:distribution=normal rbd:distribution=uniform rbd:distribution=rademacher \
   --epochs 1 --out results/fc-fmnist-distributions
$X fc-fmnist --methods rbd:compartments=network rbd:compartments=layer rbd:compartments=layer,split_dim=true \
   rbd:compartments=25000 rbd:compartments=25000,split_dim=true --epochs 1 --out results/fc-fmnist-compartments
