"""Cone index of the token rows of every stream point, per genome (science.md §3).

Per genome, layer and stream point X, C, O, U, F, Y (and per head for Z_h and, when the
attention is captured for another measure, for the rows of A_h): the normalised cone index
``I_cone / |S|`` of its content token rows. Tables: ``cone`` (one row per genome, layer, point,
head; Parquet only) and ``cone_summary`` (per class, layer, point and head: mean, population sd,
10/50/90 % quantiles over the included genomes).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import pandas as pd
import torch

from bertgeom.geometry.cone import cone_index
from bertgeom.geometry.measures import register
from bertgeom.geometry.measures.base import BatchInfo, Genomes, Measure, Rows, RunInfo
from bertgeom.geometry.stream import LAYER_POINTS, LayerView


def quantiles(values: np.ndarray) -> dict[str, float]:
    """Mean, population sd (ddof 0), 10/50/90 % quantiles and count of ``values``."""
    q10, q50, q90 = np.quantile(values, [0.1, 0.5, 0.9])
    return {
        "mean": float(values.mean()),
        "sd": float(values.std()),
        "q10": q10,
        "q50": q50,
        "q90": q90,
        "n": len(values),
    }


@register
class Cone(Measure):
    """Per-genome cone index at every stream point (see the module docstring)."""

    name = "cone"
    title = "Cone index"
    order = 10
    reads = frozenset({"X", "Z", "C", "O", "U", "F", "Y"})
    uses = frozenset({"A"})
    tables = ("cone", "cone_summary")
    per_genome = ("cone",)
    parquet_only = ("cone",)
    definitions = (
        (
            "Cone index",
            "For a set S of non-zero vectors (zero vectors are excluded and counted), the "
            "length of the sum of the unit vectors; divided by |S| it is the mean resultant "
            "length, 1 when all vectors point one way. Computed per genome over its token rows "
            "at each stream point (and per head for Z_h and A_h), and per class over the [CLS] "
            "vectors of its genomes at each hidden state. Summaries over genomes use the "
            "population standard deviation (ddof 0) and linear-interpolation quantiles.",
            "I_cone(S) = ‖ Σ_{x∈S} x / ‖x‖ ‖₂,   0 ≤ I_cone/|S| ≤ 1,   "
            "I_cone² = |S| + Σ_{i≠j} cos(x_i, x_j)",
        ),
    )

    def __init__(self, info: RunInfo, options: Any = None) -> None:
        super().__init__(info, options)
        self.rows = Rows()
        self._batch: dict[str, list[torch.Tensor]] = {}

    def begin_batch(self, batch: BatchInfo) -> None:
        self._batch = {}

    def update(self, layer: int, view: LayerView, batch: BatchInfo) -> None:
        ds = self.info.drop_special
        points = [cone_index(getattr(view, p), view.mask, drop_special=ds) for p in LAYER_POINTS]
        keep = self._batch
        keep.setdefault("cone", []).append(torch.stack([c.normalised for c in points], 1))
        keep.setdefault("cone_Z", []).append(
            cone_index(view.Z, view.mask, drop_special=ds).normalised
        )
        if view.A is not None:
            keep.setdefault("cone_A", []).append(
                cone_index(view.A, view.mask, drop_special=ds).normalised
            )

    def end_batch(self, batch: BatchInfo) -> None:
        for name, per_layer in self._batch.items():
            self.rows.append(name, torch.stack(per_layer, 1))  # (batch, layer, ...)
        self._batch = {}

    def abort_batch(self) -> None:
        self._batch = {}

    def finish(self, genomes: Genomes) -> dict[str, pd.DataFrame]:
        cone = self.rows.get("cone")
        if cone is None:
            return {}
        parts = {p: cone[:, :, i][..., None] for i, p in enumerate(LAYER_POINTS)}
        for p in ("Z", "A"):
            values = self.rows.get(f"cone_{p}")
            if values is not None:
                parts[p] = values  # (genome, layer, head)
        classes = np.asarray(self.info.classes)[genomes.labels]
        frames, summary = [], []
        for point, values in parts.items():
            g, n_layers, n_heads = values.shape
            heads = [-1] if n_heads == 1 else list(range(n_heads))
            per = n_layers * n_heads
            frame = pd.DataFrame(
                {
                    "seq_id": np.repeat(np.asarray(genomes.ids), per),
                    "class": np.repeat(classes, per),
                    "included": np.repeat(genomes.included, per),
                    "layer": np.tile(np.repeat(np.arange(n_layers), n_heads), g),
                    "point": point,
                    "head": np.tile(heads, g * n_layers),
                    "cone": values.reshape(-1),
                }
            )
            frames.append(frame)
            sub = frame[frame.included]
            for (cls, layer, head), grp in sub.groupby(["class", "layer", "head"]):
                summary.append(
                    {"class": cls, "layer": layer, "point": point, "head": head}
                    | quantiles(grp.cone.to_numpy())
                )
        return {
            "cone": pd.concat(frames, ignore_index=True),
            "cone_summary": pd.DataFrame(summary),
        }

    def figures(self, tables: Mapping[str, Any], context: Any) -> Iterator[tuple[str, Any]]:
        from bertgeom.plots import geometry as g

        summary = tables.get("cone_summary")
        if summary is None or summary.empty:
            return
        cls_cone = tables.get("cls_cone")
        yield (
            "cone_curves",
            g.cone_curves(
                summary, cls_cone if cls_cone is not None and not cls_cone.empty else None
            ),
        )

    @classmethod
    def section(cls, run: Any) -> Any:
        from bertgeom.report.stream_sections import cone_section

        return cone_section(run)
