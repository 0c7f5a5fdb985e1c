"""The seven attention gates, per-head statistics and row entropy (science.md §4).

Per layer, head and class (and over all classes, "all"): the gate scores closed, open,
backward, forward, directional, instance and cluster in [0, 1], the head's label (the gate
exceeding its threshold by the largest share of the room above it, "mixed" when none does),
the mean attention to [CLS] and [SEP], the attention distance, the metastable-state size k and
the profile variability v (definitions: :mod:`bertgeom.geometry.gates`). Per layer, head and
class: the mean normalised row entropy of attention. Tables ``gates`` and ``row_entropy``.

One pass per layer (:func:`bertgeom.geometry.gates.layer_measures`): one renormalised copy of
the attention maps (no compaction for right-padded batches), the per-row statistics as
reductions and matrix-vector products over it, the metastable k from one sort per row, the row
entropy taken once for the open gate and the ``row_entropy`` table; the cluster segmentation
from the reciprocal attention alone (no block tables,
:func:`bertgeom.geometry.segmentation.solve_reciprocal`), solved for the layers held together
(up to 256 MB of reciprocal attention on the CPU, a quarter of the GPU's memory on a GPU). The
only host synchronisation is at the start of a batch (whether its mask is right-padded).

State: per layer the per-bucket sums of the per-genome measures, key profiles and their
entropies (:class:`~bertgeom.geometry.measures.base.Sums`), and per genome the row entropy
(:class:`~bertgeom.geometry.measures.base.Rows`). The label thresholds are read by ``finish``
only.

Differences from the engine before v2 (golden tables equal to 1e-6 all the same): the cluster
score's dynamic programme runs on float64 running sums built from the float32 reciprocal
attention, where the old one read float32 (pos+1)² prefix tables of S - T; on the golden model
both agree with a float64 evaluation of the definition to 1e-7 (old) and 1e-9 (new). A content
mask with gaps given to ``segmentation.cluster_score`` is read with the gaps closed (the gates
only pass contiguous content).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np
import pandas as pd
import torch

from bertgeom.geometry.gates import (
    GATES,
    HEAD_STATS,
    MEASURES,
    GateOptions,
    GateStats,
    GateThresholds,
    LayerMeasures,
    gate_scores,
    is_right_padded,
    label_heads,
    layer_measures,
)
from bertgeom.geometry.measures import register
from bertgeom.geometry.measures.base import (
    BatchInfo,
    Genomes,
    Measure,
    Rows,
    RunInfo,
    Sums,
    bucket_groups,
    merge_buckets,
    options_dict,
)
from bertgeom.geometry.segmentation import ClusterParts, cluster_from_parts

#: Bytes of reciprocal attention the CPU holds for one cluster programme (see ``_hold_bytes``).
CPU_HOLD_BYTES = 1 << 28
#: The per-bucket sums of one layer, in ``GateStats`` field order.
_STATS = ("n_genomes", "sums", "profile_sum", "profile_entropy_sum", "n_profiles")


def parse_thresholds(text: str) -> GateThresholds:
    """``GateThresholds`` from comma-separated ``gate=value`` overrides of the defaults.

    Raises
    ------
    ValueError
        Naming the bad item: an unknown gate, a value that is not a number, or a threshold
        outside [0, 1).
    """
    values: dict[str, float] = {}
    for item in (x.strip() for x in text.split(",")):
        if not item:
            continue
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or name not in GATES:
            raise ValueError(
                f"thresholds has {item!r}: expected gate=value with gate one of {', '.join(GATES)}"
            )
        try:
            values[name] = float(value)
        except ValueError:
            bad = f"{value.strip()!r} is not a number"
            raise ValueError(f"thresholds has {item!r}: {bad}") from None
    try:
        return GateThresholds(**values)
    except Exception as err:  # GateThresholds reports a ConfigError
        raise ValueError(f"thresholds: {err}") from None


def _fits(buffer: torch.Tensor | None, shape: tuple[int, ...], dtype: torch.dtype) -> bool:
    """Whether a kept ``buffer`` can be written again: this shape and dtype, made in the current
    inference mode (an inference tensor cannot be written outside inference mode, nor the
    reverse)."""
    return (
        buffer is not None
        and tuple(buffer.shape) == tuple(shape)
        and buffer.dtype == dtype
        and buffer.is_inference() == torch.is_inference_mode_enabled()
    )


@dataclass(frozen=True)
class GatesOptions:
    """Options of the gates measure (TOML ``[analyze.gates]``, flags ``--gates-<option>``)."""

    window: int = field(
        default=GateOptions.window,
        metadata={
            "help": "contextual window w of the backward/forward gates (tokens)",
            "label": "contextual window w",
        },
    )
    coverage: float = field(
        default=GateOptions.coverage,
        metadata={
            "help": "mass the metastable-state size k must reach, in (0, 1]",
            "label": "metastable coverage c",
        },
    )
    thresholds: str = field(
        default="",
        metadata={
            "help": "label thresholds overriding the defaults, e.g. open=0.85,cluster=0.5",
            "label": "gate thresholds",
        },
    )
    iterations: int = field(
        default=GateOptions.iterations,
        metadata={
            "help": "Golub-Kahan-Lanczos steps for the top singular value of the focus",
            "label": "Lanczos steps for s₁ (focus)",
        },
    )

    def __post_init__(self) -> None:
        if self.window < 1:
            raise ValueError(f"window must be >= 1, got {self.window}")
        if not (np.isfinite(self.coverage) and 0.0 < self.coverage <= 1.0):
            raise ValueError(f"coverage must be in (0, 1], got {self.coverage}")
        if self.iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {self.iterations}")
        parse_thresholds(self.thresholds)

    def gate_thresholds(self) -> GateThresholds:
        """The label thresholds (defaults overridden by ``thresholds``)."""
        return parse_thresholds(self.thresholds)

    def gate_options(self, drop_special: bool) -> GateOptions:
        """The kernel's options."""
        return GateOptions(
            window=self.window,
            coverage=self.coverage,
            drop_special=drop_special,
            iterations=self.iterations,
        )


