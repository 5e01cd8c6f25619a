"""Figures of the compartment comparison (issue 14) from the results shipped with the package.

Run from the repository root after ``python -m rbdlib.results refresh`` (which copies results/*/results.json
into the package)::

    .venv/bin/python results/compartments_plots.py

writes ``results/fc-fmnist-width/accuracy_vs_D.png``: validation accuracy after the sweep's epochs against the
number of parameters D, one basis against compartments (``rbdlib.viz.plot_accuracy_vs_params``; runs that
have not reached their target epochs are absent). Notebook 05 draws the same figure.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import rbdlib.results  # noqa: E402
import rbdlib.viz  # noqa: E402

if __name__ == "__main__":
    fig = rbdlib.viz.plot_accuracy_vs_params(rbdlib.results.summary("fc-fmnist-width"),
                                             title="FC on Fashion-MNIST, d = 250, ±1 bases")
    fig.savefig("results/fc-fmnist-width/accuracy_vs_D.png", dpi=110)
    print("wrote results/fc-fmnist-width/accuracy_vs_D.png")
