"""Per-head figures: gate labels and scores, entropy and metastable k, directionality.

Each function takes computed results and returns a matplotlib Figure; it never computes a
measure and never saves (the pipeline decides file names).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from bertgeom.errors import ArtifactError
from bertgeom.plots.geometry_common import (
    ALL,
    GATE_NAMES,
    LABEL_COLOURS,
    SEQUENTIAL,
    cell_ticks,
    colour_map,
    grid,
    integer_layers,
    layer_heads,
    masked,
    pyplot,
    require,
    select_class,
    text_colour,
)

_ABBREVIATIONS = dict(zip(GATE_NAMES, ("cl", "op", "bw", "fw", "dir", "ins", "clu"), strict=True))


def _who(class_name: str) -> str:
    return "all genomes" if class_name == ALL else class_name


def _dominant(table: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(score, gate) per row: the labelled gate's score, or the highest score for mixed heads."""
    gates = [g for g in GATE_NAMES if g in table.columns]
    scores = table[gates].to_numpy(dtype=np.float64) if gates else np.zeros((len(table), 0))
    best = np.full(len(table), np.nan)
    which = np.full(len(table), "", dtype=object)
    for i, (label, row) in enumerate(zip(table["label"], scores, strict=True)):
        if label in gates:
            best[i], which[i] = row[gates.index(label)], label
        elif np.isfinite(row).any():
            j = int(np.nanargmax(row))
            best[i], which[i] = row[j], gates[j]
    return best, which


def _cell_text(score: float, gate: str, label: str) -> str:
    if not np.isfinite(score):
        return ""
    return f"{score:.2f}" if gate == label else f"{_ABBREVIATIONS[gate]} {score:.2f}"


def gate_grid(gates: pd.DataFrame, class_name: str = ALL) -> Any:
    """Layer x head grid coloured by each head's gate label, its dominant score written in.

    A labelled head shows its gate's score; a "mixed" head (no score above its threshold)
    shows its highest score with the gate abbreviated (cl, op, bw, fw, dir, ins, clu).

    Parameters
    ----------
    gates : tidy table with columns layer, head, class, label and the seven gate scores
    class_name : the class to draw, "all" (default) for all genomes

    Returns
    -------
    matplotlib Figure
    """
    from matplotlib.colors import BoundaryNorm, ListedColormap
    from matplotlib.patches import Patch

    table = select_class(
        require(gates, ("layer", "head", "class", "label"), "gates"), class_name, "gates"
    )
    labels = list(LABEL_COLOURS)
    best, which = _dominant(table)
    table = table.assign(
        code=[float(labels.index(x)) if x in labels else np.nan for x in table["label"]],
        text=[_cell_text(v, g, lab) for v, g, lab in zip(best, which, table["label"], strict=True)],
    )
    codes, layers, heads = grid(table, "code")
    text = table.groupby(["layer", "head"])["text"].first()

    plt = pyplot()
    fig, ax = plt.subplots(
        figsize=(2.6 + 0.52 * len(heads), 1.2 + 0.4 * len(layers)), layout="constrained"
    )
    cmap = ListedColormap([LABEL_COLOURS[x] for x in labels]).with_extremes(bad="#FFFFFF")
    norm = BoundaryNorm(np.arange(len(labels) + 1) - 0.5, cmap.N)
    ax.imshow(masked(codes), cmap=cmap, norm=norm, aspect="auto", interpolation="nearest")
    for i, layer in enumerate(layers):
        for j, head in enumerate(heads):
            if (layer, head) in text.index and np.isfinite(codes[i, j]):
                colour = text_colour(cmap(int(codes[i, j])))
                ax.text(
                    j, i, text[(layer, head)], ha="center", va="center", fontsize=6.5, color=colour
                )
    ax.set_xticks(np.arange(len(heads) + 1) - 0.5, minor=True)
    ax.set_yticks(np.arange(len(layers) + 1) - 0.5, minor=True)
    ax.grid(which="minor", color="white", lw=1.0)
    ax.tick_params(which="minor", length=0)
    cell_ticks(ax, layers, heads)
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_title(f"attention gates, {_who(class_name)}")
    present = [x for x in labels if x in set(table["label"])]
    handles = [Patch(facecolor=LABEL_COLOURS[x], edgecolor="#999999", label=x) for x in present]
    handles += [  # how to read the numbers
        Patch(color="none", label="number: score of\nthe labelled gate"),
        Patch(color="none", label="mixed: highest\nscore, its gate"),
    ]
    fig.legend(handles=handles, loc="outside right upper", fontsize=8, title="label", frameon=False)
    return fig


