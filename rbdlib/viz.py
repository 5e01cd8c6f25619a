"""Plots and widgets shared by the notebooks (matplotlib and ipywidgets only).

Each function draws one figure and returns the matplotlib ``Figure`` (or, for widgets, the widget
when a front end can show it). Widgets fall back to the static figure for their default values
when no widget front end is attached (plain scripts, CI, ``nbclient`` executions).
Notebook developers add their own functions below; keep each one short and give it a docstring.
"""

from __future__ import annotations

import io
import re
import sys

import matplotlib.pyplot as plt
import numpy as np

from . import _files, results

# One colour per method in every figure of every notebook, so a method is recognised at a glance.
METHOD_COLORS = {"sgd": "tab:blue", "rbd": "tab:orange", "fpd": "tab:green", "nes": "tab:red"}


def method_color(label: str) -> str:
    """The colour of a method, from a label that starts with its name, such as ``"rbd:distribution=rademacher"``,
    ``"FPD (d = 1)"`` or ``"SGD, lr 0.25"``; grey for anything else.

    >>> method_color("rbd:distribution=rademacher"), method_color("SGD, lr 0.25"), method_color("other")
    ('tab:orange', 'tab:blue', 'tab:gray')
    """
    head = re.match(r"[a-z]*", label.strip().lower()).group()   # the leading word: "SGD, lr 0.25" -> "sgd"
    return METHOD_COLORS.get(head, "tab:gray")


def mean_band(ax, x, mean, sd, **style):
    """A mean line, in a band of ± one sd when ``sd`` is given (several seeds)."""
    line, = ax.plot(x, mean, **style)
    if sd is not None:
        mean, sd = np.asarray(mean), np.asarray(sd)
        ax.fill_between(x, mean - sd, mean + sd, color=line.get_color(), alpha=0.2)


def save_png(fig, path) -> None:
    """Write ``fig`` to ``path`` as a PNG (through rbdlib's guarded file writes: no links followed) and close it."""
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    _files.write(path, buffer.getvalue())


