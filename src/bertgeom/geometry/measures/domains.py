"""Attention to the spike protein domains: the paper's z-test and a genome-level t-test
(science.md §6; the mathematics in :mod:`bertgeom.geometry.domains`).

Per layer, the attention mass that content query rows give to the keys of each domain, the mass
they give to all content keys, the domain's content tokens, and per genome the excess of its
attention share over its token share (sum and sum of squares) are kept per bucket (class if
correctly classified, else n_classes + class) in float64 :class:`Sums`, so the merge of two
streams is their sum. The attention is read once per layer as two batched matrix-vector
products (the content rows' column sums, :func:`~bertgeom.geometry.domains.content_key_mass`);
the token-to-domain membership is built once per batch. Table ``domains``: one row per layer,
class, head and domain.

Intended difference from the previous engine (issue 14 item 6): the genome-level t-test is made
only where the per-genome excess is resolved: its standard deviation s_e and its mean ē both
above ``δ = 1e-5 x`` the cell's attention share
(:data:`~bertgeom.geometry.domains.SHARE_RESOLUTION`, about 84 float32 units in the last place).
Near-clonal genomes whose excess is float32 rounding gave |t| up to 1e6 and were called
significant; those cells now have t and p_genome NaN and significant_genome False. Everything
else equals the previous engine to float32 rounding (the content rows' key mass is summed in
another order: attention shares within 3e-7 relative, z within 3e-6 absolute on the golden
model).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from bertgeom.geometry.domains import (
    SHARE_RESOLUTION,
    DomainStats,
    domain_enrichment,
    genome_domain_stats,
    position_membership,
)
from bertgeom.geometry.measures import register
from bertgeom.geometry.measures.base import (
    BatchInfo,
    Genomes,
    Measure,
    RunInfo,
    Sums,
    bucket_groups,
    merge_buckets,
)

#: Fields of DomainStats that depend on the layer (kept per layer); the others (tokens,
#: n_tokens, genomes) only on the genomes.
_PER_LAYER = ("attention", "content_attention", "excess_sum", "excess_sq")
_PER_GENOME = ("tokens", "n_tokens", "genomes")


@register
class Domains(Measure):
    """Attention share against token share per spike domain (see the module docstring)."""

    name = "domains"
    title = "Domain enrichment"
    order = 40
    reads = frozenset({"A"})
    needs_domains = True
    tables = ("domains",)

    @dataclass(frozen=True)
    class Options:
        """Options of the ``domains`` measure."""

        alpha: float = field(
            default=0.05,
            metadata={
                "help": "family-wise error rate of the z-test and the genome-level t-test, split "
                "over layers x heads (Bonferroni)",
                "label": "significance level α (before Bonferroni)",
            },
        )

        def __post_init__(self) -> None:
            if not (math.isfinite(self.alpha) and 0.0 < self.alpha < 1.0):
                raise ValueError(f"alpha must lie in (0, 1), got {self.alpha}")

    definitions = (
        (
            "Domain enrichment (after Vig et al. 2021)",
            "Per (layer, class, head, domain): the share of the attention that content query "
            "rows give to content keys in the domain (each row renormalised over the real keys) "
            "against the domain's share of content tokens, tested with a two-proportion z-test "
            "(x1 attention mass on the domain out of n1 attention mass on content keys; x2 "
            "domain tokens out of n2 content tokens), two-sided, Bonferroni-corrected over "
            "layers × heads. A token belongs to every domain its residues overlap; tokens in no "
            "leaf domain count as “no domain”. [CLS] and [SEP] are never content, whatever "
            "drop_special says. The z-test counts every token of every genome as an observation.",
            "z = (p1 − p2) / √(p̂ (1 − p̂) (1/n1 + 1/n2)),  p̂ = (x1 + x2) / (n1 + n2),  "
            "significant: p < α / (layers × heads)",
        ),
        (
            "Genome-level domain test",
            "The genome is the unit: each genome's excess e_g (its own attention share minus "
            "its own token share of the domain); a one-sample t-test of mean e = 0 over the "
            "class's genomes, two-sided, n − 1 degrees of freedom, at the same Bonferroni level. "
            "Guards: no test below 2 genomes; none unless the sample standard deviation s_e and "
            f"the mean ē both exceed the resolution δ = {SHARE_RESOLUTION:g} × the cell's pooled "
            "attention share p1 (about 84 float32 units in the last place: genomes whose "
            "excesses agree to 5 significant digits are one observation, not n, and a mean "
            "excess below δ is float32 rounding of the attention maps); none when Σe² − n ē² is "
            "at most 1e-10 ē² (float64 cancellation). Such cells have no t (NaN) and are not "
            "significant.",
            "t = ē / (s_e / √n),  e_g = share_g(attention) − share_g(tokens),  "
            f"tested only if s_e > δ and |ē| > δ,  δ = {SHARE_RESOLUTION:g} · p1",
        ),
    )

    def __init__(self, info: RunInfo, options: Any = None) -> None:
        super().__init__(info, options)
        self.sums = Sums()
        self._layers: list[dict[str, torch.Tensor]] = []
        self._member: torch.Tensor | None = None

    def begin_batch(self, batch: BatchInfo) -> None:
        if self.info.domains is None:
            raise ValueError("the domains measure needs the token-domain map (RunInfo.domains)")
        self._layers = []
        self._member = position_membership(batch.mask, self.info.domains)

    def update(self, layer: int, view: Any, batch: BatchInfo) -> None:
        self._layers.append(
            genome_domain_stats(view.A, batch.mask, self.info.domains, self._member)
        )

    def end_batch(self, batch: BatchInfo) -> None:
        layers, self._layers = self._layers, []
        if not layers:
            return
        assert batch.buckets is not None
        n = self.info.n_buckets
        for f in _PER_LAYER:  # (layer, genome, ...) -> (layer, bucket, ...)
            self.sums.index_add(f, 1, batch.buckets, torch.stack([x[f] for x in layers]), n)
        for f in _PER_GENOME:
            self.sums.index_add(f, 0, batch.buckets, layers[0][f], n)

    def abort_batch(self) -> None:
        self._layers = []

    def finish(self, genomes: Genomes) -> dict[str, pd.DataFrame]:
        if self.sums.get("attention") is None:
            return {}
        groups = bucket_groups(self.info, genomes.all_genomes)
        per_layer = {f: merge_buckets(self.sums.values[f], groups, 1) for f in _PER_LAYER}
        shared = {f: merge_buckets(self.sums.values[f], groups, 0) for f in _PER_GENOME}
        names = self.info.domains.names
        stats = [
            DomainStats(
                names,
                attention=per_layer["attention"][layer],
                content_attention=per_layer["content_attention"][layer],
                tokens=shared["tokens"],
                n_tokens=shared["n_tokens"],
                genomes=shared["genomes"],
                excess_sum=per_layer["excess_sum"][layer],
                excess_sq=per_layer["excess_sq"][layer],
            )
            for layer in range(per_layer["attention"].shape[0])
        ]
        return {"domains": domains_table(stats, self.info.classes, self.options.alpha)}

    def figures(self, tables: Mapping[str, Any], context: Any) -> Iterator[tuple[str, Any]]:
        from bertgeom.plots import geometry as g

        table = tables.get("domains")
        if table is None or table.empty:
            return
        for cls in context.classes:
            if (table["class"] == cls).any():
                yield f"domains_{cls}", g.domain_share_heatmap(table, cls)

    @classmethod
    def section(cls, run: Any) -> Any:
        from bertgeom.report.geometry_sections import domains_section

        return domains_section(run)

    @classmethod
    def findings(cls, run: Any) -> list[str]:
        from bertgeom.report import findings

        s = findings.domain_finding(run.analyze.table("domains"))
        return [s] if s else []


def domains_table(stats: list[DomainStats], classes: tuple[str, ...], alpha: float) -> pd.DataFrame:
    """Attention share vs token share per (layer, class, head, domain): the paper's proportions
    z-test and the genome-level t-test, both at the Bonferroni level (docs/formats.md)."""
    e = domain_enrichment(stats, alpha=alpha)
    idx = np.argwhere(np.ones(tuple(e.z.shape), dtype=bool))
    return pd.DataFrame({
        "layer": idx[:, 0], "class": np.asarray(classes)[idx[:, 1]], "head": idx[:, 2],
        "domain": np.asarray(e.names)[idx[:, 3]],
        "attention_share": e.attention_share.cpu().numpy().reshape(-1),
        "token_share": e.token_share.cpu().numpy()[idx[:, 1], idx[:, 3]],
        "z": e.z.cpu().numpy().reshape(-1), "p_value": e.p_value.cpu().numpy().reshape(-1),
        "significant": e.significant.cpu().numpy().reshape(-1),
        "excess": e.excess.cpu().numpy().reshape(-1), "t": e.t.cpu().numpy().reshape(-1),
        "p_genome": e.p_genome.cpu().numpy().reshape(-1),
        "significant_genome": e.significant_genome.cpu().numpy().reshape(-1),
    })  # fmt: skip
