"""Figures of the geometry over training (``analyze --over-training``): measures against the
optimiser step, beside the training curves.

Each function takes the tables ``analyze`` writes into ``over_training/`` (every row tagged
with its ``step``) and, for the curves, the model's ``history.tsv``; it returns a Figure and
never computes a measure (means over heads or classes are the only reductions, as a legend
says). The step axis is symmetric-logarithmic (linear below 1), so step 0, the initial
weights, is drawn beside the log-spaced early snapshots.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from bertgeom.plots.geometry_common import GATE_NAMES, LABEL_COLOURS, pyplot, require

#: The whole-layer stream points in stream order (as ``geometry.stream.LAYER_POINTS``).
POINTS = ("X", "C", "O", "U", "F", "Y")


def _step_axis(ax: Any, steps: Any = None) -> None:
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlabel("optimiser step")
    if steps is not None:
        for s in steps:
            ax.axvline(s, color="#cccccc", lw=0.5, zorder=0)


def _layer_colour(layer: int, n_layers: int) -> Any:
    return pyplot().get_cmap("viridis")(layer / max(n_layers - 1, 1))


def _lines_by_layer(ax: Any, frame: pd.DataFrame, value: str, label: str = "layer") -> None:
    """One line per ``layer`` of ``frame`` (step, layer, value), coloured along viridis."""
    layers = sorted(frame["layer"].unique())
    for la in layers:
        part = frame[frame["layer"] == la].sort_values("step")
        colour = _layer_colour(layers.index(la), len(layers))
        ax.plot(part["step"], part[value], marker="o", ms=3, color=colour, label=f"{label} {la}")


def training_dynamics(
    history: pd.DataFrame | None,
    embeddings: pd.DataFrame | None,
    separability: pd.DataFrame | None,
    direction: pd.DataFrame | None,
) -> Any:
    """Four panels against the step: training and validation curves (``history.tsv``), the
    linear-probe accuracy of the mean-pooled vectors per hidden state, Fisher's separability
    of the mean-pooled layer outputs (Y) per layer, and the directionality index per layer
    (mean over heads). A panel whose table is missing says so."""
    plt = pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5), constrained_layout=True)
    steps = None
    if embeddings is not None and not embeddings.empty:
        steps = sorted(embeddings["step"].unique())
    ax = axes[0, 0]
    if history is not None and not history.empty:
        h = require(history, ("step", "train_loss", "val_loss", "val_accuracy"), "history")
        ax.plot(h["step"], h["train_loss"], marker="o", ms=3, label="training loss")
        ax.plot(h["step"], h["val_loss"], marker="o", ms=3, label="validation loss")
        ax.set_ylabel("cross-entropy")
        twin = ax.twinx()
        twin.plot(h["step"], h["val_accuracy"], color="#CC6677", marker="s", ms=3,
                  label="validation accuracy")  # fmt: skip
        twin.set_ylim(0, 1.02)
        twin.set_ylabel("validation accuracy")
        lines = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
        ax.legend(lines, [str(x.get_label()) for x in lines], fontsize=7, loc="center right")
    else:
        _empty(ax, "no history.tsv")
    ax.set_title("training (per epoch)")
    _step_axis(ax, steps)
    ax = axes[0, 1]
    if embeddings is not None and not embeddings.empty:
        e = require(embeddings, ("step", "layer", "kind", "metric", "value"), "embeddings")
        probe = e[(e["metric"] == "probe") & (e["kind"] == "mean")]
        _lines_by_layer(ax, probe, "value", "hidden state")
        ax.set_ylim(0, 1.02)
        ax.legend(fontsize=7)
    else:
        _empty(ax, "no embeddings measure")
    ax.set_title("linear-probe accuracy (mean-pooled)")
    _step_axis(ax, steps)
    ax = axes[1, 0]
    if separability is not None and not separability.empty:
        s = require(separability, ("step", "layer", "point", "fisher"), "separability")
        _lines_by_layer(ax, s[s["point"] == "Y"], "fisher")
        ax.set_yscale("log")
        ax.legend(fontsize=7)
    else:
        _empty(ax, "no embeddings measure")
    ax.set_title("class separability (Fisher, layer output Y)")
    _step_axis(ax, steps)
    ax = axes[1, 1]
    if direction is not None and not direction.empty:
        d = require(direction, ("step", "layer", "head", "index"), "direction")
        mean = d.groupby(["step", "layer"], as_index=False)["index"].mean()
        _lines_by_layer(ax, mean, "index")
        ax.set_ylim(0, 1.02)
        ax.legend(fontsize=7)
    else:
        _empty(ax, "no direction measure")
    ax.set_title("directionality index (mean over heads)")
    _step_axis(ax, steps)
    return fig


def cone_over_training(cone_summary: pd.DataFrame) -> Any:
    """The cone index (mean over genomes, then over classes) at every stream point, one line
    per layer, against the step."""
    require(cone_summary, ("step", "class", "layer", "point", "head", "mean"), "cone_summary")
    plt = pyplot()
    whole = cone_summary[cone_summary["head"] == -1]
    points = [p for p in POINTS if (whole["point"] == p).any()]
    fig, axes = plt.subplots(
        1, max(len(points), 1), figsize=(2.6 * max(len(points), 1) + 1, 3.2),
        sharey=True, constrained_layout=True, squeeze=False,
    )  # fmt: skip
    steps = sorted(whole["step"].unique())
    for ax, point in zip(axes[0], points, strict=False):
        part = whole[whole["point"] == point]
        mean = part.groupby(["step", "layer"], as_index=False)["mean"].mean()
        _lines_by_layer(ax, mean, "mean")
        ax.set_title(f"stream point {point}")
        _step_axis(ax, steps)
    axes[0, 0].set_ylabel("cone index / tokens (mean over classes)")
    axes[0, 0].legend(fontsize=7)
    return fig


def gate_mix_over_training(gates: pd.DataFrame) -> Any:
    """Per layer, the share of heads carrying each gate label (all genomes pooled) against
    the step, stacked."""
    require(gates, ("step", "layer", "head", "class", "label"), "gates")
    plt = pyplot()
    pooled = gates[gates["class"] == "all"]
    layers = sorted(pooled["layer"].unique())
    fig, axes = plt.subplots(
        1, max(len(layers), 1), figsize=(2.8 * max(len(layers), 1) + 1.5, 3.2),
        sharey=True, constrained_layout=True, squeeze=False,
    )  # fmt: skip
    labels = [g for g in GATE_NAMES if (pooled["label"] == g).any()]
    labels += sorted(set(pooled["label"]) - set(labels))
    steps = np.array(sorted(pooled["step"].unique()))
    for ax, layer in zip(axes[0], layers, strict=False):
        part = pooled[pooled["layer"] == layer]
        share = pd.crosstab(part["step"], part["label"], normalize="index")
        share = share.reindex(index=steps, columns=labels, fill_value=0.0)
        ax.stackplot(
            steps, share.to_numpy().T, labels=labels,
            colors=[LABEL_COLOURS.get(g, "#999999") for g in labels], step="post",
        )  # fmt: skip
        ax.set_ylim(0, 1)
        ax.set_title(f"layer {layer}")
        _step_axis(ax)
    axes[0, 0].set_ylabel("share of heads")
    axes[0, -1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return fig


def _empty(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="#777777")