# ---------------------------------------------------------------- 01 welcome, 02 random subspaces
def plot_accuracy(histories: dict, ax=None, title: str = "validation accuracy", colors: dict | None = None):
    """Validation accuracy against optimizer steps, one line per label. A value is one ``rbdlib.train.History``
    or a list of them (seeds of one configuration): then the line is their mean, in a band of ± one sd.
    A line takes ``colors[label]`` if given, else its method's colour (``method_color``) when the label starts
    with a method's name, else matplotlib's next colour.

    >>> from rbdlib.train import History
    >>> runs = [History([{"step": 1, "val_acc": a}, {"step": 2, "val_acc": a + 0.2}]) for a in (0.5, 0.6)]
    >>> fig = plot_accuracy({"SGD": runs[0], "RBD": runs})
    >>> [line.get_color() for line in fig.axes[0].lines]
    ['tab:blue', 'tab:orange']
    """
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(6, 3.5))
    for label, runs in histories.items():
        runs = list(runs) if isinstance(runs, (list, tuple)) else [runs]
        acc = np.array([[100 * a for a in h["val_acc"]] for h in runs])
        color = (colors or {}).get(label) or (method_color(label) if method_color(label) != "tab:gray" else None)
        mean_band(ax, runs[0]["step"], acc.mean(0), acc.std(0, ddof=1) if len(runs) > 1 else None,
                   marker=".", color=color, label=label)
    ax.set(xlabel="optimizer steps", ylabel="validation accuracy (%)", title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def plot_image_rows(rows: dict, vmin: float = 0.0, vmax: float = 1.0, title: str = ""):
    """One row of grey images per label: ``rows[label]`` is an ``N x 1 x H x W`` tensor (or array). All
    panels share one colour scale, ``vmin`` to ``vmax``, so a brightness shift shows as a shift in grey.

    >>> import torch
    >>> fig = plot_image_rows({"a": torch.zeros(3, 1, 4, 4), "b": torch.ones(3, 1, 4, 4)})
    >>> len(fig.axes)
    6
    """
    cols = max(len(images) for images in rows.values())
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.3 * cols + 1.6, 1.35 * len(rows) + 0.4), squeeze=False)
    for ax_row, (label, images) in zip(axes, rows.items()):
        for ax, image in zip(ax_row, images):
            ax.imshow(np.asarray(image)[0], cmap="gray", vmin=vmin, vmax=vmax)
        for ax in ax_row:
            ax.set_xticks([]), ax.set_yticks([])
        ax_row[0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plane_basis(azimuth: float, elevation: float, dim: int = 2) -> np.ndarray:
    """A 3 x ``dim`` matrix with orthonormal columns spanning the plane (dim=2) or a line in it (dim=1)
    whose normal points at (azimuth, elevation), in degrees.

    >>> P = plane_basis(30, 60)
    >>> np.allclose(P.T @ P, np.eye(2))
    True
    """
    a, e = np.radians(azimuth), np.radians(elevation)
    u = np.array([-np.sin(a), np.cos(a), 0.0])                            # horizontal, normal to n
    v = np.array([-np.sin(e) * np.cos(a), -np.sin(e) * np.sin(a), np.cos(e)])  # n x u
    return np.stack([u, v], axis=1)[:, :dim]


def descend(grad, theta0, P=None, lr: float = 0.1, steps: int = 30) -> np.ndarray:
    """The path (steps + 1, D) of theta <- theta - lr P P^T grad(theta); P=None: plain steepest descent."""
    path = [np.asarray(theta0, dtype=float)]
    for _ in range(steps):
        g = grad(path[-1])
        path.append(path[-1] - lr * (g if P is None else P @ (P.T @ g)))
    return np.array(path)


def _draw_plane(ax, theta, P, half: float = 1.5, color: str = "tab:green"):
    s = np.linspace(-half, half, 2)
    a, b = np.meshgrid(s, s)
    Q = P if P.shape[1] == 2 else np.concatenate([P, np.zeros((3, 1))], axis=1)
    pts = theta[:, None, None] + Q[:, :1, None] * a + Q[:, 1:2, None] * b
    if P.shape[1] == 2:
        ax.plot_surface(*pts, color=color, alpha=0.2, linewidth=0)
    else:
        ax.plot(*(theta[:, None] + P[:, :1] * s * 2), color=color, lw=3, alpha=0.5)


def plot_projected_gradient(theta, g, P, ax=None, title: str = "one step, full and in the subspace",
                            length: float = 1.5):
    """The classic picture in 3-D: black arrow = -gradient, orange arrow = -P P^T g (the projected
    gradient), green plane (or line) = the random subspace through theta spanned by P's columns.
    Both arrows are shrunk by the same factor so that -g has length ``length``."""
    theta, g, P = (np.asarray(x, dtype=float) for x in (theta, g, P))
    g = g * (length / np.linalg.norm(g))
    if ax is None:
        fig = plt.figure(figsize=(5.5, 5))
        ax = fig.add_subplot(projection="3d")
    _draw_plane(ax, theta, P)
    step = -P @ (P.T @ g)
    ax.quiver(*theta, *-g, color="black", lw=2, arrow_length_ratio=0.1, label="$-g$")
    ax.quiver(*theta, *step, color="tab:orange", lw=2, arrow_length_ratio=0.1, label="$-PP^\\top g$")
    ax.plot(*np.stack([theta - g, theta + step]).T, ":", color="gray")  # the drop from -g onto the plane
    ax.scatter(*theta, color="black", s=20)
    ax.set_aspect("equal")
    ax.set(xlabel="$\\theta_1$", ylabel="$\\theta_2$", zlabel="$\\theta_3$", title=title)
    ax.legend(loc="upper left")
    return ax.figure


def plot_descent_paths(paths: dict, loss, theta0=None, P=None, title: str = "descent paths",
                       minimum=(0, 0, 0)):
    """Left: paths (label -> (T, 3) array) in 3-D, with the subspace P through theta0 if given.
    Right: loss(theta) along each path, log scale. The red star marks the minimum, at ``minimum``; the left
    panel's legend names it with the paths."""
    fig = plt.figure(figsize=(11, 4.5))
    ax = fig.add_subplot(1, 2, 1, projection="3d")
    if P is not None:
        _draw_plane(ax, np.asarray(theta0, dtype=float), np.asarray(P, dtype=float), half=2.0)
    right = fig.add_subplot(1, 2, 2)
    for label, path in paths.items():
        line, = ax.plot(*np.asarray(path).T, marker=".", ms=3, label=label)
        right.semilogy([float(loss(p)) for p in path], color=line.get_color(), label=label)
    ax.scatter(*minimum, color="red", marker="*", s=80, label="minimum")
    ax.legend(fontsize=8, loc="upper left")
    ax.set(xlabel="$\\theta_1$", ylabel="$\\theta_2$", zlabel="$\\theta_3$", title=title)
    right.set(xlabel="step", ylabel="loss", title="loss along the path")
    right.grid(alpha=0.3)
    right.legend()
    fig.tight_layout()
    return fig


def plot_cosines(sizes, cosines, title: str = "random directions are nearly orthogonal"):
    """Mean |cos| between random directions against the dimension D (log-log), with sqrt(2 / (pi D)),
    the expectation for Gaussian directions. ``cosines[i]`` holds the |cos| samples for ``sizes[i]``."""
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    sizes = np.asarray(sizes, dtype=float)
    ax.loglog(sizes, [np.mean(c) for c in cosines], "o", label="measured mean $|\\cos|$")
    ax.loglog(sizes, np.sqrt(2 / (np.pi * sizes)), "--", color="gray", label="$\\sqrt{2/(\\pi D)}$")
    ax.set(xlabel="dimension D", ylabel="mean $|\\cos|$", title=title)
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    return fig


def _explorer_figure(loss, grad, theta0, lr, steps, azimuth, elevation, dim):
    P = plane_basis(azimuth, elevation, dim)
    paths = {"steepest descent": descend(grad, theta0, None, lr, steps),
             f"in the subspace (d={dim})": descend(grad, theta0, P, lr, steps)}
    return plot_descent_paths(paths, loss, theta0, P, title=f"plane normal at ({azimuth}°, {elevation}°)")


def subspace_explorer(loss, grad, theta0, lr: float = 0.08, steps: int = 40,
                      azimuth: float = 30, elevation: float = 60, dim: int = 2):
    """Turn the random plane through theta0 (sliders for its normal's azimuth and elevation), pick d = 1
    (a line in that plane) or 2, and watch constrained descent against full steepest descent.

    In a Jupyter kernel it shows the sliders above the figure for the given values, as an ordinary PNG
    output (so the notebook keeps a static figure on GitHub and in CI) that each slider move replaces in
    place; it returns None. Without ipywidgets or outside Jupyter it returns the static figure.
    """
    args = (loss, grad, np.asarray(theta0, dtype=float), lr, steps)
    if "ipykernel" in sys.modules:
        try:
            import ipywidgets as w
            from IPython.display import display
            controls = dict(azimuth=w.IntSlider(azimuth, 0, 360, 5, description="azimuth"),
                            elevation=w.IntSlider(elevation, -90, 90, 5, description="elevation"),
                            dim=w.ToggleButtons(options=[1, 2], value=dim, description="d"))
            display(w.HBox(list(controls.values())))
            fig = _explorer_figure(*args, azimuth, elevation, dim)
            handle = display(fig, display_id=True)
            plt.close(fig)

            def redraw(_change):
                fig = _explorer_figure(*args, **{k: c.value for k, c in controls.items()})
                handle.update(fig)
                plt.close(fig)

            for control in controls.values():
                control.observe(redraw, names="value")
            return None
        except ImportError:  # no ipywidgets: fall through to the static figure
            pass
    return _explorer_figure(*args, azimuth, elevation, dim)


# ---------------------------------------------------------------- 05 compartments
def plot_compartment_layout(layouts: dict, params: dict, title: str = "which parameters share a basis"):
    """One row per layout, one colour per compartment; every tensor is drawn at equal width.

    ``layouts`` maps a label to an optimizer's ``layout`` (lists of ``(param_index, start, stop)``
    segments); ``params`` maps parameter names to sizes, in the optimizer's order. Equal widths keep a
    10-element bias as visible as a 100,352-element weight; the labels give the true sizes.

    >>> fig = plot_compartment_layout({"tensor": [[(0, 0, 6)], [(1, 0, 2)]]}, {"w": 6, "b": 2})
    """
    from matplotlib.patches import Rectangle

    sizes = list(params.values())
    fig, ax = plt.subplots(figsize=(9, 0.55 * len(layouts) + 1.2))
    colors = plt.get_cmap("tab20").colors
    for row, layout in enumerate(layouts.values()):
        for k, compartment in enumerate(layout):
            for i, a, b in compartment:
                ax.add_patch(Rectangle((i + a / sizes[i], -row - 0.4), (b - a) / sizes[i], 0.8,
                                       facecolor=colors[k % 20], edgecolor="white", linewidth=0.5))
        ax.text(len(sizes) + 0.05, -row, f"{len(layout)} compartment{'s' * (len(layout) > 1)}", va="center")
    ax.set(xlim=(0, len(sizes)), ylim=(-len(layouts) + 0.5, 0.5), title=title)
    ax.set_yticks([-r for r in range(len(layouts))], list(layouts))
    ax.set_xticks([i + 0.5 for i in range(len(sizes))], [f"{n}\n{s:,}" for n, s in params.items()])
    for i in range(1, len(sizes)):
        ax.axvline(i, color="black", linewidth=1)
    ax.tick_params(length=0)
    fig.tight_layout()
    return fig


def plot_compartment_cosines(labels, measured, predicted, coords,
                             title: str = "how much of the gradient one step captures"):
    """Bars of the measured cosine between the RBD step and the gradient, with the prediction as a dot.

    >>> fig = plot_compartment_cosines(["a", "b"], [0.05, 0.1], [0.049, 0.11], [250, 500])
    """
    fig, ax = plt.subplots(figsize=(8, 3.5))
    x = np.arange(len(labels))
    ax.bar(x, measured, color="tab:blue", alpha=0.8, label="measured")
    ax.plot(x, predicted, "o", color="black", label="predicted (eq. 2)")
    for xi, m, n in zip(x, measured, coords):
        ax.text(xi, m, f"{n:,} coords", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x, labels, rotation=20, ha="right")
    ax.set(ylabel="cos(step, gradient)", title=title)
    ax.legend()
    fig.tight_layout()
    return fig


# One colour per compartment scheme (one basis keeps RBD's); equal-cost schemes solid, d shared out dashed.
SCHEME_COLORS = {"one basis": METHOD_COLORS["rbd"], "layer, d shared out": "tab:purple",
                 "tensor, d shared out": "teal", "25,000, d shared out": "tab:olive", "layer, d each": "tab:brown",
                 "tensor, d each": "tab:cyan", "25,000, d each": "tab:pink"}


def compartment_scheme(method: str) -> tuple[str, str | None]:
    """(scheme, learning rate or None) of an ``rbdlib-experiment`` method string; width and distribution are
    ignored, so the same scheme at different widths shares a label.

    >>> compartment_scheme("rbd:distribution=rademacher,width=512,compartments=layer,split_dim=true,lr=1.0")
    ('layer, d shared out', '1.0')
    >>> compartment_scheme("rbd:distribution=rademacher"), compartment_scheme("rbd:compartments=25000")
    (('one basis', None), ('25,000, d each', None))
    """
    options = dict(o.split("=", 1) for o in method.partition(":")[2].split(",") if "=" in o)
    cut = options.get("compartments", "network")
    if cut == "network":
        return "one basis", options.get("lr")
    cut = f"{int(cut):,}" if cut.isdigit() else cut
    shared = options.get("split_dim", "false").lower() == "true"
    return f"{cut}, d {'shared out' if shared else 'each'}", options.get("lr")


def scheme_style(scheme: str) -> dict:
    """Line colour and style of a compartment scheme (as ``compartment_scheme`` names it), for ``ax.plot``.

    >>> scheme_style("one basis"), scheme_style("layer, d shared out")
    ({'color': 'tab:orange', 'ls': '-'}, {'color': 'tab:purple', 'ls': '--'})
    """
    return dict(color=SCHEME_COLORS.get(scheme, "tab:gray"), ls="--" if "shared out" in scheme else "-")


def plot_accuracy_vs_params(rows: list[dict], title: str = "accuracy as the network widens"):
    """Validation accuracy (%) against the number of parameters D (log x), one line per compartment scheme,
    from ``rbdlib.results.summary`` rows. Only runs that reached their target epochs are drawn: a run still
    training (or never started) is simply absent, so the figure works with whatever runs exist.

    >>> rows = [dict(method="rbd:width=128", D=101770, mean=69.3, epoch=5, target=5, status="complete"),
    ...         dict(method="rbd:width=512,compartments=layer", D=407050, mean=56.4, epoch=2, target=5,
    ...              status="unfinished")]
    >>> fig = plot_accuracy_vs_params(rows)
    >>> [line.get_label() for line in fig.axes[0].lines]
    ['one basis']
    """
    done: dict[str, list[tuple[int, float]]] = {}
    for row in rows:
        if row["status"] == "complete" and row["epoch"] == row["target"]:
            scheme, lr = compartment_scheme(row["method"])
            label = scheme + (f" (lr {lr})" if lr else "")
            done.setdefault(label, []).append((row["D"], row["mean"]))
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for label, points in done.items():
        points.sort()
        ax.plot(*zip(*points), marker="o", label=label, **scheme_style(label.split(" (lr")[0]))
    epochs = sorted({row["target"] for row in rows})
    sizes = sorted({row["D"] for row in rows})
    ax.set_xscale("log")
    ax.set_xticks(sizes, [f"{D:,}" for D in sizes])
    ax.minorticks_off()
    if sizes:
        ax.set_xlim(sizes[0] / 1.4, sizes[-1] * 1.4)
    ax.set(xlabel="parameters D", ylabel="validation accuracy (%)",
           title=f"{title} ({', '.join(map(str, epochs))} epochs)" if epochs else title)
    ax.grid(alpha=0.3, which="both")
    if done:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_scheme_curves(runs: list[dict], title: str = "validation accuracy, mean ± sd over seeds"):
    """Accuracy (%) against epochs for ``rbdlib.results.runs(name)`` (or a selection), coloured by compartment
    scheme: every run as a thin line as far as it got, and per method the mean over its seeds, with a ± sd
    band, over the epochs all of them reached.

    >>> run = lambda seed, accs: dict(method="rbd:distribution=rademacher", seed=seed,
    ...                               records=[dict(epoch=e, val_acc=a) for e, a in enumerate(accs)])
    >>> fig = plot_scheme_curves([run(0, [0.05, 0.57, 0.62]), run(1, [0.06, 0.56])])
    >>> [line.get_label() for line in fig.axes[0].lines if not line.get_label().startswith("_")]
    ['one basis (2 seeds)']
    """
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for method, (epochs, mean, sd) in results.curves(runs).items():
        group = [r for r in runs if r["method"] == method and r["records"]]
        scheme, lr = compartment_scheme(method)
        style = scheme_style(scheme)
        for r in group:
            ax.plot(*results.curve(r), color=style["color"], lw=0.6, alpha=0.5)
        mean_band(ax, epochs, mean, sd, lw=2, label=f"{scheme}{f' (lr {lr})' if lr else ''} ({len(group)} seed"
                   f"{'s' * (len(group) > 1)})", **style)
    ax.set(xlabel="epoch (0 = initial weights)", ylabel="validation accuracy (%)", title=title)
    ax.grid(alpha=0.3)
    if runs:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- 03 fixed projection, 04 re-drawn bases
def plot_accuracy_vs_dim(dims, accuracies, baseline, fraction: float = 0.9,
                         title: str = "accuracy against subspace dimension"):
    """Validation accuracy of subspace training against d (log x axis), with the full-parameter
    ``baseline`` and the ``fraction`` x baseline line whose first crossing defines d_int90 (Li et al.).
    ``accuracies[i]`` (for ``dims[i]``) and ``baseline`` are fractions, or lists of them over seeds: then
    the mean is drawn, with ± one sd as error bars.

    >>> fig = plot_accuracy_vs_dim([10, 100], [[0.4, 0.42], [0.8, 0.79]], baseline=[0.85, 0.86])
    """
    acc = [100 * np.atleast_1d(a) for a in accuracies]
    base = 100 * np.mean(baseline)
    sd = [a.std(ddof=1) if a.size > 1 else 0.0 for a in acc]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.errorbar(dims, [a.mean() for a in acc], yerr=sd, fmt="o-", capsize=3, color=method_color("fpd"),
                label="fixed subspace, only $c$ trained")
    ax.set_xscale("log")
    ax.axhline(base, color="black", lw=1, label="all $D$ parameters trained")
    ax.axhline(fraction * base, color="tab:red", ls="--", lw=1,
               label=f"{fraction:.0%} of that (defines $d_{{int{round(100 * fraction)}}}$)")
    ax.set(xlabel="subspace dimension d", ylabel="validation accuracy (%)", title=title)
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    return fig


def plot_cosine_vs_dim(cosines: dict, size: int, title: str = "how much of the gradient one step keeps"):
    """cos(RBD step, gradient) against d (log-log): the mean and the range over the recorded steps for
    each d (``cosines`` maps d to a list of ``opt.last_cosine`` values), and sqrt(d / size).

    >>> fig = plot_cosine_vs_dim({10: [0.01, 0.012], 100: [0.03, 0.032]}, size=100_000)
    """
    dims = np.array(sorted(cosines), dtype=float)
    values = [np.asarray(cosines[d]) for d in sorted(cosines)]
    mean = np.array([v.mean() for v in values])
    spread = np.array([[m - v.min() for m, v in zip(mean, values)], [v.max() - m for m, v in zip(mean, values)]])
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    ax.errorbar(dims, mean, yerr=spread, fmt="o", capsize=3, label="measured (mean, min-max over steps)")
    ax.loglog(dims, np.sqrt(dims / size), "--", color="gray", label="$\\sqrt{d/D}$")
    ax.set(xlabel="directions d", ylabel="cos(step, gradient)", title=title)
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    return fig


# ---------------------------------------------------------------- 07 shared seeds
def plot_communication(comms: list, title: str = "bytes each worker receives per step"):
    """Bytes per step against the number of workers W (log-log), one line per scheme, and DDP's 4 D.

    ``comms`` is a list of ``rbdlib.distributed.communication(...)`` dicts (any schemes and world sizes);
    the DDP line is their ``ddp_bytes_per_step``.

    >>> fig = plot_communication([{"scheme": "shared", "world_size": w, "bytes_per_step": 1020,
    ...                            "ddp_bytes_per_step": 407080} for w in (2, 4)])
    """
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    for scheme in sorted({c["scheme"] for c in comms}):
        rows = sorted((c["world_size"], c["bytes_per_step"]) for c in comms if c["scheme"] == scheme)
        ax.plot(*zip(*rows), "o-" if scheme == "shared" else "s:", color=method_color("rbd"),
                label=f"RBD, {scheme} bases")
    workers = sorted({c["world_size"] for c in comms})
    ax.plot(workers, [comms[0]["ddp_bytes_per_step"]] * len(workers), "--", color=method_color("sgd"),
            label="SGD with DDP's gradient all-reduce, 4 D")
    ax.set(xscale="log", yscale="log", xlabel="workers W", ylabel="bytes per step", title=title)
    ax.set_xticks(workers, [str(w) for w in workers])
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, fontsize=8)   # below the axes, off the lines
    fig.tight_layout()
    return fig
