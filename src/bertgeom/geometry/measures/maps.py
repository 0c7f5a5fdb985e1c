"""Class-mean attention maps, the kept maps of a few genomes, and the attention rollout.

Stream: per layer, head, bucket (class if correctly classified, else n_classes + class), query
and key position, the sum of the attention maps with PAD query rows left out (HF's softmax leaves
them in place), and per bucket and query position the number of genomes whose position is real;
both in :class:`Sums` (float32 maps, float64 counts), which grow with the widest batch (zero
padding: a narrower batch adds to the top-left block), so the mean map does not depend on how
genomes of different lengths are batched and the merge of two streams is their sum. The layers'
maps are held by reference until the batch's predictions give the buckets (no copy for a float32
model), then added one layer at a time through one reused scratch map (PAD rows zeroed) and an
``index_add_`` into the contiguous per-layer sum; nothing is copied to the host inside a batch
(which genomes are kept is read before the forward pass). Besides, the full maps (every layer
and head, PAD query rows zeroed, float16) of the ``keep`` first genomes of each class in stream
order, one array per genome (the merge appends them).

``finish`` divides the sums into the class means once and uses them for everything: the arrays
``maps`` (``maps.npz``/``maps.json``: class_mean float16, classes; genome_maps, genome_lengths,
genome_ids, genome_classes), the table ``rollout`` (where [CLS] finally reads from, by spike
domain: the attention rollout of each class's mean maps; only with the token-domain map) and the
figures ``attention_<class>`` (last layer, heads averaged; aligned tokens only).

Equal to the previous engine (the same sums in the same order); ``genome_lengths`` now counts the
real positions of the genome's mask instead of the non-zero rows of its float16 map (the same
number: a real row sums to 1).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from bertgeom.geometry.domains import (
    TokenDomains,
    attention_rollout,
    cls_domain_readout,
    position_membership,
)
from bertgeom.geometry.masking import content_mask
from bertgeom.geometry.measures import register
from bertgeom.geometry.measures.base import (
    Arrays,
    BatchInfo,
    Genomes,
    Measure,
    RunInfo,
    Sums,
    bucket_groups,
    merge_buckets,
)
from bertgeom.geometry.threads import map_chunks

#: What each array of ``maps.npz`` holds (``maps.json``).
DESCRIBE = {
    "class_mean": "(layer, head, class, q_pos, k_pos) float16",
    "genome_maps": "(genome, layer, head, q_pos, k_pos) float16; PAD rows and columns 0",
    "genome_lengths": "(genome,) int32 real positions of each genome's maps",
    "genome_ids": "(genome,) ids of the genomes in genome_maps",
    "genome_classes": "(genome,) their true classes",
    "classes": "(class,) the class dimension of class_mean",
}


def _add_by_genome(total: Tensor, held: list[Tensor], mask: Tensor, buckets: list[int]) -> None:
    """CPU: ``total[layer, head, bucket]`` += each genome's real query rows of ``held[layer]``
    (batch, head, q, k), the heads split among torch's threads (disjoint parts of ``total``).

    A genome's maps are added in place, row block by row block: the real query rows when they
    are a prefix (right padding), else the map with its PAD rows zeroed. No batch-sized
    product or padded copy (for ``base`` 140 MB per layer): the same sums as ``index_add_``
    over the masked batch, added in the same genome order.
    """
    p = held[0].shape[-1]
    n = mask.sum(1)
    prefix = (mask == (torch.arange(p) < n[:, None])).all(1).tolist()
    n_real = n.tolist()

    def heads(lo: int, hi: int) -> None:
        for layer, maps in enumerate(held):
            part = total[layer, lo:hi]  # (head, bucket, width, width)
            for g, bucket in enumerate(buckets):
                a, out = maps[g, lo:hi], part[:, bucket, :p, :p]
                if prefix[g]:
                    out[:, : n_real[g]].add_(a[:, : n_real[g]])
                else:
                    out.add_(a * mask[g, None, :, None])

    map_chunks(heads, total.shape[1])


@register
class Maps(Measure):
    """Class-mean and kept attention maps, attention rollout (see the module docstring)."""

    name = "maps"
    title = "Attention maps"
    order = 60
    reads = frozenset({"A"})
    tables = ("maps", "rollout")
    stream_options = frozenset({"keep"})

    @dataclass(frozen=True)
    class Options:
        """Options of the ``maps`` measure."""

        keep: int = field(
            default=1,
            metadata={
                "help": "genomes per class (the first in stream order) whose full attention "
                "maps are written to maps.npz",
                "label": "genomes per class with full maps kept",
            },
        )
        rollout_residual: float = field(
            default=0.5,
            metadata={
                "help": "weight of the identity in the attention rollout (0.5 in Abnar & "
                "Zuidema 2020)",
                "label": "rollout identity weight",
            },
        )

        def __post_init__(self) -> None:
            if self.keep < 0:
                raise ValueError(f"keep must be 0 or more, got {self.keep}")
            r = self.rollout_residual
            if not (math.isfinite(r) and 0.0 <= r <= 1.0):
                raise ValueError(f"rollout_residual must lie in [0, 1], got {r}")

    definitions = (
        (
            "Class-mean attention map",
            "Per layer, head and class, the attention maps of the class's genomes (correctly "
            "classified ones unless all genomes are analysed) averaged position by position: "
            "query row q is averaged over the genomes whose position q is real (PAD query rows "
            "left out; PAD keys get no attention), so genomes of different lengths share their "
            "common positions ([CLS] at 0). Sums in float32, written as float16. The figure "
            "shows the last layer, heads averaged, on a logarithmic colour scale (weights below "
            "1e-4 of the maximum share the lowest colour).",
            "Ā_c[q, k] = Σ_{g ∈ c, q real in g} A_g[q, k] / #{g ∈ c : q real in g}",
        ),
        (
            "Attention rollout (Abnar and Zuidema 2020)",
            "Of each class's mean maps: heads averaged, the identity added with weight r "
            "(rollout_residual, default 0.5) on the positions real in some genome of the class, "
            "rows renormalised, and the layers multiplied (float64); the [CLS] row of the "
            "product mapped to spike domains: the share of its content-key weight on each "
            "domain, beside the domain's share of content tokens, and its weight on [CLS] and "
            "[SEP] themselves.",
            "Â_l = (1 − r) mean_h Ā_l,h + r I  (rows renormalised),  R = Â_L ⋯ Â_1",
        ),
    )

    def __init__(self, info: RunInfo, options: Any = None) -> None:
        super().__init__(info, options)
        self.sums = Sums()  # map_sum (layer, head, bucket, q, k), map_count (bucket, q)
        self._kept_maps: list[np.ndarray] = []  # (layer, head, q, k) float16 per kept genome
        self._kept_lengths: list[int] = []  # real positions of each
        self._kept_at: list[int] = []  # stream index of each (from this stream's start)
        self._n_seen = 0  # genomes of the finished batches
        self._held: list[Tensor] = []  # this batch's maps, per layer
        self._kept_idx: Tensor | None = None  # this batch's kept genomes (None: none)
        self._kept_at_batch: list[int] = []  # the same, on the host
        self._kept_layers: list[Tensor] = []  # their maps, per layer
        self._mean: np.ndarray | None = None  # class means, once finished
        self._buffer: Tensor | None = None  # scratch: one layer's maps, PAD query rows zeroed

    # ------------------------------------------------------------------ stream
    def begin_batch(self, batch: BatchInfo) -> None:
        self.abort_batch()
        kept = torch.nonzero(batch.keep_maps.cpu()).flatten()  # before the forward pass
        self._kept_at_batch = kept.tolist()
        self._kept_idx = kept.to(batch.mask.device) if len(kept) else None

    def update(self, layer: int, view: Any, batch: BatchInfo) -> None:
        self._held.append(view.A)  # a reference: summed once the buckets are known
        if self._kept_idx is not None:  # PAD query rows (left by HF's softmax) zeroed
            real = batch.mask[self._kept_idx][:, None, :, None]
            self._kept_layers.append((view.A[self._kept_idx] * real).half())

    def end_batch(self, batch: BatchInfo) -> None:
        held, self._held = self._held, []
        kept, self._kept_layers = self._kept_layers, []
        if held:
            assert batch.buckets is not None
            self._add_maps(held, batch.mask, batch.buckets)
        if kept and self._kept_idx is not None:
            maps = torch.stack(kept, 1).cpu().numpy()  # (kept, layer, head, q, k)
            lengths = batch.mask[self._kept_idx].sum(-1).cpu().tolist()
            self._kept_maps.extend(maps[i] for i in range(len(maps)))
            self._kept_lengths.extend(int(n) for n in lengths)
            self._kept_at.extend(self._n_seen + i for i in self._kept_at_batch)
        self._kept_idx = None
        self._n_seen += batch.size

    def _add_maps(self, held: list[Tensor], mask: Tensor, buckets: Tensor) -> None:
        """Add the batch's maps (per layer) to the per-bucket sums, PAD query rows left out."""
        n_layers, (_, n_heads, p, _) = len(held), held[0].shape
        total = self.sums.get("map_sum")
        width = p if total is None else max(p, total.shape[-1])
        shape = (n_layers, n_heads, self.info.n_buckets, width, width)
        if total is None or tuple(total.shape) != shape:  # first batch, or a wider one
            grown = torch.zeros(shape, dtype=torch.float32, device=held[0].device)
            if total is not None:
                q = total.shape[-1]
                grown[..., :q, :q] = total
            self.sums.values["map_sum"] = total = grown
        buckets = buckets.to(held[0].device)
        if held[0].device.type == "cpu":
            _add_by_genome(total, held, mask, buckets.tolist())
        else:
            real = mask.to(torch.float32)[:, None, :, None]  # (batch, 1, q, 1)
            buf = self._buffer
            if buf is None or buf.shape != held[0].shape or buf.device != held[0].device:
                # one scratch map reused by every layer and batch of this width (a fresh
                # map-sized tensor per layer costs more than the multiplication)
                self._buffer = buf = torch.empty_like(held[0], dtype=torch.float32)
            for layer in range(n_layers):  # (head, bucket, q, k) += (head, batch, q, k)
                torch.mul(held[layer], real, out=buf)
                pad = (0, width - p, 0, width - p)
                src = buf if p == width else torch.nn.functional.pad(buf, pad)
                total[layer].index_add_(1, buckets, src.transpose(0, 1))
        rows = torch.nn.functional.pad(mask.double(), (0, width - p))  # (batch, q)
        self.sums.index_add("map_count", 0, buckets, rows, self.info.n_buckets)

    def abort_batch(self) -> None:
        self._held, self._kept_layers, self._kept_idx = [], [], None

    # ------------------------------------------------------------------ state
    def extra_state(self) -> dict[str, Any]:
        return {
            "kept_maps": list(self._kept_maps),
            "kept_lengths": np.asarray(self._kept_lengths, dtype=np.int64),
            "kept_at": np.asarray(self._kept_at, dtype=np.int64),
            "n_seen": self._n_seen,
        }

    def load_extra_state(self, state: Mapping[str, Any]) -> None:
        self._kept_maps = [np.asarray(m) for m in state.get("kept_maps", [])]
        self._kept_lengths = [int(n) for n in state.get("kept_lengths", [])]
        self._kept_at = [int(i) for i in state.get("kept_at", [])]
        self._n_seen = int(state.get("n_seen", 0))

    def merge(self, other: Measure) -> None:
        super().merge(other)
        assert isinstance(other, Maps)
        self._kept_maps += other._kept_maps
        self._kept_lengths += other._kept_lengths
        self._kept_at += [self._n_seen + i for i in other._kept_at]
        self._n_seen += other._n_seen

    # ------------------------------------------------------------------ output
    def finish(self, genomes: Genomes) -> dict[str, Any]:
        self._buffer = None
        total, count = self.sums.get("map_sum"), self.sums.get("map_count")
        out: dict[str, Any] = {}
        arrays: dict[str, np.ndarray] = {"classes": np.asarray(self.info.classes)}
        self._mean = None
        if total is not None and count is not None:
            groups = bucket_groups(self.info, genomes.all_genomes)
            n = merge_buckets(count, groups, 0)  # (class, q) genomes with position q real
            mean = merge_buckets(total, groups, 2) / n.float().clamp(min=1)[None, None, :, :, None]
            self._mean = mean.numpy()  # (layer, head, class, q, k) float32, built once
            arrays["class_mean"] = self._mean.astype(np.float16)
            if self.info.domains is not None:
                out["rollout"] = rollout_table(
                    mean,
                    n > 0,
                    self.info.classes,
                    self.info.domains,
                    self.options.rollout_residual,
                )
        if self._kept_maps:
            width = max(m.shape[-1] for m in self._kept_maps)
            arrays["genome_maps"] = np.stack(
                [
                    np.pad(m, ((0, 0), (0, 0), (0, width - m.shape[-2]), (0, width - m.shape[-1])))
                    for m in self._kept_maps
                ]
            )
            # real positions of each genome's maps ([CLS] + tokens + [SEP]); rows past it are 0
            arrays["genome_lengths"] = np.asarray(self._kept_lengths, dtype=np.int32)
            at = np.asarray(self._kept_at, dtype=np.int64)
            arrays["genome_ids"] = np.asarray(genomes.ids)[at].astype(str)  # no pickle to load
            arrays["genome_classes"] = np.asarray(self.info.classes)[genomes.labels[at]]
        if "class_mean" in arrays or "genome_maps" in arrays:
            out["maps"] = Arrays(arrays, dict(DESCRIBE))
        return out

    def figures(self, tables: Mapping[str, Any], context: Any) -> Iterator[tuple[str, Any]]:
        from bertgeom.plots import geometry as g
        from bertgeom.resources import protein_domains
        from bertgeom.tokens.kmers import token_residues

        spec = getattr(context, "spec", None)
        if spec is None or spec.mode != "aligned":  # text, or raw k-mers: no fixed residues
            return
        mean = self._mean
        if mean is None and isinstance(tables.get("maps"), Arrays):
            mean = tables["maps"].arrays.get("class_mean")
        if mean is None:
            return
        residues = token_residues(context.spec, mean.shape[-1] - 2)
        domains = protein_domains()
        last = mean.shape[0] - 1
        for c, cls in enumerate(context.classes):
            m = mean[last, :, c].mean(0)  # last layer, heads averaged
            if m.sum() > 0:
                title = f"{cls}: class-mean attention, layer {last}, heads averaged"
                yield f"attention_{cls}", g.attention_heatmap(m, residues, domains, title)

    @classmethod
    def section(cls, run: Any) -> Any:
        from bertgeom.report.geometry_sections import attention_section

        return attention_section(run)