def gate_scores_figure(gates: pd.DataFrame, class_name: str = ALL) -> Any:
    """Small multiples: one layer x head heat map per gate score, one shared 0-1 colour bar.

    Parameters
    ----------
    gates : tidy table with columns layer, head, class and the gate scores in [0, 1]
    class_name : the class to draw, "all" (default) for all genomes

    Returns
    -------
    matplotlib Figure (one axes per gate score present, plus the colour bar)
    """
    table = select_class(require(gates, ("layer", "head", "class"), "gates"), class_name, "gates")
    names = [g for g in GATE_NAMES if g in table.columns]
    if not names:
        raise ArtifactError(f"the gates table has none of the gate scores {list(GATE_NAMES)}")
    n_layers = table["layer"].nunique()
    n_heads = table["head"].nunique()
    ncols = min(4, len(names))
    nrows = -(-len(names) // ncols)
    plt = pyplot()
    fig, axes = plt.subplots(
        nrows,
        ncols,
        squeeze=False,
        sharex=True,
        sharey=True,
        layout="constrained",
        figsize=(1.2 + ncols * (0.7 + 0.2 * n_heads), 0.8 + nrows * (0.7 + 0.2 * n_layers)),
    )
    cmap = colour_map(SEQUENTIAL)
    for ax, name in zip(axes.flat, names, strict=False):
        values, layers, heads = grid(table, name)
        image = ax.imshow(
            masked(values), cmap=cmap, vmin=0, vmax=1, aspect="auto", interpolation="nearest"
        )
        cell_ticks(ax, layers, heads)
        ax.set_title(name)
    for ax in axes.flat[len(names) :]:
        fig.delaxes(ax)
    for ax in axes[-1, :]:
        ax.set_xlabel("head")
    for ax in axes[:, 0]:
        ax.set_ylabel("layer")
    if len(names) % ncols:  # the last row is short: label the x axes just above the gap
        for ax in axes[-2, len(names) % ncols :] if nrows > 1 else []:
            ax.set_xlabel("head")
            ax.xaxis.set_tick_params(labelbottom=True)
    fig.colorbar(image, ax=list(axes.flat[: len(names)]), shrink=0.8, label="score")
    fig.suptitle(f"gate scores per head, {_who(class_name)}")
    return fig


def _class_or_mean(table: pd.DataFrame, class_name: str, value: str) -> tuple[pd.DataFrame, str]:
    """Rows of ``class_name``, or the mean over classes per (layer, head) when it is absent."""
    if "class" not in table.columns:
        return table, "pooled"
    rows = table[table["class"] == class_name]
    if not rows.empty:
        return rows, _who(class_name)
    mean = table.groupby(["layer", "head"], as_index=False)[value].mean()
    return mean, "mean over classes"


def _per_layer(table: pd.DataFrame, value: str) -> tuple[list[int], list[np.ndarray]]:
    layers, data = [], []
    for layer, rows in table.groupby("layer"):
        v = rows[value].to_numpy(dtype=np.float64)
        v = v[np.isfinite(v)]
        if v.size:
            layers.append(int(layer))
            data.append(v)
    return layers, data


def _boxes(ax: Any, layers: list[int], data: list[np.ndarray], colour: str) -> None:
    ax.boxplot(
        data,
        positions=layers,
        widths=0.6,
        showfliers=False,
        patch_artist=True,
        boxprops={"facecolor": colour, "alpha": 0.35},
        medianprops={"color": "black"},
    )
    for layer, v in zip(layers, data, strict=True):
        jitter = np.linspace(-0.18, 0.18, len(v)) if len(v) > 1 else np.zeros(1)
        ax.scatter(layer + jitter, v, s=9, color=colour, edgecolor="none", alpha=0.8, zorder=3)
    ax.set_xticks(layers, [str(x) for x in layers])
    ax.set_xlabel("layer")


def entropy_k_distributions(
    gates: pd.DataFrame, spectra: pd.DataFrame, class_name: str = ALL
) -> Any:
    """Distributions over heads, per layer, of attention row entropy and metastable k.

    Parameters
    ----------
    gates : tidy table with columns layer, head, class, metastable_k
    spectra : tidy table with columns layer, head, class, row_entropy (normalised, may be NaN;
        rows of point "A" are used when there is a point column)
    class_name : the class to draw, "all" (default); a table without it contributes its mean
        over classes

    Returns
    -------
    matplotlib Figure (two axes; one when either measure is absent or all NaN)
    """
    panels = []  # (value, who, layers, per-layer values), entropy first
    if "row_entropy" in spectra.columns:
        s = layer_heads(require(spectra, ("layer", "head", "row_entropy"), "spectra"))
        if "point" in s.columns and (s["point"] == "A").any():
            s = s[s["point"] == "A"]
        panels.append(("row_entropy", *_class_or_mean(s, class_name, "row_entropy")))
    g = layer_heads(require(gates, ("layer", "head", "class", "metastable_k"), "gates"))
    panels.append(("metastable_k", *_class_or_mean(g, class_name, "metastable_k")))
    panels = [(v, who, *_per_layer(rows, v)) for v, rows, who in panels]
    panels = [p for p in panels if p[2]]
    if not panels:
        raise ArtifactError("neither row entropy nor metastable k has a finite value")

    plt = pyplot()
    n_layers = max(len(layers) for _, _, layers, _ in panels)
    fig, axes = plt.subplots(
        1, len(panels), squeeze=False, layout="constrained",
        figsize=(len(panels) * (1.6 + 0.42 * n_layers), 3.4),
    )  # fmt: skip
    for ax, (value, who, layers, data) in zip(axes.flat, panels, strict=True):
        if value == "row_entropy":
            _boxes(ax, layers, data, "#0072B2")
            ax.set_ylim(0, 1.02)
            ax.set_ylabel("row entropy / ln n")
            ax.set_title(f"attention row entropy ({who})", fontsize=10)
        else:
            _boxes(ax, layers, data, "#D55E00")
            ax.set_yscale("log")
            ax.set_ylabel("keys holding 90 % of the mass")
            ax.set_title(f"metastable-state size k ({who})", fontsize=10)
    fig.suptitle("distribution over heads, per layer")
    return fig


def directionality_map(direction: pd.DataFrame) -> Any:
    """Directionality of the heads: d_h and attention asymmetry maps, and the signature of S.

    Parameters
    ----------
    direction : tidy table with columns layer, head, index (d_h = ||N|| / ||B|| in [0, 1]),
        attention_asymmetry (||A - A^T|| / ||A + A^T||, may be NaN), pos_mass, neg_mass

    Returns
    -------
    matplotlib Figure: the d_h map, the asymmetry map (left out when all NaN) and the
    positive eigenvalue mass share of S per head and layer
    """
    table = require(direction, ("layer", "head", "index", "pos_mass", "neg_mass"), "direction")
    maps = [("index", "directionality index d_h\n(0 symmetric, 1 antisymmetric)")]
    if "attention_asymmetry" in table.columns and table["attention_asymmetry"].notna().any():
        maps.append(("attention_asymmetry", "attention asymmetry\n‖A−Aᵀ‖ / ‖A+Aᵀ‖ on data"))
    n_layers, n_heads = table["layer"].nunique(), table["head"].nunique()
    plt = pyplot()
    fig, axes = plt.subplots(
        1,
        len(maps) + 1,
        layout="constrained",
        figsize=(len(maps) * (1.6 + 0.26 * n_heads) + 1.2 + 0.3 * n_layers, 1.6 + 0.26 * n_layers),
        width_ratios=[1.0] * len(maps) + [0.75],
    )
    for ax, (column, title) in zip(axes[:-1], maps, strict=True):
        values, layers, heads = grid(table, column)
        image = ax.imshow(
            masked(values), cmap=colour_map(SEQUENTIAL), aspect="auto", interpolation="nearest"
        )
        fig.colorbar(image, ax=ax, shrink=0.9)
        cell_ticks(ax, layers, heads)
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
        ax.set_title(title, fontsize=10)
    ax = axes[-1]
    total = table["pos_mass"].astype(float) + table["neg_mass"].astype(float)
    share = (table["pos_mass"].astype(float) / total.where(total > 0)).to_numpy()
    ok = np.isfinite(share)
    ax.axhline(0.5, color="grey", lw=1, ls="--")
    ax.scatter(table["layer"][ok], share[ok], s=12, color="#0072B2", alpha=0.7, label="head")
    layer_mean = pd.Series(share[ok]).groupby(table["layer"].to_numpy()[ok]).mean()
    ax.plot(layer_mean.index, layer_mean.to_numpy(), color="black", lw=1.5, label="layer mean")
    ax.set_ylim(0, 1)
    integer_layers(ax)
    ax.set_xlabel("layer")
    ax.set_ylabel("positive share of |eigenvalue| mass")
    ax.set_title("signature of S = (B+Bᵀ)/2", fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    return fig
