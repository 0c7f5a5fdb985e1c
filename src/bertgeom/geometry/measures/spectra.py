"""Ranks and von Neumann entropy of the stream points on a class-stratified subset (science.md §6).

Per genome of the *spectra subset*, layer and head (A, Z) or whole layer (X, C, O, U, F, Y,
head -1): the effective, stable and numerical rank and the von Neumann entropy of the Gram
matrix, from the singular values of the genome's real block (``geometry.spectra.spectrum``);
with ``compat`` also the research code's histogram and eigenvalue "entropies". Table
``spectra``: their means per class over the subset's included genomes.

The subset (the SVDs are the costly part): per class, among its first ``LOOK x quota``
genomes in stream order (quota = ceil(genomes / classes)), the first ``quota`` correctly
classified ones and the misclassified ones met before those filled (at most ``quota``); with
``--all-genomes`` the misclassified ones enter the means too. The rule is applied genome by
genome in stream order (:func:`replay`), so the subset does not depend on the batch size.

Only the genomes that will be chosen are decomposed. At the start of a batch (predictions not
known) the *candidates* are, per open class, its first ``LOOK x quota - seen`` genomes of the
batch (the only ones the rule can reach). The first min(quota - correct, quota - misclassified)
candidates of a class are chosen whatever the predictions: their spectra are computed layer by
layer during the forward pass. The other candidates' tensors are held until the predictions
decide which are chosen, and only those are decomposed. Beyond :data:`HOLD_BYTES` of held
tensors (one genome of ``base`` holds about 210 MB) the further candidates are not held: the
chosen ones among them are seen again in a second forward pass over just them
(``Measure.revisit``), so memory stays bounded and no SVD is spent on a genome that is not
chosen (a model that gets a class wrong considers up to LOOK x quota of its genomes).

Merge: the subset is prefix-dependent, so the state is an ordered log of the candidates the
rule considered (their buckets: class, or classes + class when misclassified), whether each
was chosen, and the values of the chosen ones. A part streamed from an empty state considers
every genome the whole stream would consider at that point (its counters are never above the
whole stream's) and chooses a superset of the whole stream's choice, so :meth:`Spectra.merge`
replays the rule over the concatenated logs and keeps the values of the genomes it chooses:
the same subset and the same values as one stream over both parts. (Whether a chosen genome's
values come from its batch's pass or from a second look depends on the counters, so on where
a part starts; on the CPU the two passes give the same tensors bitwise, measured for the tiny
test models and a 768-wide BERT, but on a GPU, whose kernels depend on the batch's shape,
the values of a merged run may then differ from one stream's by rounding.)

Against the old engine (golden tables): equal; no intended difference.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from bertgeom.geometry.measures import register
from bertgeom.geometry.measures.base import BatchInfo, Genomes, Measure, RunInfo
from bertgeom.geometry.spectra import eigen_entropy_compat, histogram_entropy, spectrum
from bertgeom.geometry.stream import LAYER_POINTS, LayerView

#: What the spectra cover: per-head A and Z, and every whole-layer stream point.
SPECTRA_POINTS = ("A", "Z", *LAYER_POINTS)
#: Values per spectra genome, layer and head, in this order (``compat``: NaN unless computed).
SPECTRA_VALUES = (
    "effective_rank", "stable_rank", "numerical_rank", "von_neumann",
    "histogram_entropy_compat", "eigen_entropy_compat",
)  # fmt: skip
#: A class stops offering candidates after this many times its quota (a class the model seldom
#: gets right would otherwise cost SVDs for every one of its genomes).
LOOK = 4
#: Bins of the ``compat`` histogram entropy (the research code's).
HISTOGRAM_BINS = 20
#: Bytes of candidate tensors a batch may hold until its predictions are known; the chosen
#: candidates beyond it are seen again in a second forward pass over just them
#: (``Measure.revisit``): memory stays bounded whatever the class order.
HOLD_BYTES = 1 << 28


def quota(genomes: int, n_classes: int) -> int:
    """Spectra genomes per class: ceil(genomes / classes)."""
    return -(-genomes // max(n_classes, 1))


def class_open(counts: np.ndarray, q: int) -> np.ndarray:
    """(class,) bool: the classes still looking for spectra genomes (``counts``: (3, class)
    correctly classified chosen, misclassified chosen, considered)."""
    return (counts[0] < q) & (counts[2] < LOOK * q)


def replay(
    buckets: np.ndarray, n_classes: int, q: int, counts: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Apply the subset rule to ``buckets`` (class, or n_classes + class when misclassified) in
    order, from ``counts`` (None: nothing chosen yet).

    Returns
    -------
    considered : (n,) bool, genomes the rule looked at (their class was open)
    chosen : (n,) bool, genomes that join the subset
    counts : (3, class) int64 after them: correct chosen, misclassified chosen, considered
    """
    counts = np.zeros((3, n_classes), np.int64) if counts is None else counts.copy()
    considered = np.zeros(len(buckets), bool)
    chosen = np.zeros(len(buckets), bool)
    for i, bucket in enumerate(np.asarray(buckets).tolist()):
        c, wrong = bucket % n_classes, bucket >= n_classes
        if not (counts[0, c] < q and counts[2, c] < LOOK * q):
            continue
        considered[i] = True
        counts[2, c] += 1
        if not wrong:
            counts[0, c] += 1
            chosen[i] = True
        elif counts[1, c] < q:
            counts[1, c] += 1
            chosen[i] = True
    return considered, chosen, counts


