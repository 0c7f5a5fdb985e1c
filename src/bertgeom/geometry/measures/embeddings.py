"""Per-genome [CLS] and mean-pooled vectors of every hidden state, and what they separate
(science.md §6).

Per genome the [CLS] vector and the mean of the content token rows (``LayerView.pooled``: with
``drop_special`` without [CLS] and [SEP]) of every hidden state (0 = the embeddings, then each
layer's output Y) are kept (:class:`~bertgeom.geometry.measures.base.Rows`), and per bucket the
sums of the mean-pooled vectors of every whole-layer stream point X, C, O, U, F, Y with their
squared norms (:class:`~bertgeom.geometry.measures.base.Sums`: Fisher's separability). After the
stream: the per-class cone index of the [CLS] vectors (``cls_cone``), per-layer distribution
metrics, PCA maps and one-vs-all probes (``embeddings``, ``embedding_maps``, ``one_vs_all``),
Fisher's separability per stream point (``separability``), the histogram of the token-summed
hidden states (``output_histogram``) and t-SNE / UMAP maps (``nonlinear_maps``).

Differences from the engine before v2 (issue 14 item 6), intended:

- with ``drop_special`` the mean-pooled vectors leave [CLS] and [SEP] out, as documented (they
  were averaged in before), and the output histogram sums the content tokens; so with
  ``drop_special`` on, ``separability``, ``output_histogram`` and the ``mean`` rows of
  ``embeddings``, ``embedding_maps``, ``one_vs_all`` and ``nonlinear_maps`` change (and the
  ``separability`` rows of ``flow``); with it off they are equal;
- k-NN accuracy uses k clipped to the smallest class in a training fold (it was clipped to the
  whole training fold: 3 genomes per class gave k = 4 and ties, 0.25 beside a probe of 1.0);
- anisotropy is the exact mean cosine over all pairs of distinct genomes (it was a Monte-Carlo
  estimate from 10,000 random pairs);
- the one-vs-all probes (same folds, standardisation and penalised objective) are solved by
  Newton's method batched over the layers (``embeddings.one_vs_all_probes``): equal accuracies
  up to scikit-learn's stopping rule, at a small fraction of the cost (no change on the golden
  tables).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

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
)
from bertgeom.geometry.stream import LAYER_POINTS, LayerView

#: 2-D maps of the vectors: PCA, t-SNE (scikit-learn), UMAP (umap-learn, when installed).
MAP_METHODS = ("pca", "tsne", "umap")
#: The vectors kept per genome and hidden state.
KINDS = ("cls", "mean")
_Y = LAYER_POINTS.index("Y")
_X = LAYER_POINTS.index("X")


@dataclass(frozen=True)
class EmbeddingsOptions:
    """Options of the embeddings measure (all read after the stream only)."""

    maps: str = field(
        default="pca,tsne,umap",
        metadata={
            "help": "comma-separated 2-D maps of the vectors: pca, tsne, umap (umap only with "
            "umap-learn installed); empty = none",
            "label": "2-D maps",
        },
    )
    map_genomes: int = field(
        default=500,
        metadata={
            "help": "the t-SNE / UMAP maps use a seeded subsample of at most this many genomes",
            "label": "genomes in t-SNE / UMAP maps (at most)",
        },
    )
    perplexity: float = field(
        default=30.0,
        metadata={
            "help": "t-SNE perplexity (clipped to (genomes - 1) / 3)",
            "label": "t-SNE perplexity",
        },
    )
    n_neighbors: int = field(
        default=15,
        metadata={
            "help": "UMAP neighbourhood size (clipped to genomes - 1)",
            "label": "UMAP neighbours",
        },
    )
    histogram_bins: int = field(
        default=60,
        metadata={
            "help": "bins of the token-summed hidden-state histogram",
            "label": "output histogram bins",
        },
    )
    probe_genomes: int = field(
        default=3000,
        metadata={
            "help": "the metrics and probes use a seeded subsample of at most this many genomes",
            "label": "genomes in metrics and probes (at most)",
        },
    )

    def __post_init__(self) -> None:
        bad = [m for m in _split(self.maps) if m not in MAP_METHODS]
        if bad:
            raise ValueError(f"maps: unknown {', '.join(bad)} (valid: {', '.join(MAP_METHODS)})")
        if self.map_genomes < 5:
            raise ValueError(f"map_genomes must be >= 5 (got {self.map_genomes})")
        if not (np.isfinite(self.perplexity) and self.perplexity > 0):
            raise ValueError(f"perplexity must be a finite number > 0 (got {self.perplexity})")
        if self.n_neighbors < 2:
            raise ValueError(f"n_neighbors must be >= 2 (got {self.n_neighbors})")
        if self.histogram_bins < 1:
            raise ValueError(f"histogram_bins must be >= 1 (got {self.histogram_bins})")
        if self.probe_genomes < 3:
            raise ValueError(f"probe_genomes must be >= 3 (got {self.probe_genomes})")

    @property
    def methods(self) -> tuple[str, ...]:
        """The chosen maps, in :data:`MAP_METHODS` order."""
        chosen = set(_split(self.maps))
        return tuple(m for m in MAP_METHODS if m in chosen)


def _split(text: str) -> list[str]:
    return [m.strip() for m in text.split(",") if m.strip()]


@register
class Embeddings(Measure):
    """[CLS] and mean-pooled vectors per hidden state (see the module docstring)."""

    name = "embeddings"
    title = "Embeddings and separability"
    order = 70
    reads = frozenset({"X", "C", "O", "U", "F", "Y"})
    Options = EmbeddingsOptions
    tables = (
        "cls_cone",
        "embeddings",
        "embedding_maps",
        "one_vs_all",
        "separability",
        "output_histogram",
        "nonlinear_maps",
    )
    #: one row per genome: drawn, never loaded by the report
    per_genome = ("embedding_maps", "nonlinear_maps")
    definitions = (
        (
            "Embeddings",
            "One vector per genome and hidden state (0 = the embeddings, then each layer's "
            "output): the [CLS] vector and the mean of the content token vectors (without [CLS] "
            "and [SEP] when they are dropped). Over the included genomes (a seeded subsample of "
            "at most `probe_genomes`), per hidden state: PCA explained variance (10 components) "
            "and 2-D maps; silhouette of the classes (Euclidean); the D'Agostino-Pearson "
            "normality p-values of the first two principal components (from 20 genomes); "
            "anisotropy, the exact mean cosine over all pairs of distinct genomes (zero vectors "
            "count as cosine 0); and, over the classes with at least 2 genomes: cross-validated "
            "k-nearest-neighbour accuracy (k = 5, clipped to the smallest class of a training "
            "fold; Euclidean, uniform weights), cross-validated linear-probe accuracy "
            "(standardisation, then multinomial logistic regression, L2, C = 1; 3 folds), one "
            "class against the rest (standardisation and binary logistic regression, C = 1, the "
            "minimum found by Newton's method with backtracking, all layers at once, to a "
            "gradient below 1e-9 or 100 steps; accuracy and balanced accuracy, 0.5 = chance; 5 "
            "folds), adjusted Rand index of k-means (k = classes, 10 starts) against the classes."
            " Cross-validation is stratified and shuffled, with at most as many folds as the "
            "smallest class has genomes. A hidden state whose vectors are the same for every "
            "genome (sd ≤ 1e-9) has no metrics. Non-linear 2-D maps per hidden state: t-SNE "
            "(scikit-learn, Barnes-Hut, PCA initialisation, automatic learning rate, 1000 "
            "iterations, perplexity clipped to (n − 1) / 3 for n genomes) and, when umap-learn is"
            " installed, UMAP (neighbours clipped to n − 1), on a seeded subsample of at most "
            "`map_genomes` genomes, one thread; maps need 5 genomes.",
            "anisotropy = mean_{i≠j} cos(x_i, x_j) = (‖Σ_i u_i‖² − Σ_i ‖u_i‖²) / (n (n − 1)),  "
            "u_i = x_i / ‖x_i‖",
        ),
        (
            "[CLS] cone index",
            "Per class and hidden state, the cone index of the [CLS] vectors of its included "
            "genomes, divided by their number.",
            "I_cone / n_c = ‖ Σ_{i∈c} x_i / ‖x_i‖ ‖₂ / n_c",
        ),
        (
            "Separability",
            "Fisher's criterion of the classes for the mean-pooled vectors at every stream "
            "point and layer, from the streamed per-class sums (float64) over the included "
            "genomes: between-class over within-class sum of squares; 0 when the class means "
            "coincide, undefined (NaN) without spread within classes (a within sum below 1e-10 "
            "of Σ‖x‖² is rounding noise and counts as none).",
            "fisher = Σ_c n_c ‖μ_c − μ‖² / Σ_c Σ_{i∈c} ‖x_i − μ_c‖²",
        ),
        (
            "Output histogram",
            "Histogram of the token-summed hidden state Σ_pos y_pos (over the content tokens), "
            "pooled over the included genomes and the model dimensions, with `histogram_bins` "
            "equal-width bins over each hidden state's range; density integrates to 1.",
            "density_b = count_b / (Σ_b count_b · width)",
        ),
    )

    def __init__(self, info: RunInfo, options: Any = None) -> None:
        super().__init__(info, options)
        self.rows = Rows()  # cls, mean: (genome, hidden state, d_model); n_content: (genome,)
        self.sums = Sums()  # pooled_sum (layer, bucket, point, d), pooled_sq, pooled_n
        self._batch: dict[str, list[torch.Tensor]] = {}

    # stream -----------------------------------------------------------------------------
    def begin_batch(self, batch: BatchInfo) -> None:
        self._batch = {"cls": [], "mean": [], "pooled": []}

    def update(self, layer: int, view: LayerView, batch: BatchInfo) -> None:
        pooled = view.pooled  # (batch, point, d_model) float64
        keep = self._batch
        if layer == 0:
            keep["cls"].append(view.X[:, 0])
            keep["mean"].append(pooled[:, _X].float())
            keep["n_content"] = [view.n_content]
        keep["cls"].append(view.Y[:, 0])
        keep["mean"].append(pooled[:, _Y].float())
        keep["pooled"].append(pooled)

    def end_batch(self, batch: BatchInfo) -> None:
        keep, self._batch = self._batch, {}
        if not keep.get("pooled"):
            return
        self.rows.append("cls", torch.stack(keep["cls"], 1))
        self.rows.append("mean", torch.stack(keep["mean"], 1))
        self.rows.append("n_content", keep["n_content"][0])
        x = torch.stack(keep.pop("pooled"))  # (layer, batch, point, d)
        buckets = batch.buckets
        assert buckets is not None
        n = self.info.n_buckets
        _add_rows(self.sums, "pooled_sum", 1, buckets, x, n)
        _add_rows(self.sums, "pooled_sq", 1, buckets, (x * x).sum(-1), n)
        ones = torch.ones(len(buckets), dtype=torch.float64)
        _add_rows(self.sums, "pooled_n", 0, buckets.cpu(), ones, n)

    def abort_batch(self) -> None:
        self._batch = {}

    # output -----------------------------------------------------------------------------
    def finish(self, genomes: Genomes) -> dict[str, Any]:
        cls, mean = self.rows.get("cls"), self.rows.get("mean")
        if cls is None or mean is None:
            return {}
        opts = self.options
        names = self.info.classes
        labels, keep = np.asarray(genomes.labels), np.asarray(genomes.included)
        vectors = {"cls": cls, "mean": mean}
        out: dict[str, Any] = {"cls_cone": cls_cone_table(cls, labels, keep, names)}
        emb, maps, ova = embedding_tables(
            vectors, genomes.ids, labels, keep, names, genomes.seed, opts.probe_genomes
        )
        out["embeddings"] = emb
        out["embedding_maps"] = maps if "pca" in opts.methods else pd.DataFrame()
        out["one_vs_all"] = ova
        groups = bucket_groups(self.info, genomes.all_genomes)
        out["separability"] = separability_table(self.sums, groups)
        n_content = self.rows.get("n_content")
        assert n_content is not None
        out["output_histogram"] = output_histogram_table(mean, n_content, keep, opts.histogram_bins)
        nonlinear = [m for m in opts.methods if m != "pca"]
        if nonlinear:
            table, notes, seconds = nonlinear_map_table(
                vectors, genomes.ids, labels, keep, names, nonlinear,
                seed=genomes.seed, max_genomes=opts.map_genomes,
                perplexity=opts.perplexity, n_neighbors=opts.n_neighbors,
            )  # fmt: skip
            out["nonlinear_maps"] = table
            self.notes += [n for n in notes if n not in self.notes]
            self.summary["map_seconds"] = seconds
        return out

    def figures(self, tables: Mapping[str, Any], context: Any) -> Iterator[tuple[str, Any]]:
        from bertgeom.plots import geometry as g

        emb = tables.get("embeddings")
        if emb is not None and not emb.empty:
            yield "separability", g.separability_curves(emb, embeddings_at_0=True)
        hist = tables.get("output_histogram")
        if hist is not None and not hist.empty:
            yield "output_histogram", g.output_histograms(hist)
        pca = tables.get("embedding_maps")
        if pca is not None and not pca.empty and (pca["kind"] == "cls").any():
            yield "embedding_maps", g.embedding_maps(pca, "cls", embeddings_at_0=True)
        other = tables.get("nonlinear_maps")
        if other is None or other.empty:
            return
        for method in dict.fromkeys(other["method"]):
            rows = other[(other["method"] == method) & (other["kind"] == "cls")]
            if not rows.empty:
                yield (
                    f"embedding_maps_{method}",
                    g.embedding_maps(rows, "cls", method=method, embeddings_at_0=True),
                )

    @classmethod
    def section(cls, run: Any) -> Any:
        from bertgeom.report.stream_sections import embeddings_section

        return embeddings_section(run)

    @classmethod
    def findings(cls, run: Any) -> list[str]:
        from bertgeom.report import findings

        a = run.analyze
        return [
            s
            for s in (
                findings.cls_cone_finding(a.table("cls_cone")),
                findings.probe_finding(a.table("embeddings")),
            )
            if s
        ]


def _add_rows(sums: Sums, name: str, dim: int, index: torch.Tensor, value: torch.Tensor, size: int):
    """``Sums.index_add``, but each genome added into the running sum in place, in stream order:
    the within-class sum of squares is a difference of two large sums (ill-conditioned when the
    genomes' vectors nearly coincide, as in an untrained model), and this order keeps it equal
    to the engine before v2's in a single stream (a merge of parts adds their sums: equal to
    rounding)."""
    old = sums.get(name)
    if old is None:
        shape = list(value.shape)
        shape[dim] = size
        sums.values[name] = value.new_zeros(shape).index_add_(dim, index.to(value.device), value)
    else:
        old.index_add_(dim, index.to(old.device), value.to(old.device))


# --------------------------------------------------------------------------- tables
def cls_cone_table(
    cls: np.ndarray, labels: np.ndarray, keep: np.ndarray, names: Sequence[str]
) -> pd.DataFrame:
    """Per-class cone index of the [CLS] vectors ``cls`` (genome, hidden state, d_model) of the
    ``keep`` genomes at every hidden state (0 = embeddings)."""
    from bertgeom.geometry.cone import cone_sums

    x = torch.from_numpy(np.ascontiguousarray(cls[keep]))
    sums = cone_sums(x, torch.from_numpy(labels[keep]), len(names)).index()
    norm = (sums.index / sums.count.clamp(min=1)).numpy()  # (class, layer)
    return pd.DataFrame([
        {"class": names[c], "layer": layer, "cone": float(norm[c, layer]),
         "n": int(sums.count[c, layer])}
        for c in range(len(names)) for layer in range(norm.shape[1]) if sums.count[c, layer] > 0
    ])  # fmt: skip


def separability_table(sums: Sums, groups: Sequence[Sequence[int]]) -> pd.DataFrame:
    """Class separability (Fisher's criterion) of the mean-pooled vectors at every stream point
    and layer, from the per-bucket sums (``groups``: the buckets of each class)."""
    total, square, count = (sums.get(k) for k in ("pooled_sum", "pooled_sq", "pooled_n"))
    if total is None or square is None or count is None:
        return pd.DataFrame()
    s = merge_buckets(total, groups, 1)  # (layer, class, point, d)
    sq = merge_buckets(square, groups, 1)  # (layer, class, point)
    n = merge_buckets(count, groups, 0)  # (class,)
    live = n > 0
    if int(live.sum()) == 0:
        return pd.DataFrame()
    s, sq, n = s[:, live], sq[:, live], n[live]
    mu_c = s / n[None, :, None, None]
    mu = s.sum(1) / n.sum()  # (layer, point, d)
    between = (n[None, :, None] * ((mu_c - mu[:, None]) ** 2).sum(-1)).sum(1)
    within = (sq - (s**2).sum(-1) / n[None, :, None]).sum(1).clamp(min=0)
    # Σ||x||² - ||Σx||²/n cancels to rounding noise (~1e-16 of Σ||x||²) without spread
    spread = within > 1e-10 * sq.sum(1)
    within = torch.where(spread, within, 0.0)
    fisher = torch.where(spread, between / within.clamp(min=1e-300), torch.nan)
    return pd.DataFrame([
        {"layer": la, "point": pt, "fisher": float(fisher[la, i]),
         "between": float(between[la, i]), "within": float(within[la, i]),
         "n_classes": int(live.sum()), "n": int(n.sum())}
        for la in range(fisher.shape[0]) for i, pt in enumerate(LAYER_POINTS)
    ])  # fmt: skip


def output_histogram_table(
    mean: np.ndarray, n_content: np.ndarray, keep: np.ndarray, bins: int
) -> pd.DataFrame:
    """Histogram of the token-summed hidden states (mean-pooled vector x content tokens) of the
    ``keep`` genomes, per hidden state, pooled over genomes and model dimensions. Columns:
    layer, bin, lo, hi, count, density (count / (total x width), integrating to 1)."""
    rows = np.flatnonzero(keep)
    if len(rows) == 0:
        return pd.DataFrame()
    n = n_content[rows].astype(np.float64).reshape(-1)
    frames = []
    for layer in range(mean.shape[1]):
        total = (mean[rows, layer].astype(np.float64) * n[:, None]).reshape(-1)
        lo, hi = float(total.min()), float(total.max())
        if hi <= lo:
            lo, hi = lo - 0.5, hi + 0.5
        counts, edges = np.histogram(total, bins=bins, range=(lo, hi))
        width = edges[1] - edges[0]
        frames.append(pd.DataFrame({
            "layer": layer, "bin": np.arange(bins), "lo": edges[:-1], "hi": edges[1:],
            "count": counts, "density": counts / (counts.sum() * width),
        }))  # fmt: skip
    return pd.concat(frames, ignore_index=True)


def _subsample(keep: np.ndarray, at_most: int, seed: int) -> np.ndarray:
    """Sorted indices of the ``keep`` genomes, a seeded subsample of at most ``at_most``."""
    sel = np.flatnonzero(keep)
    if len(sel) > at_most:
        rng = np.random.default_rng(seed)
        sel = np.sort(rng.choice(sel, at_most, replace=False))
    return sel


def _live(x: np.ndarray) -> np.ndarray:
    """The hidden states whose vectors differ between genomes (the [CLS] embedding does not)."""
    return np.flatnonzero(x.std(axis=0).max(axis=-1) > 1e-9)


def embedding_tables(
    vectors: Mapping[str, np.ndarray],
    ids: Sequence[str],
    labels: np.ndarray,
    keep: np.ndarray,
    names: Sequence[str],
    seed: int,
    max_genomes: int,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Per-layer metrics (``embeddings``), 2-D PCA maps (``embedding_maps``) and one-vs-all
    probes (``one_vs_all``) of each kind of vector (genome, hidden state, d_model) over the
    ``keep`` genomes (a seeded subsample of at most ``max_genomes``)."""
    from bertgeom.geometry import embeddings as emb

    metrics, maps, ova_rows = [], [], []
    sel = _subsample(keep, max_genomes, seed)
    y = labels[sel]
    # cross-validated measures (k-NN, probe, ARI, one-vs-all) over the classes with >= 2 genomes
    counts = np.bincount(y, minlength=len(names))
    cv = counts[y] >= 2
    cv_ok = len(np.unique(y[cv])) >= 2
    for kind in KINDS:
        x = vectors[kind][sel].astype(np.float64)
        live = _live(x)
        if len(sel) < 3 or len(live) == 0:  # too few genomes for a distribution
            continue
        values, pca = _metrics(x[:, live], y, cv if cv_ok else None, seed)
        for metric, v in values.items():
            full = np.full(x.shape[1], np.nan)
            full[live] = v
            metrics += [
                {"layer": la, "kind": kind, "metric": metric, "value": float(full[la])}
                for la in range(x.shape[1])
            ]
        for j, layer in enumerate(live):
            maps.append(pd.DataFrame({
                "seq_id": np.asarray(ids)[sel], "class": np.asarray(names)[y], "layer": layer,
                "kind": kind, "pc1": pca.coordinates[j, :, 0], "pc2": pca.coordinates[j, :, 1],
            }))  # fmt: skip
        if cv_ok:
            ova = emb.one_vs_all_probes(x[cv][:, live], y[cv], seed=seed)
            ova_rows += [
                {"layer": int(layer), "kind": kind, "class": names[c],
                 "accuracy": ova.accuracy[j, i], "balanced_accuracy": ova.balanced_accuracy[j, i]}
                for j, layer in enumerate(live) for i, c in enumerate(ova.classes)
            ]  # fmt: skip
    maps_frame = pd.concat(maps, ignore_index=True) if maps else pd.DataFrame()
    return pd.DataFrame(metrics), maps_frame, pd.DataFrame(ova_rows)


def _metrics(
    x: np.ndarray, y: np.ndarray, cv: np.ndarray | None, seed: int
) -> tuple[dict[str, np.ndarray], Any]:
    """Per-layer metrics of ``x``; the cross-validated ones over the ``cv`` genomes (None:
    not computed)."""
    from bertgeom.geometry import embeddings as emb

    pca = emb.pca_summary(x, seed=seed)
    values = {
        "silhouette": emb.silhouette_by_layer(x, y, seed=seed),
        "anisotropy": emb.mean_pairwise_cosine(x),
        "pca1_variance": pca.explained_variance_ratio[:, 0],
    }
    normal = emb.normality_pvalues(x, n_components=2, seed=seed)  # None below 20 genomes
    if normal is not None:
        for j in range(normal.shape[1]):
            values[f"normality_p_pc{j + 1}"] = normal[:, j]
    if cv is not None:
        values["knn"] = emb.knn_accuracy(x[cv], y[cv], seed=seed, clip="class")
        values["probe"] = emb.probe_accuracy(x[cv], y[cv], seed=seed, folds=3)
        values["ari"] = emb.kmeans_ari(x[cv], y[cv], seed=seed)
    return values, pca


def nonlinear_map_table(
    vectors: Mapping[str, np.ndarray],
    ids: Sequence[str],
    labels: np.ndarray,
    keep: np.ndarray,
    names: Sequence[str],
    methods: Sequence[str],
    *,
    seed: int = 0,
    max_genomes: int = 500,
    perplexity: float = 30.0,
    n_neighbors: int = 15,
) -> tuple[pd.DataFrame, list[str], dict[str, float]]:
    """2-D t-SNE / UMAP maps of each kind of vector per hidden state, over the ``keep`` genomes
    (a seeded subsample of at most ``max_genomes``: the fits cost O(genome log genome) per
    layer and method).

    Returns
    -------
    the table (seq_id, class, layer, kind, method, dim1, dim2; one row per genome, hidden
    state, kind and method), notes on skipped or clipped maps, and seconds per method
    """
    from bertgeom.geometry import embeddings as emb

    sel = _subsample(keep, max_genomes, seed)
    frames, notes, seconds = [], [], dict.fromkeys(methods, 0.0)
    for kind in KINDS:
        x = vectors[kind][sel].astype(np.float64)
        live = _live(x)
        for method in methods:
            t0 = time.perf_counter()
            res = emb.nonlinear_maps(
                x[:, live], method, seed, perplexity=perplexity, n_neighbors=n_neighbors
            )
            seconds[method] += time.perf_counter() - t0
            if res.note and res.note not in notes:
                notes.append(res.note)
            if res.coordinates is None:
                continue
            for j, layer in enumerate(live):
                frames.append(pd.DataFrame({
                    "seq_id": np.asarray(ids)[sel], "class": np.asarray(names)[labels[sel]],
                    "layer": layer, "kind": kind, "method": method,
                    "dim1": res.coordinates[j, :, 0], "dim2": res.coordinates[j, :, 1],
                }))  # fmt: skip
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return table, notes, seconds