@register
class Gates(Measure):
    """Gate scores, labels, per-head statistics and row entropy (see the module docstring)."""

    name = "gates"
    title = "Attention gates"
    order = 20
    reads = frozenset({"A"})
    Options = GatesOptions
    tables = ("gates", "row_entropy")
    stream_options = frozenset({"window", "coverage", "iterations"})
    definitions = (
        (
            "Gate scores (bertgeom's operational definitions of the paper's seven gates)",
            "Per genome and head, with n real tokens, [CLS] first and [SEP] last, w the "
            "contextual window, m the mean attention mass on content keys, s₁²/Σs² the share of "
            "the largest singular value of the attention restricted to content keys and p the "
            "key profile (mass each content key receives, normalised). The profile variability "
            "v across the G genomes of a class is their Jensen-Shannon divergence over its upper "
            "bound. The cluster score is the reciprocal attention R_ij = √(A_ij A_ji) sitting in "
            "contiguous blocks (found by dynamic programming) above a banded (Toeplitz) null T "
            "with the same distance profile, scaled by the reciprocity r = Σ R / n_rows. "
            "Numerical choices: PAD keys are dropped and each row renormalised over the real "
            "keys; the means run over the real query rows ([CLS]/[SEP] rows left out with "
            "drop_special); positions are those of the real tokens in order (PAD removed); ln n "
            "uses n ≥ 2; s₁ is the top singular value of the bidiagonal matrix of the run's "
            "Lanczos steps (full reorthogonalisation, started from the all-ones vector); v is 0 "
            "with fewer than two genomes or when min(ln G, H(p̄)) ≤ 1e-12, and clipped to [0, 1]; "
            "the cluster score is 0 when 1 − T(inside) ≤ 1e-6, clipped to [0, 1], and r is "
            "clipped at 1; a class's scores are means over its genomes (NaN with none).",
            "closed = mean_i (A_i,CLS + A_i,SEP)\n"
            "open = mean_i H(A_i) / ln n,   H(a) = −Σ_j a_j ln a_j\n"
            "backward = mean_i Σ_{k=1..w} A_i,i−k,   forward = mean_i Σ_{k=1..w} A_i,i+k\n"
            "focus = m · s₁²/Σs² · (1 − exp(H(p)) / n_keys)\n"
            "v = [H(p̄) − mean_g H(p_g)] / min(ln G, H(p̄))\n"
            "directional = mean_g focus_g · (1 − v),   instance = mean_g m_g · v\n"
            "cluster = r · gain / (1 − T(inside)),   gain = Σ_blocks [S(B×B) − T(B×B)],  S = R/ΣR",
        ),
        (
            "Gate label",
            "A head's label is the gate whose score exceeds its threshold t by the largest share "
            "of the room above it (the first gate in the order closed, open, backward, forward, "
            "directional, instance, cluster on a tie); “mixed” when no score reaches its "
            "threshold, “empty” for a class without genomes. The thresholds are listed with the "
            "run's parameters.",
            "label = argmax_g (score_g − t_g) / (1 − t_g)  over gates with score_g ≥ t_g",
        ),
        (
            "Per-head statistics",
            "Attention to [CLS] and to [SEP] (mean mass), mean attention distance in tokens, and "
            "the metastable-state size k (Ramsauer et al. 2020): the fewest keys whose mass "
            "reaches the coverage c less a rounding tolerance of 1e-6, per row (0 for a row "
            "without mass, at most the keys with mass), averaged over the query rows.",
            "distance_i = Σ_j A_ij |i − j|,   k_i = min{k : sum of the k largest A_ij ≥ c − 1e-6}",
        ),
        (
            "Row entropy",
            "Shannon entropy of each attention row over the real keys (rows renormalised), "
            "averaged over the query rows of a genome ([CLS]/[SEP] rows left out with "
            "drop_special) and divided by its maximum ln n (n real tokens; 0 when n < 2); the "
            "table holds its mean over a class's genomes.",
            "row entropy = mean_i H(A_i) / ln n,   H(a) = −Σ_j a_j ln a_j",
        ),
    )

    def __init__(self, info: RunInfo, options: Any = None) -> None:
        super().__init__(info, options)
        self.stats = Sums()  # per layer: {field}_{layer}, buckets first
        self.rows = Rows()
        self._kernel = self.options.gate_options(info.drop_special)
        self._right_padded: bool | None = None
        self._layers: dict[int, LayerMeasures] = {}
        self._cluster: dict[int, torch.Tensor] = {}
        self._held: list[tuple[int, ClusterParts]] = []
        self._buffer: torch.Tensor | None = None  # reciprocal attention of the held layers
        self._work: torch.Tensor | None = None  # the renormalised maps of one layer

    # stream -------------------------------------------------------------------------
    def begin_batch(self, batch: BatchInfo) -> None:
        self.abort_batch()
        self._right_padded = is_right_padded(batch.mask)  # the batch's one host sync

    def update(self, layer: int, view: Any, batch: BatchInfo) -> None:
        attn = view.A
        b, h, p = attn.shape[0], attn.shape[1], max(attn.shape[-1] - 1, 0)
        dtype = torch.promote_types(attn.dtype, torch.float32)
        per_layer = b * h * p * p * dtype.itemsize
        group = max(1, min(self.info.n_layers, self._hold_bytes(attn.device) // max(per_layer, 1)))
        shape = (b, group * h, p, p)
        if not _fits(self._buffer, shape, dtype):
            self._buffer = None  # dropped before the new one is made (GPU memory)
            self._buffer = torch.empty(shape, dtype=dtype, device=attn.device)
        buffer = self._buffer
        slot = len(self._held)
        out = buffer[:, slot * h : (slot + 1) * h]
        if not _fits(self._work, tuple(attn.shape), dtype):
            self._work = None
            self._work = torch.empty(attn.shape, dtype=dtype, device=attn.device)
        work = self._work
        lm = layer_measures(
            attn, view.mask, self._kernel, self._right_padded, recip_out=out, work=work
        )
        self._layers[layer] = lm
        self._held.append((layer, lm.parts))
        if len(self._held) == group:
            self._solve()

    def end_batch(self, batch: BatchInfo) -> None:
        self._solve()
        if not self._layers:
            return
        assert batch.buckets is not None
        order = sorted(self._layers)
        ours = [self._layers[k] for k in order]
        cluster = MEASURES.index("cluster")
        measures = torch.stack([lm.measures for lm in ours])  # (layer, batch, measure, head)
        measures[:, :, cluster] = torch.stack([self._cluster[k] for k in order]).to(measures)
        per_genome = {
            "n_genomes": torch.ones((len(ours), batch.size), device=measures.device),
            "sums": measures,
            "profile_sum": torch.stack([lm.profile for lm in ours]),
            "profile_entropy_sum": torch.stack([lm.profile_entropy for lm in ours]),
            "n_profiles": torch.stack([lm.has_profile for lm in ours]),
        }
        n = self.info.n_buckets
        for name, value in per_genome.items():
            self.stats.index_add(name, 1, batch.buckets, value.double(), n)
        self.rows.append("row_entropy", torch.stack([lm.row_entropy for lm in ours], 1))
        self.abort_batch()

    def abort_batch(self) -> None:
        self._layers, self._cluster, self._held = {}, {}, []

    def _solve(self) -> None:
        """The cluster scores of the held layers, in one dynamic programme."""
        if not self._held:
            return
        held, self._held = self._held, []
        heads = [p.reciprocity.shape[1] for _, p in held]
        parts = held[0][1]
        if len(held) > 1:  # the layers' R are consecutive slices of the one buffer
            assert self._buffer is not None
            small = ClusterParts.cat([replace(p, recip=p.recip[:, :0]) for _, p in held])
            parts = replace(small, recip=self._buffer[:, : sum(heads)])
        for (layer, _), score in zip(held, cluster_from_parts(parts).split(heads, 1), strict=True):
            self._cluster[layer] = score

    @staticmethod
    def _hold_bytes(device: torch.device) -> int:
        """Reciprocal attention held before the cluster programme runs (at least one layer).
        Each run costs ``pos`` sequential steps of small operations whatever it holds, so
        fewer, larger runs win: on a GPU up to a quarter of its memory, on the CPU up to
        :data:`CPU_HOLD_BYTES` (4 layers of ``small`` at batch 16 in one run: 1.6x faster
        than a run per layer). The held layers write R into consecutive slices of one buffer,
        kept from batch to batch while the batch shape stays (no copy, no new allocation)."""
        if device.type == "cuda":
            return torch.cuda.get_device_properties(device).total_memory // 4
        return CPU_HOLD_BYTES

    # output -------------------------------------------------------------------------
    def finish(self, genomes: Genomes) -> dict[str, pd.DataFrame]:
        self._buffer = self._work = None  # the stream is over
        return {
            "gates": self._gates_table(genomes.all_genomes),
            "row_entropy": self._row_entropy_table(genomes),
        }

    def _gates_table(self, all_genomes: bool) -> pd.DataFrame:
        """Gate scores, label and per-head statistics per (layer, head, class and 'all')."""
        first = self.stats.get("sums")
        if first is None:
            return pd.DataFrame()
        groups = bucket_groups(self.info, all_genomes)
        names = self.info.classes
        thresholds = self.options.gate_thresholds()
        merged_all = {f: merge_buckets(self.stats.get(f), groups, dim=1) for f in _STATS}
        rows = []
        for layer in range(first.shape[0]):
            s = gate_scores(GateStats(*(merged_all[f][layer] for f in _STATS)))
            per_class = [
                (names[c], s.values[:, c], s.head_stats[:, c], s.variability[c])
                for c in range(len(names))
            ]
            for cls, values, hstats, var in [
                *per_class,
                ("all", s.pooled, s.pooled_head_stats, s.pooled_variability),
            ]:
                labels = label_heads(values, thresholds)
                for h in range(values.shape[-1]):
                    row: dict[str, Any] = {"layer": layer, "head": h, "class": cls}
                    row.update({g: float(values[i, h]) for i, g in enumerate(GATES)})
                    row["label"] = str(labels[h])
                    row.update({k: float(hstats[i, h]) for i, k in enumerate(HEAD_STATS)})
                    row["variability"] = float(var[h])
                    rows.append(row)
        return pd.DataFrame(rows)

    def _row_entropy_table(self, genomes: Genomes) -> pd.DataFrame:
        """Mean normalised attention row entropy per (layer, head, class) over the included
        genomes."""
        v = self.rows.get("row_entropy")  # (genome, layer, head)
        if v is None:
            return pd.DataFrame()
        rows = []
        for c, name in enumerate(self.info.classes):
            sel = genomes.included & (genomes.labels == c)
            if not sel.any():
                continue
            m = v[sel].mean(0)
            rows += [
                {"layer": la, "head": h, "class": name, "row_entropy": float(m[la, h])}
                for la in range(m.shape[0])
                for h in range(m.shape[1])
            ]
        return pd.DataFrame(rows)

    def figures(self, tables: Mapping[str, Any], context: Any) -> Iterator[tuple[str, Any]]:
        from bertgeom.plots import geometry as g

        gates = tables.get("gates")
        if gates is None or gates.empty:
            return
        yield "gate_grid", g.gate_grid(gates, "all")
        yield "gate_scores", g.gate_scores_figure(gates, "all")
        entropy = tables.get("row_entropy")
        if entropy is not None and not entropy.empty:
            yield "entropy_k", g.entropy_k_distributions(gates, entropy)

    @classmethod
    def section(cls, run: Any) -> Any:
        from bertgeom.report.geometry_sections import gates_section

        return gates_section(run)

    @classmethod
    def findings(cls, run: Any) -> list[str]:
        from bertgeom.report import findings

        return [findings.gate_finding(run.analyze.table("gates")) or ""]

    @classmethod
    def parameters(cls, options: Mapping[str, Any]) -> list[tuple[str, Any, str]]:
        """The options the run used, the thresholds one row per gate (overridden or not)."""
        defaults = options_dict(cls.Options())
        out = []
        for f in fields(cls.Options):
            if f.name == "thresholds":
                given = parse_thresholds(str(options.get("thresholds", "")))
                base = GateThresholds()
                for g in GATES:
                    value = getattr(given, g)
                    source = "analyze config" if value != getattr(base, g) else "default"
                    out.append((f"{g} threshold", value, source))
                continue
            value = options.get(f.name, defaults[f.name])
            source = "analyze config" if value != defaults[f.name] else "default"
            out.append((f.metadata.get("label", f.name), value, source))
        return out
