"""Figures along the residual stream: cone index, spectra and the X→C→O→U→F→Y flow.

Each function takes computed results and returns a matplotlib Figure; it never computes a
measure and never saves (the pipeline decides file names).
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from bertgeom.plots.geometry_common import (
    DIVERGING,
    class_style,
    colour_map,
    integer_layers,
    masked,
    order_classes,
    pyplot,
    require,
    symmetric_limit,
    text_colour,
)

#: Stream points of a layer in the order the stream passes them (science.md §2).
POINT_NAMES: dict[str, str] = {
    "X": "layer input",
    "A": "attention rows",
    "Z": "head outputs",
    "C": "concatenated heads",
    "O": "output projection",
    "U": "residual + LayerNorm 1",
    "F": "MLP output",
    "Y": "layer output",
}
#: Transitions of ``flow`` in stream order.
TRANSITIONS: tuple[str, ...] = ("X->C", "C->O", "O->U", "U->F", "F->Y")
#: Panel titles of known ``flow`` metrics.
FLOW_METRICS: dict[str, str] = {
    "cone": "cone index (median over genomes)",
    "effective_rank": "effective rank",
    "stable_rank": "stable rank",
    "separability": "class separability (Fisher's criterion)",
}


def _by_point(table: pd.DataFrame, point: str, values: Sequence[str]) -> tuple[pd.DataFrame, bool]:
    """(class, layer) rows of one point: the whole layer (head -1) when the table has it,
    else the mean over heads; the flag says whether heads were averaged."""
    rows = table[table["point"] == point]
    whole = rows[rows["head"] < 0]
    if not whole.empty:
        return whole.groupby(["class", "layer"], as_index=False)[list(values)].mean(), False
    return rows.groupby(["class", "layer"], as_index=False)[list(values)].mean(), True


def _points(table: pd.DataFrame, wanted: Sequence[str]) -> list[str]:
    present = set(table["point"])
    return [p for p in wanted if p in present]


def _class_legend(fig: Any, classes: Sequence[str]) -> None:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], **class_style(c), label=c) for c in classes]
    fig.legend(handles=handles, loc="outside right upper", fontsize=8, title="class", frameon=False)


def _panel_title(point: str, averaged: bool) -> str:
    name = POINT_NAMES.get(point, "")
    return f"{point}: {name}" + ("\n(mean over heads)" if averaged else "")


def cone_curves(cone_summary: pd.DataFrame, cls_cone: pd.DataFrame | None = None) -> Any:
    """Normalised cone index over layers, one panel per stream point, one line per class.

    Lines are the per-class median over genomes (q50) with the q10-q90 band; for the per-head
    points Z and A both are means over heads of the per-head quantiles. The last panel is the
    cone index of the [CLS] vectors of each class (one value per class and layer).

    Parameters
    ----------
    cone_summary : tidy table with columns class, layer, point, head (-1 = whole layer), q10,
        q50, q90
    cls_cone : tidy table with columns class, layer, cone (None or empty: no [CLS] panel)

    Returns
    -------
    matplotlib Figure (one axes per stream point present, plus the [CLS] panel)
    """
    table = require(
        cone_summary, ("class", "layer", "point", "head", "q10", "q50", "q90"), "cone summary"
    )
    points = _points(table, [*POINT_NAMES, *sorted(set(table["point"]) - set(POINT_NAMES))])
    with_cls = cls_cone is not None and not cls_cone.empty
    if with_cls:
        require(cls_cone, ("class", "layer", "cone"), "[CLS] cone")
    n = len(points) + with_cls
    ncols = min(3, n)
    nrows = -(-n // ncols)
    plt = pyplot()
    fig, axes = plt.subplots(
        nrows,
        ncols,
        squeeze=False,
        sharey=True,
        figsize=(1.6 + 3.0 * ncols, 0.6 + 2.5 * nrows),
        layout="constrained",
    )
    classes = order_classes(table["class"].unique())
    for ax, point in zip(axes.flat, points, strict=False):
        rows, averaged = _by_point(table, point, ("q10", "q50", "q90"))
        for cls in classes:
            c = rows[rows["class"] == cls].sort_values("layer")
            if c.empty:
                continue
            style = class_style(cls)
            ax.fill_between(c["layer"], c["q10"], c["q90"], color=style["color"], alpha=0.12, lw=0)
            ax.plot(c["layer"], c["q50"], **style)
        ax.set_title(_panel_title(point, averaged), fontsize=10)
    if with_cls:
        ax = axes.flat[len(points)]
        for cls in order_classes(cls_cone["class"].unique()):
            c = cls_cone[cls_cone["class"] == cls].sort_values("layer")
            ax.plot(c["layer"], c["cone"], marker="o", ms=3, **class_style(cls))
        ax.set_title("[CLS] vectors of each class", fontsize=10)
        classes = order_classes([*classes, *cls_cone["class"].unique()])
    for ax in axes.flat[n:]:
        fig.delaxes(ax)
    for ax in axes.flat[:n]:
        ax.set_ylim(0, 1.02)
        integer_layers(ax)
        ax.set_xlabel("layer")
        ax.grid(alpha=0.3)
    if with_cls and cls_cone["layer"].max() == table["layer"].max() + 1:
        axes.flat[len(points)].set_xlabel("hidden state (0 = embeddings)")  # L + 1 states
    for ax in axes[:, 0]:
        ax.set_ylabel("cone index / n")
    _class_legend(fig, classes)
    fig.suptitle("cone index over layers (line: median over genomes; band: q10-q90)")
    return fig


def spectra_curves(spectra: pd.DataFrame, points: Sequence[str] = ("A", "Z", "C", "Y")) -> Any:
    """Effective and stable rank over layers per stream point, one line per class.

    Parameters
    ----------
    spectra : tidy table with columns layer, head (-1 = whole layer), point, class,
        effective_rank, stable_rank; per-head points are averaged over heads
    points : stream points to draw, one column each (those absent from the table are skipped)

    Returns
    -------
    matplotlib Figure: rows effective rank and stable rank, one column per point
    """
    measures = ("effective_rank", "stable_rank")
    table = require(spectra, ("layer", "head", "point", "class", *measures), "spectra")
    cols = _points(table, points)
    if not cols:
        cols = _points(table, sorted(set(table["point"])))
    classes = order_classes(table["class"].unique())
    plt = pyplot()
    fig, axes = plt.subplots(
        2,
        len(cols),
        squeeze=False,
        sharex=True,
        figsize=(1.6 + 2.9 * len(cols), 5.2),
        layout="constrained",
    )
    for j, point in enumerate(cols):
        rows, averaged = _by_point(table, point, measures)
        for i, measure in enumerate(measures):
            ax = axes[i, j]
            for cls in classes:
                c = rows[rows["class"] == cls].sort_values("layer")
                if not c.empty:
                    ax.plot(c["layer"], c[measure], marker="o", ms=2.5, **class_style(cls))
            ax.grid(alpha=0.3)
            integer_layers(ax)
            if i == 0:
                ax.set_title(_panel_title(point, averaged), fontsize=10)
            else:
                ax.set_xlabel("layer")
    axes[0, 0].set_ylabel("effective rank")
    axes[1, 0].set_ylabel("stable rank")
    _class_legend(fig, classes)
    fig.suptitle("spectra over layers")
    return fig


def _transitions(flow: pd.DataFrame) -> pd.DataFrame:
    if "transition" in flow.columns:
        return flow
    require(flow, ("source", "target"), "flow")
    return flow.assign(transition=flow["source"].astype(str) + "->" + flow["target"].astype(str))


def flow_figure(flow: pd.DataFrame) -> Any:
    """Change of each per-layer summary between consecutive stream points (X→C→O→U→F→Y).

    One heat map per metric, transition x layer, coloured by ``delta = after - before`` on a
    diverging scale centred at 0 (red: the step increases the metric); values are written in
    when there are at most 16 layers. Missing (metric, transition) pairs stay grey.

    Parameters
    ----------
    flow : tidy table with columns metric, layer, transition (e.g. "X->C"; or source and
        target), delta

    Returns
    -------
    matplotlib Figure (one axes per metric, plus their colour bars)
    """
    table = _transitions(require(flow, ("metric", "layer", "delta"), "flow"))
    metrics = list(dict.fromkeys(table["metric"]))
    layers = list(range(int(table["layer"].min()), int(table["layer"].max()) + 1))
    grids = [_flow_grid(table[table["metric"] == m], layers) for m in metrics]
    plt = pyplot()
    fig, axes = plt.subplots(
        len(metrics),
        1,
        squeeze=False,
        layout="constrained",
        figsize=(2.6 + 0.55 * len(layers), 0.5 + sum(1.0 + 0.3 * len(o) for o, _ in grids)),
        height_ratios=[1.0 + 0.3 * len(order) for order, _ in grids],
    )
    for ax, metric, (order, values) in zip(axes[:, 0], metrics, grids, strict=True):
        limit = symmetric_limit(values)
        cmap = colour_map(DIVERGING)
        image = ax.imshow(
            masked(values), cmap=cmap, vmin=-limit, vmax=limit, aspect="auto",
            interpolation="nearest",
        )  # fmt: skip
        if len(layers) <= 16:
            _write_values(ax, values, limit, cmap)
        ax.set_yticks(range(len(order)), [t.replace("->", " → ") for t in order])
        ax.set_xticks(range(len(layers)), [str(x) for x in layers])
        ax.set_xlabel("layer")
        ax.set_title(FLOW_METRICS.get(metric, metric.replace("_", " ")), fontsize=10)
        fig.colorbar(image, ax=ax, label="Δ = after − before", shrink=0.9, aspect=10)
    # wrapped to the figure's width (a few layers make a narrow figure)
    width = max(24, int(fig.get_figwidth() * 9))
    title = "change between consecutive stream points (red: the step increases it)"
    fig.suptitle(textwrap.fill(title, width))
    return fig


def _flow_grid(rows: pd.DataFrame, layers: list[int]) -> tuple[list[str], np.ndarray]:
    """(transitions in stream order, (transition, layer) deltas) of one metric."""
    present = list(dict.fromkeys(rows["transition"]))
    order = [t for t in TRANSITIONS if t in present] + [t for t in present if t not in TRANSITIONS]
    delta = rows.pivot_table(index="transition", columns="layer", values="delta", aggfunc="mean")
    return order, delta.reindex(index=order, columns=layers).to_numpy(dtype=np.float64)


def _write_values(ax: Any, values: np.ndarray, limit: float, cmap: Any) -> None:
    """Write each finite cell value, with decimals suited to the scale (``limit``)."""
    decimals = min(4, max(0, 1 - int(np.floor(np.log10(limit)))))
    for (i, j), v in np.ndenumerate(values):
        if np.isfinite(v):
            colour = text_colour(cmap(0.5 + 0.5 * v / limit))
            ax.text(j, i, f"{v:+.{decimals}f}", ha="center", va="center", fontsize=7,
                    color=colour)  # fmt: skip
