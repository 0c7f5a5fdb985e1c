"""Classification figures: confusion matrix, reliability diagram, training curves.

Each function takes computed results and returns a matplotlib Figure; it never computes a
metric and never saves (the pipeline decides file names).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def confusion_figure(confusion: np.ndarray, labels: Sequence[str], title: str = "") -> Any:
    """Heat map of a (true, predicted) count matrix, row-normalised colours, counts written."""
    plt = _pyplot()
    n = len(labels)
    fig, ax = plt.subplots(figsize=(1.0 + 0.62 * n, 0.8 + 0.55 * n), layout="constrained")
    rows = confusion.sum(axis=1, keepdims=True)
    share = np.divide(confusion, rows, out=np.zeros(confusion.shape), where=rows > 0)
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            if confusion[i, j]:
                ax.text(
                    j,
                    i,
                    str(confusion[i, j]),
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if share[i, j] > 0.6 else "black",
                )
    ax.set_xticks(range(n), labels, rotation=45, ha="right")
    ax.set_yticks(range(n), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "confusion matrix (colour: share of the true class)")
    return fig


def reliability_figure(
    confidence: np.ndarray, accuracy: np.ndarray, count: np.ndarray, ece: float, label: str = ""
) -> Any:
    """Reliability diagram: accuracy against mean confidence per bin, with the diagonal."""
    plt = _pyplot()
    fig, (ax, axc) = plt.subplots(
        2, 1, figsize=(4.2, 4.8), height_ratios=(3, 1), sharex=True, layout="constrained"
    )
    ok = count > 0
    ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--", label="perfect calibration")
    ax.plot(confidence[ok], accuracy[ok], marker="o", lw=1.5, label=label or "model")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1.01)
    ax.set_ylim(0, 1.01)
    ax.set_title(f"reliability (ECE {ece:.4f})")
    ax.legend(loc="upper left", fontsize=8)
    edges = np.linspace(0, 1, len(count) + 1)
    axc.bar(edges[:-1], count, width=np.diff(edges), align="edge", color="#8da0cb")
    axc.set_yscale("symlog")
    axc.set_xlabel("confidence (top-class probability)")
    axc.set_ylabel("genomes")
    return fig


def history_figure(history: Sequence[Mapping[str, Any]]) -> Any:
    """Training curves: losses and validation accuracy / macro-F1 per epoch."""
    plt = _pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(8.5, 3.2), layout="constrained")
    epochs = [int(r["epoch"]) for r in history]
    for key, name in (("train_loss", "train"), ("val_loss", "validation")):
        ax1.plot(epochs, [float(r[key]) for r in history], marker="o", label=name)
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("cross-entropy")
    ax1.set_yscale("log")
    ax1.legend()
    for key, name in (("val_accuracy", "accuracy"), ("val_macro_f1", "macro-F1")):
        ax2.plot(epochs, [float(r[key]) for r in history], marker="o", label=name)
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("validation")
    ax2.legend()
    return fig
