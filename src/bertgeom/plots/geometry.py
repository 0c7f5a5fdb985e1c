"""Geometry figures of ``bertgeom analyze``: one import point for the pipeline and the report.

Every function takes the tidy tables (pandas) or arrays that ``analyze`` writes and returns a
matplotlib Figure; none computes a measure and none saves (the pipeline decides file names).
The code lives in ``geometry_attention`` (attention maps, domains), ``geometry_heads`` (gates,
entropy, directionality), ``geometry_streams`` (cone index, spectra, flow) and
``geometry_embeddings`` (PCA maps, separability); ``geometry_common`` holds the colours.

A class asked for by name that the table lacks raises ``ConfigError`` naming the classes it
has; a table without a needed column, or without rows, raises ``ArtifactError``. NaN values
show as grey cells or gaps in lines, never as numbers.
"""

from __future__ import annotations

from bertgeom.plots.geometry_attention import attention_heatmap, domain_share_heatmap
from bertgeom.plots.geometry_embeddings import (
    embedding_maps,
    output_histograms,
    separability_curves,
)
from bertgeom.plots.geometry_heads import (
    directionality_map,
    entropy_k_distributions,
    gate_grid,
    gate_scores_figure,
)
from bertgeom.plots.geometry_streams import cone_curves, flow_figure, spectra_curves

__all__ = [
    "attention_heatmap",
    "cone_curves",
    "directionality_map",
    "domain_share_heatmap",
    "embedding_maps",
    "entropy_k_distributions",
    "flow_figure",
    "gate_grid",
    "gate_scores_figure",
    "output_histograms",
    "separability_curves",
    "spectra_curves",
]
