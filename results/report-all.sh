#!/usr/bin/env bash
# Rewrite every results folder's table.md, results.json, results.csv and accuracy.png from its runs as far as
# they got (training nothing), redraw the compartment figure, and copy the committed result sets into the
# package (rbdlib/_results, which notebook 08 and tests/test_results.py read). Run it after stopping the runs
# (kill -- -$(cat results/logs/run-all.pid)), then commit results/ and rbdlib/_results together.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
for runs in results/*/_runs; do
  folder="${runs%/_runs}"
  name="${folder#results/}"
  config="${name%%-fmnist*}-fmnist"   # fc-fmnist-width -> fc-fmnist, cnn-fmnist-no-augment -> cnn-fmnist
  "$PY" -m rbdlib.experiments "$config" --out "$folder" --report --methods sgd > /dev/null
  echo "reported $folder ($config)"
done
"$PY" -m rbdlib.results refresh
"$PY" results/compartments_plots.py
