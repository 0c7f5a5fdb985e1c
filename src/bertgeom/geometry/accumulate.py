"""Streaming accumulation of every measure over batches of genomes (science.md §3-6).

One :class:`GeometryAccumulator` is fed by :class:`~bertgeom.geometry.capture.Capture`: for
each batch, ``begin_batch(mask, labels)``, then ``on_layer`` per layer (called by the hooks
during the forward pass), then ``end_batch(buckets)`` once the model's predictions are known.
Class-level sums are first kept per genome of the batch and regrouped at ``end_batch`` into
*buckets*: ``class`` for correctly classified genomes, ``n_classes + class`` for the others, so
that statistics over correctly classified genomes (the paper's choice) and over all genomes both
come out of one pass. Everything is reduced on the model's device; only small per-genome values
(cone indices, asymmetries, entropies: layers x heads floats), the [CLS] and mean-pooled vectors
(layers x d_model) and the class-summed attention maps are kept. Spectra (SVDs) are computed for
a class-stratified subset of about ``spectra_genomes`` genomes (``_choose_spectra``: per class the
first correctly classified genomes in stream order, whatever the batch size). Every measure runs
in float32 with autocast off, whatever precision the forward pass used. Within a batch, the
cluster score's
prefix-sum tables (two (batch, head, pos+1, pos+1) float32 arrays per layer) are held until the
end of the forward pass, or until they reach ``cluster_hold_bytes`` (default: a quarter of the
GPU's memory, 1 GiB on CPU), and then solved in one dynamic programme for all layers held.
Likewise the gate statistics of several layers are computed in one call on their attention maps
stacked along the batch dimension (maps held up to ``gates_hold_bytes``: 1/128 of the GPU's
memory; on the CPU, which is not launch-bound, each layer alone), so on a GPU each of their ~800
operations is launched once per batch rather than once per layer (a 12-layer, 12-head model,
batch 4, gates only: 14,037 -> 7,064 operations).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from bertgeom.geometry.capture import LayerTensors, encoder_layers
from bertgeom.geometry.cone import cone_index
from bertgeom.geometry.direction import attention_asymmetry, score_directionality
from bertgeom.geometry.domains import DomainStats, TokenDomains, domain_stats
from bertgeom.geometry.gates import GateOptions, GateStats, add_cluster, gate_stats_and_parts
from bertgeom.geometry.segmentation import ClusterParts, cluster_from_parts
from bertgeom.geometry.spectra import (
    eigen_entropy_compat,
    histogram_entropy,
    row_entropy,
    spectrum,
)
from bertgeom.heap import append_batch

#: Stream points whose token rows get a per-genome cone index (Z and A per head).
CONE_POINTS = ("X", "C", "O", "U", "F", "Y")
#: What the spectra cover: per-head A and Z, and every whole-layer stream point.
SPECTRA_POINTS = ("A", "Z", *CONE_POINTS)
#: Values per spectra genome, layer and head, in this order (``compat``: NaN unless computed).
SPECTRA_VALUES = (
    "effective_rank", "stable_rank", "numerical_rank", "von_neumann",
    "histogram_entropy_compat", "eigen_entropy_compat",
)  # fmt: skip
FAMILIES = ("cone", "gates", "domains", "direction", "spectra", "embeddings", "maps")


@dataclass(frozen=True)
class AccumulatorOptions:
    """What to compute (``families``) and how."""

    families: tuple[str, ...] = FAMILIES
    gate_options: GateOptions = field(default_factory=GateOptions)
    drop_special: bool = False
    spectra_genomes: int = 64
    svd_driver: str | None = None
    histogram_bins: int = 60
    compat: bool = False  # the research code's entropies on the spectra subset
    cluster_hold_bytes: int | None = None  # None: a quarter of the GPU's memory, 1 GiB on CPU
    gates_hold_bytes: int | None = None  # None: 1/128 of the GPU's memory, 0 (alone) on CPU


@dataclass
class _Batch:
    mask: Tensor
    labels: Tensor
    spectra_rows: Tensor  # (batch,) bool, candidates for the spectra subset
    per_genome: dict[str, list[Tensor]]  # name -> per layer (batch, ...)
    stats: dict[str, list[Any]]  # gates / domains -> per layer, classes = batch genomes
    maps: list[Tensor]  # per layer (batch, head, q, k)
    spectra: dict[str, list[Tensor]]
    kept: Tensor  # (batch,) bool, genomes whose full maps are kept
    kept_maps: list[Tensor]  # per layer (kept, head, q, k)
    pooled: list[Tensor] = field(default_factory=list)  # per layer (batch, point, d) float64
    cluster_parts: list[ClusterParts] = field(default_factory=list)  # per layer
    gates_pending: list[Tensor] = field(default_factory=list)  # attention maps, per layer


#: The accumulator's fields that batches add to (saved by ``state_dict``).
_STATE = (
    "gates",
    "domain_stats",
    "map_sum",
    "map_count",
    "per_genome",
    "spectra",
    "spectra_buckets",
    "spectra_correct",
    "spectra_wrong",
    "spectra_seen",
    "kept_maps",
    "pooled_sum",
    "pooled_sq",
    "pooled_n",
    "n_done",
)
_STATE_CLASSES = {c.__name__: c for c in (GateStats, DomainStats)}
#: Families that read the attention probabilities.
ATTENTION_FAMILIES = ("gates", "domains", "direction", "maps")
_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _pack(v: Any) -> Any:
    """``v`` with dataclasses, numpy arrays and device tensors as tagged dicts of CPU tensors."""
    if isinstance(v, Tensor):
        return {"__tensor__": v.detach().cpu(), "cuda": v.is_cuda}
    if isinstance(v, np.ndarray):
        return {"__ndarray__": torch.from_numpy(np.ascontiguousarray(v))}
    if type(v).__name__ in _STATE_CLASSES and is_dataclass(v):
        return {"__class__": type(v).__name__} | {
            f.name: _pack(getattr(v, f.name)) for f in fields(v)
        }
    if isinstance(v, dict):
        return {k: _pack(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return type(v)(_pack(x) for x in v)
    return v


def _unpack(v: Any, device: torch.device) -> Any:
    """The inverse of ``_pack``; tensors that were on CUDA go to ``device``."""
    if isinstance(v, dict):
        if "__tensor__" in v:
            return v["__tensor__"].to(device) if v["cuda"] else v["__tensor__"]
        if "__ndarray__" in v:
            return v["__ndarray__"].numpy()
        if "__class__" in v:
            cls = _STATE_CLASSES[v["__class__"]]
            return cls(**{f.name: _unpack(v[f.name], device) for f in fields(cls)})
        return {k: _unpack(x, device) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return type(v)(_unpack(x, device) for x in v)
    return v


def _float32(x: Tensor | None) -> Tensor | None:
    """``x`` in float32 when it is float16 or bfloat16, else as it is."""
    return x.float() if x is not None and x.dtype in _LOW_PRECISION else x


def _rows(x: Any, rows: slice) -> Any:
    """A dataclass of tensors (nested dataclasses too) with every tensor cut to ``rows`` of its
    leading dimension (views)."""
    out = {}
    for f in fields(x):
        v = getattr(x, f.name)
        out[f.name] = v[rows] if isinstance(v, Tensor) else _rows(v, rows) if is_dataclass(v) else v
    return replace(x, **out)


def regroup(stats: Any, index: Tensor, n: int) -> Any:
    """Sum the leading (class) dimension of every tensor field of ``stats`` into ``n`` groups."""
    out = {}
    for f in fields(stats):
        v = getattr(stats, f.name)
        if isinstance(v, Tensor):
            z = torch.zeros((n, *v.shape[1:]), dtype=v.dtype, device=v.device)
            v = z.index_add(0, index.to(v.device), v)
        out[f.name] = v
    return replace(stats, **out)


class GeometryAccumulator:
    """Accumulates the geometry measures of a model over batches (see the module docstring)."""

    def __init__(
        self,
        model: Any,
        n_classes: int,
        domains: TokenDomains | None,
        options: AccumulatorOptions | None = None,
    ) -> None:
        self.options = options or AccumulatorOptions()
        if domains is None and self.wants("domains"):
            raise ValueError("the domains family needs the token-domain map (domains)")
        self.layers = encoder_layers(model)
        self.n_layers = len(self.layers)
        self.n_heads = self.layers[0].attention.self.num_attention_heads
        self.n_classes = n_classes
        self.n_buckets = 2 * n_classes
        self.domains = domains
        self.gates: list[GateStats | None] = [None] * self.n_layers
        self.domain_stats: list[DomainStats | None] = [None] * self.n_layers
        self.map_sum: Tensor | None = None  # (layer, head, bucket, q, k)
        # genomes per (bucket, query position) whose position is real (not PAD)
        self.map_count = torch.zeros((self.n_buckets, 0), dtype=torch.float64)
        self.per_genome: dict[str, list[np.ndarray]] = {}
        self.spectra: dict[str, list[np.ndarray]] = {}
        # bucket (class, or n_classes + class if misclassified) of each spectra genome
        self.spectra_buckets: list[np.ndarray] = []
        # spectra genomes kept per class, correctly classified and misclassified
        self.spectra_correct = np.zeros(n_classes, dtype=np.int64)
        self.spectra_wrong = np.zeros(n_classes, dtype=np.int64)
        self.spectra_seen = np.zeros(n_classes, dtype=np.int64)  # candidates considered
        self.kept_maps: list[np.ndarray] = []  # (layer, head, q, k) float16 per kept genome
        # per bucket, the sums of the mean-pooled vectors of every stream point (separability)
        self.pooled_sum: Tensor | None = None  # (layer, bucket, point, d_model) float64
        self.pooled_sq: Tensor | None = None  # (layer, bucket, point) Σ ||x||²
        self.pooled_n = torch.zeros(self.n_buckets, dtype=torch.float64)  # genomes per bucket
        self._batch: _Batch | None = None
        self._ending = False  # inside end_batch: the sums are being updated
        self.n_done = 0  # genomes of the finished batches
        self._pending: dict[str, int] = {}  # per-batch arrays trailing each per_genome list

    def wants(self, family: str) -> bool:
        """Whether ``family`` is computed."""
        return family in self.options.families

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict[str, Any]:
        """What the batches so far added up to, in tensors, lists, dicts and strings only (so
        ``torch.load(weights_only=True)`` reads it back), every tensor on the CPU. Between
        batches only: a resumed accumulator fed the remaining batches ends equal to one fed
        them all."""
        if self._batch is not None:
            raise RuntimeError("state_dict() inside a batch (between begin_batch and end_batch)")
        return {name: _pack(getattr(self, name)) for name in _STATE}

    def load_state_dict(self, state: dict[str, Any], device: str | torch.device = "cuda") -> None:
        """Restore ``state_dict()``'s result, all or nothing: tensors that were on a CUDA
        device go to ``device`` (the model's), the others stay on the CPU."""
        if self._batch is not None:
            raise RuntimeError("load_state_dict() inside a batch")
        missing = [name for name in _STATE if name not in state]
        if missing:
            raise ValueError(f"accumulator state lacks {missing}")
        values = {name: _unpack(state[name], torch.device(device)) for name in _STATE}
        for name, value in values.items():
            setattr(self, name, value)

    def abort_batch(self) -> bool:
        """Drop the batch in progress (an interrupted forward pass), so that ``state_dict`` is
        that of the batches finished; False when ``end_batch`` was interrupted or failed while
        adding the batch (the sums may hold part of it: the state is not whole)."""
        if self._ending:
            return False
        self._batch = None
        return True

    def _spectra_quota(self) -> int:
        return -(-self.options.spectra_genomes // max(self.n_classes, 1))

    #: A class stops offering spectra candidates after this many times its quota (a class the
    #: model seldom gets right would otherwise cost SVDs for every one of its genomes).
    SPECTRA_LOOK = 4

    def _spectra_open(self, c: Any = slice(None)) -> Any:
        """Whether class ``c`` (default: each class, a (class,) bool array) still looks for
        spectra genomes."""
        quota = self._spectra_quota()
        return (self.spectra_correct[c] < quota) & (
            self.spectra_seen[c] < self.SPECTRA_LOOK * quota
        )

    # ------------------------------------------------------------------ batch protocol
    def begin_batch(self, mask: Tensor, labels: Tensor, keep_maps: Tensor | None = None) -> None:
        """Start a batch: ``mask`` (batch, pos) bool, ``labels`` (batch,) true class ids,
        ``keep_maps`` (batch,) bool: genomes whose full attention maps are kept."""
        keep = torch.zeros(len(labels), dtype=torch.bool) if keep_maps is None else keep_maps
        keep = keep.to(mask.device)
        take = np.zeros(len(labels), dtype=bool)
        if self.wants("spectra"):  # candidates: every genome of a class whose subset is open
            take = self._spectra_open()[labels.cpu().numpy()]
        self._batch = _Batch(
            mask=mask.bool(),
            labels=labels,
            spectra_rows=torch.from_numpy(take),
            per_genome={},
            stats={"gates": [], "domains": []},
            maps=[],
            spectra={},
            kept=keep,
            kept_maps=[],
        )

    def on_layer(self, layer: int, t: LayerTensors) -> None:
        """Hook callback: reduce one layer of the current batch."""
        b = self._batch
        assert b is not None, "on_layer called outside begin_batch/end_batch"
        if t.A is None and any(self.wants(f) for f in ATTENTION_FAMILIES):
            raise RuntimeError(
                f"layer {layer}: the self-attention returned no attention probabilities, which "
                f"the {', '.join(f for f in ATTENTION_FAMILIES if self.wants(f))} measures read; "
                "load the model with attn_implementation='eager' (transformers >= 5 returns "
                "them from eager attention)"
            )
        # the measures run in float32 whatever precision the forward pass used (bf16 autocast
        # on a GPU): results must not depend on the device or the batch size
        t = LayerTensors(**{f.name: _float32(getattr(t, f.name)) for f in fields(t)})
        with torch.autocast(t.X.device.type, enabled=False):
            self._on_layer(b, layer, t)

    def _on_layer(self, b: _Batch, layer: int, t: LayerTensors) -> None:
        self._cone(b, t)
        if t.A is not None:
            self._attention(b, layer, t)
        if self.wants("spectra") and bool(b.spectra_rows.any()):
            self._spectra(b, t)
        if self.wants("embeddings"):
            self._vectors(b, layer, t)

    def end_batch(self, buckets: Tensor) -> None:
        """Finish a batch: ``buckets`` (batch,) = class, or n_classes + class if misclassified."""
        b = self._batch
        assert b is not None
        self._ending = True  # stays True if adding the batch fails: see abort_batch
        with torch.autocast(b.mask.device.type, enabled=False):
            self._end_batch(b, buckets)
        self.n_done += len(buckets)
        self._ending = False
        self._batch = None

    def _end_batch(self, b: _Batch, buckets: Tensor) -> None:
        dev_buckets = buckets.to(b.mask.device)
        self._gates(b)
        self._add_cluster_scores(b)
        for name, per_layer in b.per_genome.items():
            self._pending[name] = append_batch(
                self.per_genome.setdefault(name, []),
                torch.stack(per_layer, 1).float().cpu().numpy(),
                self._pending.get(name, 0),
            )
        for i, s in enumerate(b.stats["gates"]):
            g = regroup(s, dev_buckets, self.n_buckets)
            self.gates[i] = g if self.gates[i] is None else self.gates[i].combine(g)
        for i, s in enumerate(b.stats["domains"]):
            d = regroup(s, dev_buckets, self.n_buckets)
            self.domain_stats[i] = (
                d if self.domain_stats[i] is None else self.domain_stats[i].combine(d)
            )
        if b.maps:
            self._add_maps(b, dev_buckets)
        if b.pooled:
            self._add_pooled(b, dev_buckets)
        if b.spectra:
            cand = buckets.cpu()[b.spectra_rows].numpy()
            chosen = self._choose_spectra(cand)
            for name, per_layer in b.spectra.items():
                values = torch.stack(per_layer, 1).cpu().numpy()  # (candidate, layer, ...)
                self.spectra.setdefault(name, []).append(values[chosen])
            self.spectra_buckets.append(cand[chosen])
        if b.kept_maps:
            maps = torch.stack(b.kept_maps, 1).numpy()  # (kept, layer, head, q, k)
            self.kept_maps.extend(maps[i] for i in range(len(maps)))

    def _choose_spectra(self, candidates: np.ndarray) -> np.ndarray:
        """Which candidates (their buckets, in stream order) join the spectra subset: per class,
        among its first ``SPECTRA_LOOK x quota`` genomes in stream order, the first ``quota``
        correctly classified ones and the misclassified ones met before those filled (at most
        ``quota``); the same subset whatever the batch size."""
        quota = self._spectra_quota()
        chosen = np.zeros(len(candidates), dtype=bool)
        for i, bucket in enumerate(candidates.tolist()):
            c, wrong = bucket % self.n_classes, bucket >= self.n_classes
            if not self._spectra_open(c):
                continue
            self.spectra_seen[c] += 1
            if not wrong:
                self.spectra_correct[c] += 1
                chosen[i] = True
            elif self.spectra_wrong[c] < quota:
                self.spectra_wrong[c] += 1
                chosen[i] = True
        return chosen

    # ------------------------------------------------------------------ per family
    def _keep(self, b: _Batch, name: str, value: Tensor) -> None:
        b.per_genome.setdefault(name, []).append(value.detach())

    def _cone(self, b: _Batch, t: LayerTensors) -> None:
        if not self.wants("cone"):
            return
        ds = self.options.drop_special
        points = [
            cone_index(getattr(t, p), b.mask, drop_special=ds).normalised for p in CONE_POINTS
        ]
        self._keep(b, "cone", torch.stack(points, 1))  # (batch, point)
        self._keep(b, "cone_Z", cone_index(t.Z, b.mask, drop_special=ds).normalised)
        if t.A is not None:
            self._keep(b, "cone_A", cone_index(t.A, b.mask, drop_special=ds).normalised)

    def _attention(self, b: _Batch, layer: int, t: LayerTensors) -> None:
        n = t.A.shape[0]
        own = torch.arange(n, device=t.A.device)
        ds = self.options.drop_special
        if self.wants("gates"):
            if b.gates_pending and b.gates_pending[0].shape != t.A.shape:
                self._gates(b)
            b.gates_pending.append(t.A)
            held = sum(x.numel() * x.element_size() for x in b.gates_pending)
            if held >= self._gates_hold_bytes(t.A.device):
                self._gates(b)
            self._keep(b, "row_entropy", row_entropy(t.A, b.mask, drop_special=ds).normalised)
        if self.wants("domains"):
            assert self.domains is not None
            b.stats["domains"].append(domain_stats(t.A, b.mask, self.domains, own, n))
        if self.wants("direction"):
            self._keep(b, "attention_asymmetry", attention_asymmetry(t.A, b.mask, drop_special=ds))
            q, k = self._queries_keys(layer, t.X)
            self._keep(b, "score_antisymmetry", score_directionality(q, k, b.mask, drop_special=ds))
        if self.wants("maps"):
            b.maps.append(t.A.detach().float())
        if bool(b.kept.any()):  # PAD query rows (a softmax HF leaves in place) zeroed
            real = b.mask[b.kept][:, None, :, None]
            b.kept_maps.append((t.A[b.kept] * real).detach().half().cpu())

    def _gates(self, b: _Batch) -> None:
        """Gate statistics of the held layers' maps in one call on the maps stacked along the
        batch dimension (each op launched once for them all: on a GPU the per-row measures are
        launch-bound), split back per layer; the cluster parts join those of earlier layers."""
        if not b.gates_pending:
            return
        held, b.gates_pending = b.gates_pending, []
        n_layers, n = len(held), held[0].shape[0]
        a = torch.cat(held) if n_layers > 1 else held[0]
        held.clear()
        rows = n_layers * n
        own = torch.arange(rows, device=a.device)
        mask = b.mask.repeat(n_layers, 1)
        stats, parts = gate_stats_and_parts(a, mask, own, rows, self.options.gate_options)
        del a
        for i in range(n_layers):
            part = slice(i * n, (i + 1) * n)
            b.stats["gates"].append(_rows(stats, part))
            b.cluster_parts.append(_rows(parts, part))
            if sum(x.nbytes for x in b.cluster_parts) >= self._hold_bytes(b.mask.device):
                self._add_cluster_scores(b)

    def _gates_hold_bytes(self, device: torch.device) -> int:
        """Attention maps held before their gate statistics are computed together."""
        if self.options.gates_hold_bytes is not None:
            return self.options.gates_hold_bytes
        if device.type == "cuda":
            return torch.cuda.get_device_properties(device).total_memory // 128
        return 0  # the CPU is not launch-bound: one layer at a time holds the least memory

    def _hold_bytes(self, device: torch.device) -> int:
        """Memory the cluster tables of a batch may hold before they are solved: on a GPU each
        solve costs ``pos`` sequential steps of small kernels, so fewer, larger solves win."""
        if self.options.cluster_hold_bytes is not None:
            return self.options.cluster_hold_bytes
        if device.type == "cuda":
            return torch.cuda.get_device_properties(device).total_memory // 4
        return 1 << 30

    def _add_cluster_scores(self, b: _Batch) -> None:
        """The cluster measure of every layer in one dynamic programme (its ``pos`` sequential
        steps cost the same for one layer as for all: one pass instead of one per layer)."""
        if not b.cluster_parts:
            return
        n = b.mask.shape[0]
        own = torch.arange(n, device=b.mask.device)
        held, b.cluster_parts = b.cluster_parts, []
        heads = [x.reciprocity.shape[1] for x in held]
        joined = ClusterParts.cat(held)
        held.clear()  # the per-layer tables go before the programme runs
        scores = cluster_from_parts(joined).split(heads, dim=1)
        first = len(b.stats["gates"]) - len(heads)  # the held layers are the last ones
        for i, sc in enumerate(scores, start=first):
            b.stats["gates"][i] = add_cluster(b.stats["gates"][i], sc, own, n)

    def _queries_keys(self, layer: int, x: Tensor) -> tuple[Tensor, Tensor]:
        sa = self.layers[layer].attention.self
        shape = (*x.shape[:2], sa.num_attention_heads, sa.attention_head_size)
        x = x.to(sa.query.weight.dtype)  # the model's own precision (fp16/bf16 models too)
        q = sa.query(x).float().view(shape).transpose(1, 2)
        k = sa.key(x).float().view(shape).transpose(1, 2)
        return q, k

    def _spectra(self, b: _Batch, t: LayerTensors) -> None:
        rows = b.spectra_rows.to(b.mask.device)
        mask = b.mask[rows]
        drv, ds = self.options.svd_driver, self.options.drop_special
        parts = {
            "A": spectrum(t.A[rows], mask, square=True, drop_special=ds, driver=drv)
            if t.A is not None
            else None,
            "Z": spectrum(t.Z[rows], mask, drop_special=ds, driver=drv),
        }
        for point in CONE_POINTS:  # whole-layer points: one "head"
            parts[point] = spectrum(
                getattr(t, point)[rows].unsqueeze(1), mask, drop_special=ds, driver=drv
            )
        for point, s in parts.items():
            if s is None:
                continue
            hist = eig = torch.full_like(s.effective_rank, torch.nan, dtype=torch.float64)
            if self.options.compat:
                m = t.A[rows] if point == "A" else None
                if m is not None:
                    eig = eigen_entropy_compat(m, mask, drop_special=ds).double()
                else:
                    m = t.Z[rows] if point == "Z" else getattr(t, point)[rows].unsqueeze(1)
                hist = histogram_entropy(m, mask, square=point == "A", drop_special=ds).double()
            values = torch.stack(
                [
                    s.effective_rank.double(), s.stable_rank.double(),
                    s.numerical_rank.double(), s.gram_entropy.double(), hist, eig,
                ],
                -1,
            )  # (sub, head, len(SPECTRA_VALUES))  # fmt: skip
            b.spectra.setdefault(point, []).append(values)

    def _vectors(self, b: _Batch, layer: int, t: LayerTensors) -> None:
        m = b.mask[..., None].double()
        pooled = torch.stack(
            [(getattr(t, p).double() * m).sum(1) / m.sum(1) for p in CONE_POINTS], 1
        )  # (batch, point, d_model): mean over the real tokens
        b.pooled.append(pooled)
        if layer == 0:
            self._keep(b, "cls_0", t.X[:, 0])
            self._keep(b, "mean_0", pooled[:, CONE_POINTS.index("X")].float())
            self._keep(b, "n_real", m.sum(1).float())  # (batch, 1): mean x n_real = token sum
        self._keep(b, "cls", t.Y[:, 0])
        self._keep(b, "mean", pooled[:, CONE_POINTS.index("Y")].float())

    def _add_pooled(self, b: _Batch, buckets: Tensor) -> None:
        """Add the batch's mean-pooled stream-point vectors to the per-bucket sums."""
        x = torch.stack(b.pooled)  # (layer, batch, point, d)
        b.pooled = []
        if self.pooled_sum is None:
            n_layers, _, n_points, d = x.shape
            self.pooled_sum = x.new_zeros((n_layers, self.n_buckets, n_points, d))
            self.pooled_sq = x.new_zeros((n_layers, self.n_buckets, n_points))
        assert self.pooled_sq is not None
        self.pooled_sum.index_add_(1, buckets, x)
        self.pooled_sq.index_add_(1, buckets, (x * x).sum(-1))
        ones = torch.ones(len(buckets), dtype=torch.float64)
        self.pooled_n.index_add_(0, buckets.cpu(), ones)

    def _add_maps(self, b: _Batch, buckets: Tensor) -> None:
        """Add the batch's maps to the per-bucket sums; PAD query rows (whose softmax HF leaves
        in place) are left out, and each query position is counted over the genomes that
        have it, so the mean map does not depend on how genomes of different lengths are
        batched."""
        real = b.mask.to(b.maps[0].dtype)[:, None, :, None]  # (batch, 1, q, 1)
        p = b.maps[0].shape[-1]
        if self.map_sum is None:
            self.map_sum = torch.zeros(
                (self.n_layers, self.n_heads, self.n_buckets, p, p),
                dtype=torch.float32,
                device=b.maps[0].device,
            )
        if p > self.map_sum.shape[-1]:
            grow = p - self.map_sum.shape[-1]
            self.map_sum = torch.nn.functional.pad(self.map_sum, (0, grow, 0, grow))
        q = self.map_sum.shape[-1]
        maps, b.maps = b.maps, []
        for layer in range(len(maps)):  # one layer at a time, each freed once added
            m = maps.pop(0)
            a = torch.nn.functional.pad(m * real, (0, q - p, 0, q - p)).transpose(0, 1)
            self.map_sum[layer].index_add_(1, buckets, a)  # (head, bucket, q, k) += (h, b, q, k)
        if self.map_count.shape[1] < q:
            self.map_count = torch.nn.functional.pad(
                self.map_count, (0, q - self.map_count.shape[1])
            )
        rows = torch.nn.functional.pad(b.mask.cpu().double(), (0, q - p))  # (batch, q)
        self.map_count.index_add_(0, buckets.cpu(), rows)
