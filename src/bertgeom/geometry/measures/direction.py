"""Directionality of each head's query-key form, from the weights and on data (science.md §5).

From the weights (no stream): per layer and head the directionality index d_h of the bilinear
form B_h = W_Q^h (W_K^h)ᵀ, the signature of its symmetric part S and the principal angles
between the query and key subspaces (table ``direction``), and the overlap of the heads'
query (key) subspaces within each layer (table ``head_overlap``). On data, per genome, layer
and head: the asymmetry of the attention ``||A - Aᵀ||_F / ||A + Aᵀ||_F`` and the antisymmetry
of the token score matrix ``||(M - Mᵀ)/2||_F / ||M||_F``, M = Q Kᵀ, both over the content tokens
as queries *and* keys (with ``drop_special`` [CLS] and [SEP] are left out as rows and as
columns: the asymmetry compares A_ij with A_ji, so it needs the same tokens on both sides);
``direction`` holds their means over the included genomes.

Q and K are the projections the forward pass computed (captured, float32, biases included);
the score antisymmetry is computed in float64 from d_head x d_head Gram matrices of them,
never forming the pos x pos score matrix (``geometry.direction.score_directionality``).

Against the old engine (golden tables): equal to 1e-6 (the old engine recomputed Q and K from X
with the same float32 projection, so on the CPU the inputs are the same tensors). Under bf16
autocast (GPU) Q and K are the bf16 projections the model used, in float32, where the old
engine recomputed them in float32: an intended difference of the order of bf16 rounding.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import pandas as pd
import torch

from bertgeom.geometry.direction import (
    attention_asymmetry,
    directionality,
    principal_angles,
    score_directionality,
    subspace_overlap,
    symmetric_signature,
)
from bertgeom.geometry.measures import register
from bertgeom.geometry.measures.base import BatchInfo, Genomes, Measure, Rows, RunInfo
from bertgeom.geometry.stream import LayerView

#: Per-genome values kept (genome, layer, head), as the ``direction`` columns they average into.
PER_GENOME = {
    "attention_asymmetry": "attention_asymmetry",
    "score_antisymmetry": "data_antisymmetry",
}


def _weights(layer: Any) -> tuple[torch.Tensor, torch.Tensor, int]:
    sa = layer.attention.self
    wq = sa.query.weight.detach().double().cpu()
    wk = sa.key.weight.detach().double().cpu()
    return wq, wk, int(sa.num_attention_heads)


def direction_table(layers: Any, means: Mapping[str, np.ndarray | None]) -> pd.DataFrame:
    """Directionality of each head's query-key form from the weights of ``layers``, beside
    ``means`` (name in :data:`PER_GENOME` -> (layer, head) mean over genomes, or None)."""
    asym, score = means.get("attention_asymmetry"), means.get("score_antisymmetry")
    rows = []
    for layer, module in enumerate(layers):
        wq, wk, h = _weights(module)
        d = directionality(wq, wk, h)
        sig = symmetric_signature(wq, wk, h)
        angles = principal_angles(wq, wk, h)
        for head in range(h):
            rows.append({
                "layer": layer, "head": head, "index": float(d.index[head]),
                "pos_count": int(sig.n_positive[head]), "neg_count": int(sig.n_negative[head]),
                "pos_mass": float(sig.positive_mass[head]),
                "neg_mass": float(sig.negative_mass[head]),
                "principal_angle_mean": float(angles[head].mean()),
                "data_antisymmetry": float(score[layer, head]) if score is not None else np.nan,
                "attention_asymmetry": float(asym[layer, head]) if asym is not None else np.nan,
            })  # fmt: skip
    return pd.DataFrame(rows)


def head_overlap_table(layers: Any) -> pd.DataFrame:
    """Overlap of the heads' query subspaces and of their key subspaces within each layer
    (``direction.subspace_overlap``: mean cos² of the principal angles, 1 = the same subspace
    of the residual stream), for every ordered pair of heads."""
    frames = []
    for layer, module in enumerate(layers):
        wq, wk, h = _weights(module)
        oq, ok = subspace_overlap(wq, h).numpy(), subspace_overlap(wk, h).numpy()
        i, j = np.meshgrid(np.arange(h), np.arange(h), indexing="ij")
        frames.append(pd.DataFrame({
            "layer": layer, "head": i.ravel(), "other": j.ravel(),
            "query_overlap": oq.ravel(), "key_overlap": ok.ravel(),
        }))  # fmt: skip
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


@register
class Direction(Measure):
    """Directionality from the weights and on data (see the module docstring)."""

    name = "direction"
    title = "Directionality"
    order = 30
    reads = frozenset({"A", "QK", "weights"})
    tables = ("direction", "head_overlap")
    definitions = (
        (
            "Directionality",
            "The bilinear form B_h scores query-key pairs; d_h measures its antisymmetric part "
            "(0 symmetric, 1 antisymmetric), computed in float64 from d_head x d_head products "
            "of the weights (B is never formed). The signature counts the eigenvalues of S "
            "above +tol and below -tol, tol = d_model · eps(float64) · ‖B‖_F, and their shares "
            "of Σ|λ| over those eigenvalues; principal angles compare the row spaces of the "
            "head's query and key blocks (their mean is reported). On data, per genome: the "
            "same ratio for the token score matrix M = Q Kᵀ (score antisymmetry; Q and K as the "
            "forward pass computed them, biases included, from d_head x d_head Gram matrices in "
            "float64) and the asymmetry of the attention itself, both over the real tokens as "
            "queries and as keys; with drop_special [CLS] and [SEP] are left out as rows and "
            "as columns, and attention rows are not renormalised. The table reports their "
            "means over the included genomes.",
            "B_h = W_Q^h (W_K^h)ᵀ,  S = (B + Bᵀ)/2,  N = (B − Bᵀ)/2,  d_h = ‖N‖_F / ‖B‖_F\n"
            "score antisymmetry = ‖(M − Mᵀ)/2‖_F / ‖M‖_F,  "
            "‖M‖_F² = tr(QᵀQ KᵀK),  tr(M²) = tr((KᵀQ)²)\n"
            "attention asymmetry = ‖A − Aᵀ‖_F / ‖A + Aᵀ‖_F\n"
            "cos θ_i = σ_i(Q_qᵀ Q_k),  Q_q, Q_k orthonormal bases of the query and key row "
            "spaces",
        ),
        (
            "Head overlap",
            "Per layer and ordered pair of heads, the overlap of their query subspaces (and of "
            "their key subspaces) of the residual stream: the mean squared cosine of the "
            "principal angles between the row spaces of the two heads' blocks, 1 on the "
            "diagonal and for a shared subspace, 0 for orthogonal ones.",
            "overlap(h, g) = ‖Q_hᵀ P_g‖_F² / d_head",
        ),
    )

    def __init__(self, info: RunInfo, options: Any = None) -> None:
        super().__init__(info, options)
        self.rows = Rows()
        self._batch: dict[str, list[torch.Tensor]] = {}
        self._mask: torch.Tensor | None = None

    def begin_batch(self, batch: BatchInfo) -> None:
        self._batch = {}
        # no mask to apply when every position is content (the common case: spikes of one
        # length); decided once per batch, before the forward pass
        full = not self.info.drop_special and bool(batch.mask.all())
        self._mask = None if full else batch.mask

    def update(self, layer: int, view: LayerView, batch: BatchInfo) -> None:
        ds = self.info.drop_special
        keep = self._batch
        if view.A is not None:
            keep.setdefault("attention_asymmetry", []).append(
                attention_asymmetry(view.A, self._mask, drop_special=ds)
            )
        if view.Q is not None and view.K is not None:
            keep.setdefault("score_antisymmetry", []).append(
                score_directionality(view.Q, view.K, self._mask, drop_special=ds)
            )

    def end_batch(self, batch: BatchInfo) -> None:
        for name, per_layer in self._batch.items():
            self.rows.append(name, torch.stack(per_layer, 1))  # (batch, layer, head) float32
        self._batch = {}

    def abort_batch(self) -> None:
        self._batch = {}

    def finish(self, genomes: Genomes) -> dict[str, pd.DataFrame]:
        means: dict[str, np.ndarray | None] = {}
        for name in PER_GENOME:
            values = self.rows.get(name)
            if values is None:
                means[name] = None
                continue
            values = values[genomes.included]
            means[name] = values.mean(0) if len(values) else np.full(values.shape[1:], np.nan)
        layers = self.info.layers
        return {
            "direction": direction_table(layers, means),
            "head_overlap": head_overlap_table(layers),
        }

    def figures(self, tables: Mapping[str, Any], context: Any) -> Iterator[tuple[str, Any]]:
        from bertgeom.plots import geometry as g

        direction = tables.get("direction")
        if direction is not None and not direction.empty:
            yield "directionality", g.directionality_map(direction)

    @classmethod
    def section(cls, run: Any) -> Any:
        from bertgeom.report.geometry_sections import direction_section

        return direction_section(run)

    @classmethod
    def findings(cls, run: Any) -> list[str]:
        from bertgeom.report import findings

        s = findings.direction_finding(run.analyze.table("direction"))
        return [s] if s else []