def rollout_table(
    mean: Tensor,
    real: Tensor,
    classes: tuple[str, ...],
    domains: TokenDomains,
    residual: float = 0.5,
) -> pd.DataFrame:
    """Where [CLS] finally reads from, by spike domain: the attention rollout (Abnar & Zuidema
    2020; ``domains.attention_rollout``, identity weight ``residual``) of each class's mean maps
    over all layers, its [CLS] row mapped to domains (``domains.cls_domain_readout``), beside
    each domain's share of the content tokens.

    Parameters
    ----------
    mean : (layer, head, class, q, k) class-mean maps
    real : (class, q) bool, positions real in some genome of the class
    classes : class names
    domains : the token-domain map
    residual : the identity's weight

    Returns
    -------
    DataFrame with columns class, domain, rollout_share, token_share, special (the [CLS] row's
    weight on [CLS] and [SEP] themselves); classes without genomes are left out
    """
    rows = []
    for c, name in enumerate(classes):
        if not bool(real[c].any()):
            continue
        mask = real[c : c + 1]
        r = attention_rollout(mean[:, :, c].double()[None], mask, residual)
        out = cls_domain_readout(r, mask, domains)
        content = content_mask(mask, True)[..., None]
        member = position_membership(mask, domains).double() * content
        tokens = (member.sum(1) / content.sum(1).clamp(min=1))[0]
        rows += [
            {"class": name, "domain": d, "rollout_share": float(out.share[0, i]),
             "token_share": float(tokens[i]), "special": float(out.special[0])}
            for i, d in enumerate(out.names)
        ]  # fmt: skip
    return pd.DataFrame(rows)