@dataclass(frozen=True)
class SpectraOptions:
    """Options of the spectra measure."""

    genomes: int = field(
        default=64,
        metadata={
            "help": "size of the class-stratified spectra subset (per class the first "
            "ceil(genomes / classes) correctly classified genomes in stream order)",
            "label": "spectra genomes",
        },
    )
    compat: bool = field(
        default=False,
        metadata={
            "help": "also compute the research code's histogram and eigenvalue entropies on "
            "the spectra subset",
            "label": "compat entropies",
        },
    )

    def __post_init__(self) -> None:
        if isinstance(self.genomes, bool) or not isinstance(self.genomes, int):
            raise ValueError(f"genomes must be an integer (got {self.genomes!r})")
        if self.genomes < 0:
            raise ValueError(f"genomes must be >= 0 (got {self.genomes})")
        if not isinstance(self.compat, bool):
            raise ValueError(f"compat must be true or false (got {self.compat!r})")


def _point_matrices(view: Any, rows: Tensor) -> dict[str, Tensor]:
    """The spectra inputs of the genomes ``rows`` of one layer: A (if captured), Z (batch,
    head, ...) and each whole-layer point as one head (batch, 1, pos, d_model)."""
    out = {}
    if view.A is not None:
        out["A"] = view.A[rows]
    out["Z"] = view.Z[rows]
    for p in LAYER_POINTS:
        out[p] = getattr(view, p)[rows].unsqueeze(1)
    return out


class _Pending:
    """One batch in progress: its candidates, the values computed during the forward pass
    (``sure``: candidates sure to be chosen), the held tensors (``held``: candidates within the
    hold budget) and the values of the second look (the other candidates, if chosen)."""

    def __init__(self, cand: np.ndarray, sure: np.ndarray, held: np.ndarray, mask: Tensor) -> None:
        self.cand = cand  # (batch,) bool
        self.sure = sure  # (batch,) bool, a subset of cand: decomposed during the forward pass
        self.hold = held  # (batch,) bool, a subset of cand & ~sure: tensors held
        dev = mask.device
        self.sure_rows = torch.as_tensor(np.flatnonzero(sure), device=dev)
        self.held_rows = torch.as_tensor(np.flatnonzero(held), device=dev)
        self.sure_mask = mask[self.sure_rows]
        self.held_mask = mask[self.held_rows]
        self.sure_values: dict[str, list[Tensor]] = {}  # point -> per layer (sure, head, 6)
        self.held: list[dict[str, Tensor]] = []  # per layer: point -> (held, head, ...)
        #: the subset rule over the candidates, once the predictions are known
        self.replayed: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self.again = np.zeros(len(cand), bool)  # (batch,) chosen, neither sure nor held
        self.again_values: dict[str, list[Tensor]] = {}  # point -> per layer (again, head, 6)


