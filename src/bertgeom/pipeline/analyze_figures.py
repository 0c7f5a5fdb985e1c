"""Which figures ``analyze`` draws from its tables (file name -> Figure), through ``plots/``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pandas as pd

from bertgeom.config import AnalyzeConfig
from bertgeom.model.store import ModelBundle
from bertgeom.resources import protein_domains
from bertgeom.tokens.kmers import token_residues


def close_figure(fig: Any) -> None:
    """Release a figure's memory."""
    import matplotlib.pyplot as plt

    plt.close(fig)


def figures(
    t: dict[str, pd.DataFrame],
    acc: Any,
    bundle: ModelBundle,
    names: tuple[str, ...],
    config: AnalyzeConfig,
) -> Iterator[tuple[str, Any]]:
    """(name, Figure) for every figure the computed families allow."""
    from bertgeom.geometry import tables
    from bertgeom.plots import geometry as g

    if "gates" in t:
        yield "gate_grid", g.gate_grid(t["gates"], "all")
        yield "gate_scores", g.gate_scores_figure(t["gates"], "all")
        if "row_entropy" in t and not t["row_entropy"].empty:
            yield "entropy_k", g.entropy_k_distributions(t["gates"], t["row_entropy"])
    if "cone_summary" in t and "cls_cone" in t:
        cls_cone = t["cls_cone"] if not t["cls_cone"].empty else None
        if not t["cone_summary"].empty:
            yield "cone_curves", g.cone_curves(t["cone_summary"], cls_cone)
    if "spectra" in t and not t["spectra"].empty:
        yield "spectra", g.spectra_curves(t["spectra"])
    if "domains" in t and not t["domains"].empty:
        for cls in names:
            if (t["domains"]["class"] == cls).any():
                yield f"domains_{cls}", g.domain_share_heatmap(t["domains"], cls)
    if "embeddings" in t and not t["embeddings"].empty:
        yield "separability", g.separability_curves(t["embeddings"], embeddings_at_0=True)
    if "output_histogram" in t and not t["output_histogram"].empty:
        yield "output_histogram", g.output_histograms(t["output_histogram"])
    yield from _embedding_map_figures(t)
    if "direction" in t:
        yield "directionality", g.directionality_map(t["direction"])
    if "flow" in t and not t["flow"].empty:
        yield "flow", g.flow_figure(t["flow"])
    mean = tables.class_mean_maps(acc, config.all_genomes)
    if mean is not None and bundle.vocab.spec.mode == "aligned":  # raw tokens: no fixed residues
        residues = token_residues(bundle.vocab.spec, mean.shape[-1] - 2)
        domains = protein_domains()
        last = mean.shape[0] - 1
        for c, cls in enumerate(names):
            m = mean[last, :, c].mean(0)  # last layer, heads averaged
            if m.sum() > 0:
                yield (
                    f"attention_{cls}",
                    g.attention_heatmap(
                        m,
                        residues,
                        domains,
                        f"{cls}: class-mean attention, layer {last}, heads averaged",
                    ),
                )


def _embedding_map_figures(t: dict[str, pd.DataFrame]) -> Iterator[tuple[str, Any]]:
    """PCA (``embedding_maps``), t-SNE and UMAP (``embedding_maps_<method>``) maps of the
    [CLS] vectors per hidden state."""
    from bertgeom.plots import geometry as g

    pca = t.get("embedding_maps")
    if pca is not None and not pca.empty and (pca["kind"] == "cls").any():
        yield "embedding_maps", g.embedding_maps(pca, "cls", embeddings_at_0=True)
    other = t.get("nonlinear_maps")
    if other is None or other.empty:
        return
    for method in dict.fromkeys(other["method"]):
        rows = other[(other["method"] == method) & (other["kind"] == "cls")]
        if not rows.empty:
            yield (
                f"embedding_maps_{method}",
                g.embedding_maps(rows, "cls", method=method, embeddings_at_0=True),
            )
