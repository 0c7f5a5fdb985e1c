"""Stream-point flow: how each step of a layer changes its summaries (science.md §6).

Along the whole-layer stream points X -> C -> O -> U -> F -> Y, the change of three per-layer
summaries, each from another measure's table when that measure ran: the cone index (``cone``'s
``cone_summary``: per class the median over its genomes, then the mean over classes), the
effective rank (``spectra``: mean over classes of the class means) and Fisher's class
separability of the mean-pooled vectors (``embeddings``' ``separability``). The measure reads
nothing from the stream: its table is derived from the others' (:meth:`Flow.derive`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import pandas as pd

from bertgeom.geometry.measures import register
from bertgeom.geometry.measures.base import Measure
from bertgeom.geometry.stream import LAYER_POINTS


@register
class Flow(Measure):
    """Change of per-layer summaries between consecutive stream points (module docstring)."""

    name = "flow"
    title = "Stream-point flow"
    order = 90
    reads = frozenset()
    tables = ("flow",)
    definitions = (
        (
            "Stream-point flow",
            "The change of a per-layer summary s between consecutive stream points of a layer, "
            "for each summary whose measure ran: the cone index of the token rows (per class the "
            "median over its genomes, then the mean of those medians over the classes), the "
            "effective rank (per class the mean over the spectra subset, then the mean over the "
            "classes) and Fisher's class separability of the mean-pooled vectors. relative is "
            "undefined (NaN) where s(p) = 0.",
            "delta = s(q) − s(p),  relative = delta / |s(p)|  for p → q in X → C → O → U → F → Y",
        ),
    )

    def derive(self, tables: Mapping[str, Any]) -> dict[str, Any]:
        empty = pd.DataFrame()
        return {
            "flow": flow_table(
                tables.get("cone_summary", empty),
                tables.get("spectra", empty),
                tables.get("separability", empty),
            )
        }

    def figures(self, tables: Mapping[str, Any], context: Any) -> Iterator[tuple[str, Any]]:
        from bertgeom.plots import geometry as g

        flow = tables.get("flow")
        if flow is not None and not flow.empty:
            yield "flow", g.flow_figure(flow)

    @classmethod
    def section(cls, run: Any) -> Any:
        from bertgeom.report.stream_sections import flow_section

        return flow_section(run)

    @classmethod
    def findings(cls, run: Any) -> list[str]:
        from bertgeom.report import findings

        s = findings.flow_finding(run.analyze.table("flow"))
        return [s] if s else []


def flow_table(
    cone_summary: pd.DataFrame | None,
    spectra: pd.DataFrame | None,
    separability: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Change of per-layer summaries between consecutive stream points X->C->O->U->F->Y: the
    cone index (mean over classes of the class medians), the effective rank (mean over
    classes) and Fisher's class separability of the mean-pooled vectors; each metric whose
    table is there (None or empty: left out). Columns: metric, layer, source, target, before,
    after, delta, relative, transition."""
    from bertgeom.geometry.flow import stream_deltas

    def per_point(values: pd.Series, layers: list[int]) -> dict[str, np.ndarray]:
        return {p: np.array([values.get((p, la), np.nan) for la in layers]) for p in LAYER_POINTS}

    summaries: dict[str, dict[str, np.ndarray]] = {}
    if cone_summary is not None and not cone_summary.empty:
        whole = cone_summary[cone_summary["head"] == -1]
        if not whole.empty:
            layers = sorted(whole.layer.unique())
            summaries["cone"] = per_point(whole.groupby(["point", "layer"]).q50.mean(), layers)
    if spectra is not None and not spectra.empty:
        whole = spectra[spectra["head"] == -1]
        if not whole.empty:
            layers = sorted(whole.layer.unique())
            er = whole.groupby(["point", "layer"]).effective_rank.mean()
            summaries["effective_rank"] = per_point(er, layers)
    if separability is not None and not separability.empty:
        layers = sorted(separability.layer.unique())
        summaries["separability"] = per_point(
            separability.set_index(["point", "layer"]).fisher, layers
        )
    records = []
    for metric, values in summaries.items():
        records += stream_deltas({metric: values}, points=LAYER_POINTS).records()
    out = pd.DataFrame(records)
    if not out.empty:
        out["transition"] = out["source"] + "->" + out["target"]
    return out