@register
class Spectra(Measure):
    """Ranks and entropies on the spectra subset (see the module docstring)."""

    name = "spectra"
    title = "Entropies and spectra"
    order = 50
    reads = frozenset({"A", "Z", "X", "C", "O", "U", "F", "Y"})
    Options = SpectraOptions
    tables = ("spectra",)
    stream_options = frozenset({"genomes", "compat"})
    definitions = (
        (
            "Ranks and von Neumann entropy",
            "From the singular values s_k of a genome's real block M: A_h (n x n, per head), "
            "Z_h (n x d_head, per head) and the whole-layer points X, C, O, U, F, Y "
            "(n x d_model), n the genome's real tokens; with drop_special [CLS] and [SEP] are "
            "left out as rows, and for A_h also as columns (the n x n content block, rows not "
            "renormalised). Computed in float32 (LAPACK gesdd on the CPU, cuSOLVER gesvda on a "
            "GPU, falling back to the default driver where it does not converge); on the CPU "
            "each genome's real block is decomposed on its own, on one thread, so its values "
            "depend neither on the genomes batched with it nor on the padding, and the "
            "non-square blocks (Z, points) from the eigenvalues of their float64 Gram matrix "
            "on the smaller side (s_k = √λ_k; closer to the float64 SVD than float32 gesdd, "
            "a zero s_k near 1e-8 s₁). Numerical "
            "rank with numpy.matrix_rank's tolerance, eps being the float32 machine epsilon "
            "(2⁻²³ ≈ 1.19e-7); effective rank after Roy and Vetterli (2007); stable rank; von "
            "Neumann entropy of the Gram matrix M Mᵀ normalised to unit trace. Per class the "
            "mean over the spectra subset: among the class's first "
            f"{LOOK} x quota genomes in stream order (quota = ⌈genomes / classes⌉), the first "
            "quota correctly classified ones and the misclassified ones met before those "
            "filled (at most quota); the means use the correctly classified ones (all of the "
            "subset with all-genomes).",
            "numerical rank = #{s_k > max(n, m) · eps · s₁},  eps = 2⁻²³\n"
            "effective rank = exp(−Σ_k p_k ln p_k),  p_k = s_k / Σ s\n"
            "stable rank = Σ s_k² / s₁²\n"
            "S(ρ) = −Σ_k λ_k ln λ_k,  ρ = M Mᵀ / tr(M Mᵀ)  (λ_k = s_k² / Σ s²)",
        ),
        (
            "Compat entropies (compat)",
            "The research code's measures, kept to reproduce published numbers: the entropy "
            f"of the histogram of a block's values ({HISTOGRAM_BINS} equal-width bins between "
            "its minimum and maximum), and for A_h an eigenvalue 'entropy' with p normalised "
            "by the Euclidean norm of the eigenvalue moduli (not a distribution).",
            "H_hist = −Σ_b p_b ln p_b,   H_eig = −Σ_k p_k ln p_k,  p_k = |λ_k| / ‖λ‖₂",
        ),
    )

    def __init__(self, info: RunInfo, options: Any = None) -> None:
        super().__init__(info, options)
        self.quota = quota(self.options.genomes, info.n_classes)
        self.driver = "gesvda" if str(info.device).startswith("cuda") else None
        self._log_buckets: list[np.ndarray] = []  # considered candidates, in stream order
        self._log_chosen: list[np.ndarray] = []
        self._values: dict[str, list[np.ndarray]] = {}  # point -> (chosen, layer, head, 6)
        self._counts = np.zeros((3, info.n_classes), np.int64)
        self._pending: _Pending | None = None

    # ------------------------------------------------------------------ stream
    def begin_batch(self, batch: BatchInfo) -> None:
        self._pending = None
        labels = batch.labels.cpu().numpy()
        q, (correct, wrong, seen) = self.quota, self._counts
        open_ = class_open(self._counts, q)
        cand = np.zeros(len(labels), bool)
        sure = np.zeros(len(labels), bool)
        for c in np.unique(labels).tolist():
            if not open_[c]:
                continue
            idx = np.flatnonzero(labels == c)[: LOOK * q - seen[c]]
            cand[idx] = True
            # the first min(q - correct, q - wrong) are chosen whatever the predictions
            sure[idx[: min(q - correct[c], q - wrong[c])]] = True
        held = np.zeros(len(labels), bool)
        budget = HOLD_BYTES // max(self._genome_bytes(batch.mask.shape[1]), 1)
        held[np.flatnonzero(cand & ~sure)[:budget]] = True  # beyond: a second look if chosen
        if cand.any():
            self._pending = _Pending(cand, sure, held, batch.mask)

    def update(self, layer: int, view: LayerView, batch: BatchInfo) -> None:
        b = self._pending
        if b is None:
            return
        if len(b.sure_rows):
            values = self._values_of(_point_matrices(view, b.sure_rows), b.sure_mask)
            for point, v in values.items():
                b.sure_values.setdefault(point, []).append(v)
        if len(b.held_rows):
            b.held.append(_point_matrices(view, b.held_rows))

    def _replayed(self, b: _Pending, batch: BatchInfo) -> tuple[np.ndarray, ...]:
        """The subset rule over the batch's candidates (considered, chosen, counts)."""
        if b.replayed is None:
            assert batch.buckets is not None
            buckets = batch.buckets.cpu().numpy()[b.cand]  # candidates in stream order
            b.replayed = replay(buckets, self.info.n_classes, self.quota, self._counts)
        return b.replayed

    def revisit(self, batch: BatchInfo) -> Tensor | None:
        b = self._pending
        if b is None:
            return None
        b.again[np.flatnonzero(b.cand)[self._replayed(b, batch)[1]]] = True
        b.again &= ~(b.sure | b.hold)
        if not b.again.any():
            return None
        return torch.as_tensor(np.flatnonzero(b.again), device=batch.mask.device)

    def update_revisit(self, layer: int, view: LayerView, rows: Tensor) -> None:
        b = self._pending
        if b is None or not b.again.any():
            return
        mine = torch.as_tensor(b.again, device=rows.device)[rows].nonzero()[:, 0]
        values = self._values_of(_point_matrices(view, mine), view.mask[mine])
        for point, v in values.items():
            b.again_values.setdefault(point, []).append(v)

    def end_batch(self, batch: BatchInfo) -> None:
        b, self._pending = self._pending, None
        if b is None:
            return
        assert batch.buckets is not None
        buckets = batch.buckets.cpu().numpy()[b.cand]  # candidates in stream order
        considered, chosen, counts = self._replayed(b, batch)
        sure, hold, again = b.sure[b.cand], b.hold[b.cand], b.again[b.cand]
        pick = chosen[hold]  # held candidates that are chosen
        if (chosen & ~sure & ~hold).any() and not b.again_values:  # revisit is the driver's
            raise RuntimeError(
                "spectra: chosen genomes were neither decomposed nor held and no second look "
                "at them came (a driver must call revisit and update_revisit before end_batch)"
            )
        held_values: dict[str, list[Tensor]] = {}
        if pick.any():
            rows = torch.as_tensor(np.flatnonzero(pick), device=b.held_mask.device)
            mask = b.held_mask[rows]
            for per_layer in b.held:
                values = self._values_of({p: t[rows] for p, t in per_layer.items()}, mask)
                for point, v in values.items():
                    held_values.setdefault(point, []).append(v)
        b.held.clear()
        for point in SPECTRA_POINTS:
            parts = []
            if point in b.sure_values:
                parts.append((sure, torch.stack(b.sure_values[point], 1).cpu().numpy()))
            if point in held_values:
                held_chosen = np.zeros(len(sure), bool)
                held_chosen[np.flatnonzero(hold)[pick]] = True
                parts.append((held_chosen, torch.stack(held_values[point], 1).cpu().numpy()))
            if point in b.again_values:
                parts.append((again, torch.stack(b.again_values[point], 1).cpu().numpy()))
            if not parts:
                continue
            full = np.full((len(sure), *parts[0][1].shape[1:]), np.nan)
            for where, v in parts:
                full[where] = v
            self._values.setdefault(point, []).append(full[chosen])
        self._log_buckets.append(buckets[considered])
        self._log_chosen.append(chosen[considered])
        self._counts = counts

    def abort_batch(self) -> None:
        self._pending = None

    def _genome_bytes(self, pos: int) -> int:
        """Bytes of one genome's held tensors (all layers, float32)."""
        i = self.info
        per_layer = i.n_heads * pos * (pos + i.d_head) + len(LAYER_POINTS) * pos * i.d_model
        return 4 * i.n_layers * per_layer

    def _values_of(self, mats: dict[str, Tensor], mask: Tensor) -> dict[str, Tensor]:
        """(genome, head, len(SPECTRA_VALUES)) float64 values of each point's matrices."""
        ds, compat = self.info.drop_special, self.options.compat
        out = {}
        for point, m in mats.items():
            square = point == "A"
            s = spectrum(m, mask, square=square, drop_special=ds, driver=self.driver)
            hist = eig = torch.full_like(s.effective_rank, torch.nan, dtype=torch.float64)
            if compat:
                if square:
                    eig = eigen_entropy_compat(m, mask, drop_special=ds).double()
                hist = histogram_entropy(
                    m, mask, bins=HISTOGRAM_BINS, square=square, drop_special=ds
                ).double()
            values = torch.stack(
                [
                    s.effective_rank.double(), s.stable_rank.double(),
                    s.numerical_rank.double(), s.gram_entropy.double(), hist, eig,
                ],
                -1,
            )  # fmt: skip
            out[point] = values  # stays on the device until end_batch (no sync mid-batch)
        return out

    # ------------------------------------------------------------------ state
    def _joined(self) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        buckets = np.concatenate(self._log_buckets) if self._log_buckets else np.zeros(0, int)
        chosen = np.concatenate(self._log_chosen) if self._log_chosen else np.zeros(0, bool)
        values = {p: np.concatenate(v) for p, v in self._values.items() if v}
        return buckets.astype(np.int64), chosen.astype(bool), values

    def _set(self, buckets: np.ndarray, chosen: np.ndarray, values: dict[str, np.ndarray]) -> None:
        self._log_buckets, self._log_chosen = [buckets], [chosen]
        self._values = {p: [v] for p, v in values.items()}

    def extra_state(self) -> dict[str, Any]:
        buckets, chosen, values = self._joined()
        return {"log_buckets": buckets, "log_chosen": chosen, "values": values}

    def load_extra_state(self, state: Mapping[str, Any]) -> None:
        buckets = np.asarray(state.get("log_buckets", np.zeros(0)), np.int64)
        chosen = np.asarray(state.get("log_chosen", np.zeros(0)), bool)
        considered, again, counts = replay(buckets, self.info.n_classes, self.quota)
        if not considered.all() or not np.array_equal(again, chosen):
            raise ValueError("spectra state: its log does not follow the subset rule")
        self._set(buckets, chosen, dict(state.get("values", {})))
        self._counts = counts

    def merge(self, other: Measure) -> None:
        """Add ``other`` (the stream that follows this one): the subset rule replayed over
        both logs (module docstring)."""
        if not isinstance(other, Spectra) or type(other) is not type(self):
            raise TypeError(f"cannot merge {type(other).__name__} into {type(self).__name__}")
        if other.quota != self.quota:
            raise ValueError(f"spectra: cannot merge quotas {self.quota} and {other.quota}")
        b1, c1, v1 = self._joined()
        b2, c2, v2 = other._joined()
        buckets, had = np.concatenate([b1, b2]), np.concatenate([c1, c2])
        considered, chosen, counts = replay(buckets, self.info.n_classes, self.quota)
        if (chosen & ~had).any():
            raise ValueError(
                "spectra: the merged subset needs a genome neither part chose (the parts are "
                "not consecutive streams from empty states)"
            )
        keep = chosen[had]
        values = {}
        for point in dict.fromkeys([*v1, *v2]):
            joined = np.concatenate([v[point] for v in (v1, v2) if point in v])
            values[point] = joined[keep]
        self._set(buckets[considered], chosen[considered], values)
        self._counts = counts

    # ------------------------------------------------------------------ output
    def subset(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The spectra subset: buckets (chosen genomes, stream order) and values per point
        (chosen, layer, head, len(SPECTRA_VALUES))."""
        buckets, chosen, values = self._joined()
        return buckets[chosen], values

    def finish(self, genomes: Genomes) -> dict[str, pd.DataFrame]:
        buckets, values = self.subset()
        names = self.info.classes
        labels = buckets % self.info.n_classes
        use = np.ones(len(buckets), bool) if genomes.all_genomes else buckets < len(names)
        labels_used = labels[use]
        rows = []
        for point in SPECTRA_POINTS:
            if point not in values:
                continue
            v = values[point][use]  # (genome, layer, head, len(SPECTRA_VALUES))
            for c in np.unique(labels_used):
                m = v[labels_used == c].mean(0)
                for layer in range(m.shape[0]):
                    for head in range(m.shape[1]):
                        row = {
                            "layer": layer, "head": head if m.shape[1] > 1 else -1,
                            "point": point, "class": names[c],
                        }  # fmt: skip
                        row |= {k: float(m[layer, head, i]) for i, k in enumerate(SPECTRA_VALUES)}
                        row["n"] = int((labels_used == c).sum())
                        rows.append(row)
        out = pd.DataFrame(rows)
        if not self.options.compat:
            compat = [c for c in SPECTRA_VALUES if c.endswith("_compat")]
            out = out.drop(columns=compat, errors="ignore")
        return {"spectra": out}

    def figures(self, tables: Mapping[str, Any], context: Any) -> Iterator[tuple[str, Any]]:
        from bertgeom.plots import geometry as g

        spectra = tables.get("spectra")
        if spectra is not None and not spectra.empty:
            yield "spectra", g.spectra_curves(spectra)

    @classmethod
    def section(cls, run: Any) -> Any:
        from bertgeom.report.stream_sections import entropy_section

        return entropy_section(run)
