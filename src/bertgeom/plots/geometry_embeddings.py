"""Per-layer embedding figures: 2-D PCA, t-SNE and UMAP maps by class, and class separability
over layers.

Each function takes computed results and returns a matplotlib Figure; it never computes a
measure and never saves (the pipeline decides file names).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from bertgeom.errors import ConfigError
from bertgeom.plots.geometry_common import (
    class_colour,
    integer_layers,
    order_classes,
    pyplot,
    require,
)

#: Axis labels of the separability metrics, in display order.
METRIC_LABELS: dict[str, str] = {
    "silhouette": "silhouette by class",
    "knn": "k-NN accuracy",
    "probe": "linear-probe accuracy",
    "ari": "ARI (k-means vs class)",
    "anisotropy": "anisotropy (mean cosine)",
    "pca1_variance": "PC1 explained variance",
    "normality_p_pc1": "normality p-value, PC1",
    "normality_p_pc2": "normality p-value, PC2",
}
#: Map method -> (name in titles and axis labels, coordinate columns of its table).
MAP_STYLE: dict[str, tuple[str, tuple[str, str]]] = {
    "pca": ("PCA", ("pc1", "pc2")),
    "tsne": ("t-SNE", ("dim1", "dim2")),
    "umap": ("UMAP", ("dim1", "dim2")),
}
_KIND_STYLE: dict[str, dict[str, Any]] = {
    "cls": {"color": "#0072B2", "marker": "o", "ls": "-", "label": "[CLS] vector"},
    "mean": {"color": "#D55E00", "marker": "s", "ls": "--", "label": "mean of token vectors"},
}


def embedding_maps(
    embedding_maps: pd.DataFrame,
    kind: str = "cls",
    layers: Sequence[int] | None = None,
    *,
    method: str = "pca",
    embeddings_at_0: bool = False,
) -> Any:
    """Grid of 2-D map scatter plots, one per layer, genomes coloured by class.

    Parameters
    ----------
    embedding_maps : tidy table with columns class, layer, kind and, for ``pca``, pc1, pc2
        (``embedding_maps``), else method, dim1, dim2 (``nonlinear_maps``); one row per genome
        and layer (and method)
    kind : "cls" ([CLS] vectors) or "mean" (mean-pooled token vectors)
    layers : layers to draw (default: every layer in the table)
    method : "pca", "tsne" or "umap"; t-SNE and UMAP axes have no units, so no tick labels
    embeddings_at_0 : the table's layer 0 is the embedding output and layer l the output of
        the l-th encoder layer (hidden states); panels are titled accordingly

    Returns
    -------
    matplotlib Figure (one axes per layer)
    """
    if method not in MAP_STYLE:
        raise ConfigError(f"unknown map method {method!r}; methods: {', '.join(MAP_STYLE)}")
    title, (c1, c2) = MAP_STYLE[method]
    need = ("class", "layer", "kind", c1, c2) + (("method",) if method != "pca" else ())
    table = require(embedding_maps, need, f"{title} maps")
    if method != "pca":
        table = table[table["method"] == method]
    table = table[table["kind"] == kind]
    if table.empty:
        raise ConfigError(
            f"no rows of kind {kind!r} in the {title} maps; kinds: "
            f"{sorted(embedding_maps['kind'].unique())}"
        )
    have = sorted(int(x) for x in table["layer"].unique())
    chosen = have if layers is None else [int(x) for x in layers]
    missing = [x for x in chosen if x not in have]
    if missing or not chosen:
        raise ConfigError(f"layers {missing or chosen} not in the {title} maps; layers: {have}")
    classes = order_classes(table["class"].unique())
    sizes = table[table["layer"] == chosen[0]]["class"].value_counts()
    draw_order = sorted(classes, key=lambda c: -sizes.get(c, 0))  # small classes on top
    n_points = max(1, int(sizes.sum()))
    marker = float(np.clip(4000 / n_points, 2, 14))
    ncols = min(4, int(np.ceil(np.sqrt(len(chosen)))))
    nrows = -(-len(chosen) // ncols)
    plt = pyplot()
    fig, axes = plt.subplots(
        nrows,
        ncols,
        squeeze=False,
        figsize=(1.8 + 2.7 * ncols, 0.6 + 2.6 * nrows),
        layout="constrained",
    )
    for ax, layer in zip(axes.flat, chosen, strict=False):
        rows = table[table["layer"] == layer]
        for z, cls in enumerate(draw_order):
            c = rows[rows["class"] == cls]
            ax.scatter(
                c[c1],
                c[c2],
                s=marker,
                color=class_colour(cls),
                alpha=0.65,
                edgecolor="none",
                zorder=2 + z,
                rasterized=True,
            )
        ax.set_title(_layer_name(layer, embeddings_at_0), fontsize=10)
        ax.tick_params(labelsize=7)
        if method != "pca":
            ax.tick_params(labelbottom=False, labelleft=False)
        ax.set_xlabel(f"{title} 1" if method != "pca" else "PC1", fontsize=8)
        ax.set_ylabel(f"{title} 2" if method != "pca" else "PC2", fontsize=8)
    for ax in axes.flat[len(chosen) :]:
        fig.delaxes(ax)
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], ls="", marker="o", ms=6, color=class_colour(c), label=f"{c} ({n})")
        for c in classes
        for n in [sizes.get(c, 0)]
    ]
    fig.legend(
        handles=handles,
        loc="outside right upper",
        fontsize=8,
        title="class (genomes)",
        frameon=False,
    )
    what = (
        "[CLS] vectors"
        if kind == "cls"
        else "mean-pooled token vectors"
        if kind == "mean"
        else kind
    )
    fig.suptitle(f"{title} of the {what}, per layer")
    return fig


def _layer_name(layer: int, embeddings_at_0: bool) -> str:
    if not embeddings_at_0:
        return f"layer {layer}"
    return "hidden state 0 (embeddings)" if layer == 0 else f"hidden state {layer}"


def separability_curves(embeddings: pd.DataFrame, *, embeddings_at_0: bool = False) -> Any:
    """Class separability and geometry of the embeddings over layers, one panel per metric.

    Parameters
    ----------
    embeddings : tidy table with columns layer, kind ("cls" or "mean"), metric (silhouette,
        knn, probe, ari, anisotropy, ...), value (NaN values leave gaps)
    embeddings_at_0 : layer 0 is the embedding output, layer l the l-th encoder layer's output

    Returns
    -------
    matplotlib Figure (one axes per metric)
    """
    table = require(embeddings, ("layer", "kind", "metric", "value"), "embeddings")
    present = list(dict.fromkeys(table["metric"]))
    metrics = [m for m in METRIC_LABELS if m in present] + [
        m for m in present if m not in METRIC_LABELS
    ]
    ncols = min(3, len(metrics))
    nrows = -(-len(metrics) // ncols)
    plt = pyplot()
    fig, axes = plt.subplots(
        nrows,
        ncols,
        squeeze=False,
        sharex=True,
        figsize=(0.6 + 3.1 * ncols, 0.6 + 2.5 * nrows),
        layout="constrained",
    )
    kinds = list(dict.fromkeys(table["kind"]))
    for ax, metric in zip(axes.flat, metrics, strict=False):
        rows = table[table["metric"] == metric]
        for kind in kinds:
            k = rows[rows["kind"] == kind].groupby("layer")["value"].mean()
            style = _KIND_STYLE.get(kind, {"label": kind, "marker": "^"})
            ax.plot(k.index, k.to_numpy(dtype=np.float64), ms=3.5, lw=1.6, **style)
        ax.set_title(METRIC_LABELS.get(metric, metric.replace("_", " ")), fontsize=10)
        ax.grid(alpha=0.3)
        integer_layers(ax)
        ax.set_xlabel("hidden state (0 = embeddings)" if embeddings_at_0 else "layer")
        ax.xaxis.set_tick_params(labelbottom=True)
    for ax in axes.flat[len(metrics) :]:
        fig.delaxes(ax)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(
        handles, labels, loc="outside lower center", ncols=len(kinds), fontsize=8, frameon=False
    )
    fig.suptitle("embeddings over layers")
    return fig


def output_histograms(table: pd.DataFrame) -> Any:
    """Distribution of the token-summed layer output, one curve per hidden state.

    Parameters
    ----------
    table : the ``output_histogram`` table (layer, lo, hi, density); layer 0 = the embeddings

    Returns
    -------
    matplotlib Figure: density against value, coloured from the first hidden state (dark) to
    the last (light) on the sequential map
    """
    import matplotlib as mpl

    t = require(table, ("layer", "lo", "hi", "density"), "output_histogram")
    layers = sorted(int(x) for x in t["layer"].unique())
    cmap = mpl.colormaps["viridis"]
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.8), layout="constrained")
    for i, layer in enumerate(layers):
        rows = t[t["layer"] == layer].sort_values("lo")
        centre = (rows["lo"].to_numpy() + rows["hi"].to_numpy()) / 2
        colour = cmap(i / max(len(layers) - 1, 1))
        label = "embeddings" if layer == 0 else f"layer {layer - 1}"
        ax.plot(centre, rows["density"].to_numpy(), color=colour, lw=1.2, label=label)
    ax.set_xlabel("token-summed output value (per model dimension)")
    ax.set_ylabel("density")
    ax.set_title("Token-summed layer outputs")
    ax.legend(fontsize="small", ncol=2 if len(layers) > 7 else 1, frameon=False)
    return fig
