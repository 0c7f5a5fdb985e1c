"""Tidy tables (pandas) from an accumulator's results: one row per layer/head/class/point.

Column layouts are documented in docs/formats.md (``analyze`` output); the figures in
``plots/geometry*.py`` read these tables.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from typing import Any

import numpy as np
import pandas as pd
import torch

from bertgeom.geometry.accumulate import (
    CONE_POINTS,
    SPECTRA_POINTS,
    SPECTRA_VALUES,
    GeometryAccumulator,
)
from bertgeom.geometry.cone import cone_sums
from bertgeom.geometry.direction import (
    directionality,
    principal_angles,
    subspace_overlap,
    symmetric_signature,
)
from bertgeom.geometry.domains import (
    attention_rollout,
    cls_domain_readout,
    domain_enrichment,
    position_membership,
)
from bertgeom.geometry.gates import GATES, HEAD_STATS, GateThresholds, gate_scores, label_heads
from bertgeom.geometry.masking import content_mask


def bucket_index(acc: GeometryAccumulator, all_genomes: bool) -> list[list[int]]:
    """Per class, the buckets its statistics sum over (correct only, or all genomes)."""
    c = acc.n_classes
    return [[k, c + k] if all_genomes else [k] for k in range(c)]


def _merge(t: torch.Tensor, groups: list[list[int]]) -> torch.Tensor:
    """Sum the bucket rows of each group, on the CPU (the tables are built there)."""
    t = t.cpu()
    return torch.stack([t[g].sum(0) for g in groups])


def _quantiles(values: np.ndarray) -> dict[str, float]:
    q10, q50, q90 = np.quantile(values, [0.1, 0.5, 0.9])
    return {
        "mean": float(values.mean()),
        "sd": float(values.std()),
        "q10": q10,
        "q50": q50,
        "q90": q90,
        "n": len(values),
    }


def cone_table(
    acc: GeometryAccumulator, ids: Sequence[str], classes: Sequence[str], keep: np.ndarray
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-genome cone indices (long) and their per-class summary over ``keep`` genomes."""
    cone = np.concatenate(acc.per_genome["cone"])  # (genome, layer, point)
    parts = {p: cone[:, :, i][..., None] for i, p in enumerate(CONE_POINTS)}
    for p in ("Z", "A"):
        if f"cone_{p}" in acc.per_genome:
            parts[p] = np.concatenate(acc.per_genome[f"cone_{p}"])  # (genome, layer, head)
    rows, summary = [], []
    for point, values in parts.items():
        g, n_layers, n_heads = values.shape
        heads = [-1] if n_heads == 1 else list(range(n_heads))
        frame = pd.DataFrame(
            {
                "seq_id": np.repeat(np.asarray(ids), n_layers * n_heads),
                "class": np.repeat(np.asarray(classes), n_layers * n_heads),
                "included": np.repeat(keep, n_layers * n_heads),
                "layer": np.tile(np.repeat(np.arange(n_layers), n_heads), g),
                "point": point,
                "head": np.tile(heads, g * n_layers),
                "cone": values.reshape(-1),
            }
        )
        rows.append(frame)
        sub = frame[frame.included]
        for (cls, layer, head), grp in sub.groupby(["class", "layer", "head"]):
            summary.append(
                {
                    "class": cls,
                    "layer": layer,
                    "point": point,
                    "head": head,
                    **_quantiles(grp.cone.to_numpy()),
                }
            )
    return pd.concat(rows, ignore_index=True), pd.DataFrame(summary)


def cls_cone_table(
    acc: GeometryAccumulator, labels: np.ndarray, keep: np.ndarray, names: Sequence[str]
) -> pd.DataFrame:
    """Per-class cone index of the [CLS] vectors at every layer (0 = embeddings)."""
    cls = np.concatenate(
        [np.concatenate(acc.per_genome["cls_0"]), np.concatenate(acc.per_genome["cls"])], 1
    )[keep]
    sums = cone_sums(torch.from_numpy(cls), torch.from_numpy(labels[keep]), len(names)).index()
    norm = (sums.index / sums.count.clamp(min=1)).numpy()  # (class, layer)
    return pd.DataFrame([
        {"class": names[c], "layer": layer, "cone": float(norm[c, layer]),
         "n": int(sums.count[c, layer])}
        for c in range(len(names)) for layer in range(norm.shape[1]) if sums.count[c, layer] > 0
    ])  # fmt: skip


def gates_table(
    acc: GeometryAccumulator,
    names: Sequence[str],
    all_genomes: bool,
    thresholds: GateThresholds | None = None,
) -> pd.DataFrame:
    """Gate scores, label and per-head statistics per (layer, head, class and 'all')."""
    groups = bucket_index(acc, all_genomes)
    rows = []
    for layer, stats in enumerate(acc.gates):
        if stats is None:
            continue
        merged = type(stats)(
            *(
                _merge(getattr(stats, f), groups)
                for f in ("n_genomes", "sums", "profile_sum", "profile_entropy_sum", "n_profiles")
            )
        )
        s = gate_scores(merged)
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
                row = {"layer": layer, "head": h, "class": cls}
                row.update({g: float(values[i, h]) for i, g in enumerate(GATES)})
                row["label"] = str(labels[h])
                row.update({k: float(hstats[i, h]) for i, k in enumerate(HEAD_STATS)})
                row["variability"] = float(var[h])
                rows.append(row)
    return pd.DataFrame(rows)


def direction_table(acc: GeometryAccumulator, keep: np.ndarray) -> pd.DataFrame:
    """Directionality of each head's query-key form from the weights, and on data."""
    rows = []
    asym = _per_genome_mean(acc, "attention_asymmetry", keep)
    score = _per_genome_mean(acc, "score_antisymmetry", keep)
    for layer, module in enumerate(acc.layers):
        sa = module.attention.self
        wq, wk = sa.query.weight.detach().double().cpu(), sa.key.weight.detach().double().cpu()
        h = sa.num_attention_heads
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


def _per_genome_mean(acc: GeometryAccumulator, name: str, keep: np.ndarray) -> Any:
    if name not in acc.per_genome:
        return None
    values = np.concatenate(acc.per_genome[name])[keep]  # (genome, layer, head)
    return values.mean(0) if len(values) else np.full(values.shape[1:], np.nan)


def spectra_table(
    acc: GeometryAccumulator, names: Sequence[str], all_genomes: bool = False
) -> pd.DataFrame:
    """Effective, stable and numerical rank and von Neumann entropy per (layer, head, point,
    class), averaged over the spectra subset's correctly classified genomes (all of the subset
    with ``all_genomes``)."""
    rows = []
    buckets = np.concatenate(acc.spectra_buckets) if acc.spectra_buckets else np.zeros(0, int)
    labels = buckets % acc.n_classes
    use = np.ones(len(buckets), bool) if all_genomes else buckets < acc.n_classes
    for point in SPECTRA_POINTS:
        if point not in acc.spectra:
            continue
        v = np.concatenate(acc.spectra[point])[use]  # (genome, layer, head, 4)
        labels_used = labels[use]
        for c in np.unique(labels_used):
            m = v[labels_used == c].mean(0)
            for layer in range(m.shape[0]):
                for head in range(m.shape[1]):
                    row = {
                        "layer": layer, "head": head if m.shape[1] > 1 else -1, "point": point,
                        "class": names[c],
                    }  # fmt: skip
                    row |= {k: float(m[layer, head, i]) for i, k in enumerate(SPECTRA_VALUES)}
                    row["n"] = int((labels_used == c).sum())
                    rows.append(row)
    out = pd.DataFrame(rows)
    if not acc.options.compat:
        compat = [c for c in SPECTRA_VALUES if c.endswith("_compat")]
        out = out.drop(columns=compat, errors="ignore")
    return out


def separability_table(
    acc: GeometryAccumulator, names: Sequence[str], all_genomes: bool
) -> pd.DataFrame:
    """Class separability of the mean-pooled vectors at every stream point and layer.

    Fisher's criterion from the streamed per-class sums: with class means μ_c, overall mean μ
    and n_c genomes per class, ``between = Σ_c n_c ||μ_c - μ||²``, ``within = Σ_c Σ_i ||x_i -
    μ_c||²`` and ``fisher = between / within`` (0 when all class means coincide; NaN with no
    spread within classes). Over correctly classified genomes, or all with ``all_genomes``.
    """
    if acc.pooled_sum is None or acc.pooled_sq is None:
        return pd.DataFrame()
    groups = bucket_index(acc, all_genomes)
    sums = torch.stack([acc.pooled_sum[:, g].sum(1) for g in groups], 1).cpu()  # (l, c, p, d)
    sq = torch.stack([acc.pooled_sq[:, g].sum(1) for g in groups], 1).cpu()  # (l, c, p)
    n = torch.stack([acc.pooled_n[g].sum() for g in groups])  # (class,)
    live = n > 0
    if int(live.sum()) == 0:
        return pd.DataFrame()
    sums, sq, n = sums[:, live], sq[:, live], n[live]
    mu_c = sums / n[None, :, None, None]
    mu = sums.sum(1) / n.sum()  # (layer, point, d)
    between = (n[None, :, None] * ((mu_c - mu[:, None]) ** 2).sum(-1)).sum(1)
    within = (sq - (sums**2).sum(-1) / n[None, :, None]).sum(1).clamp(min=0)
    # Σ||x||² - ||Σx||²/n cancels to rounding noise (~1e-16 of Σ||x||²) without spread
    spread = within > 1e-10 * sq.sum(1)
    within = torch.where(spread, within, 0.0)
    fisher = torch.where(spread, between / within.clamp(min=1e-300), torch.nan)
    return pd.DataFrame([
        {"layer": la, "point": pt, "fisher": float(fisher[la, i]),
         "between": float(between[la, i]), "within": float(within[la, i]),
         "n_classes": int(live.sum()), "n": int(n.sum())}
        for la in range(fisher.shape[0]) for i, pt in enumerate(CONE_POINTS)
    ])  # fmt: skip


def _gather(chunks: Sequence[np.ndarray], rows: np.ndarray, layer: int | None = None) -> np.ndarray:
    """Rows ``rows`` (sorted genome indices) of per-genome result chunks, optionally one layer
    (axis 1), without joining all the chunks first."""
    out, start = [], 0
    for c in chunks:
        lo, hi = np.searchsorted(rows, [start, start + len(c)])
        if hi > lo:
            part = c[rows[lo:hi] - start]
            out.append(part if layer is None else part[:, layer])
        start += len(c)
    return np.concatenate(out) if out else np.zeros((0,))


def output_histogram_table(
    acc: GeometryAccumulator, keep: np.ndarray, bins: int | None = None
) -> pd.DataFrame:
    """Histogram of the token-summed layer output per hidden state (0 = embeddings), pooled over
    the ``keep`` genomes and the model dimensions (science.md §6; the research code's figure).

    The token sum ``Σ_pos y_pos`` over the real tokens is the kept mean-pooled vector times the
    genome's number of real tokens; ``bins`` equal-width bins span each layer's range
    (``AccumulatorOptions.histogram_bins`` by default). Columns: layer, bin, lo, hi, count,
    density (count / (total x width), integrating to 1).
    """
    if "mean" not in acc.per_genome or "n_real" not in acc.per_genome:
        return pd.DataFrame()
    rows = np.flatnonzero(keep)
    if len(rows) == 0:
        return pd.DataFrame()
    bins = bins or acc.options.histogram_bins
    n_real = _gather(acc.per_genome["n_real"], rows, 0).reshape(-1)  # (genome,)
    n_layers = acc.per_genome["mean"][0].shape[1]
    frames = []
    for layer in range(n_layers + 1):
        mean = (
            _gather(acc.per_genome["mean_0"], rows, 0)
            if layer == 0
            else _gather(acc.per_genome["mean"], rows, layer - 1)
        )
        total = (mean.astype(np.float64) * n_real[:, None]).reshape(-1)
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


def head_overlap_table(acc: GeometryAccumulator) -> pd.DataFrame:
    """Overlap of the heads' query subspaces and of their key subspaces within each layer
    (science.md §5; ``direction.subspace_overlap``: mean cos² of the principal angles, 1 = the
    same subspace of the residual stream), for every ordered pair of heads."""
    frames = []
    for layer, module in enumerate(acc.layers):
        sa = module.attention.self
        h = sa.num_attention_heads
        wq, wk = sa.query.weight.detach().double().cpu(), sa.key.weight.detach().double().cpu()
        oq, ok = subspace_overlap(wq, h).numpy(), subspace_overlap(wk, h).numpy()
        i, j = np.meshgrid(np.arange(h), np.arange(h), indexing="ij")
        frames.append(pd.DataFrame({
            "layer": layer, "head": i.ravel(), "other": j.ravel(),
            "query_overlap": oq.ravel(), "key_overlap": ok.ravel(),
        }))  # fmt: skip
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def row_entropy_table(
    acc: GeometryAccumulator, classes: np.ndarray, keep: np.ndarray, names: Sequence[str]
) -> pd.DataFrame:
    """Mean normalised attention row entropy per (layer, head, class)."""
    if "row_entropy" not in acc.per_genome:
        return pd.DataFrame()
    v = np.concatenate(acc.per_genome["row_entropy"])  # (genome, layer, head)
    rows = []
    for c, name in enumerate(names):
        sel = keep & (classes == c)
        if not sel.any():
            continue
        m = v[sel].mean(0)
        rows += [
            {"layer": la, "head": h, "class": name, "row_entropy": float(m[la, h])}
            for la in range(m.shape[0])
            for h in range(m.shape[1])
        ]
    return pd.DataFrame(rows)


def domains_table(
    acc: GeometryAccumulator, names: Sequence[str], all_genomes: bool, alpha: float = 0.05
) -> pd.DataFrame:
    """Attention share vs token share per (layer, head, class, domain): the paper's
    proportions z-test and the genome-level t-test, both at the Bonferroni level."""
    stats = [s for s in acc.domain_stats if s is not None]
    if not stats:
        return pd.DataFrame()
    groups = bucket_index(acc, all_genomes)
    merged = [
        type(s)(s.names, *(_merge(getattr(s, f.name), groups) for f in fields(s)[1:]))
        for s in stats
    ]
    e = domain_enrichment(merged, alpha=alpha)
    idx = np.argwhere(np.ones(tuple(e.z.shape), dtype=bool))
    return pd.DataFrame({
        "layer": idx[:, 0], "class": np.asarray(names)[idx[:, 1]], "head": idx[:, 2],
        "domain": np.asarray(e.names)[idx[:, 3]],
        "attention_share": e.attention_share.cpu().numpy().reshape(-1),
        "token_share": e.token_share.cpu().numpy()[idx[:, 1], idx[:, 3]],
        "z": e.z.cpu().numpy().reshape(-1), "p_value": e.p_value.cpu().numpy().reshape(-1),
        "significant": e.significant.cpu().numpy().reshape(-1),
        "excess": e.excess.cpu().numpy().reshape(-1), "t": e.t.cpu().numpy().reshape(-1),
        "p_genome": e.p_genome.cpu().numpy().reshape(-1),
        "significant_genome": e.significant_genome.cpu().numpy().reshape(-1),
    })  # fmt: skip


def embedding_tables(
    acc: GeometryAccumulator,
    ids: Sequence[str],
    labels: np.ndarray,
    keep: np.ndarray,
    names: Sequence[str],
    seed: int = 0,
    max_genomes: int = 3000,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Per-layer separability metrics, 2-D PCA maps and one-vs-all probes of the [CLS] and
    mean-pooled vectors (layer 0 = the embeddings) over ``keep`` genomes (a seeded subsample of
    at most ``max_genomes`` for the cross-validated probes)."""
    from bertgeom.geometry import embeddings as emb

    metrics, maps, ova_rows = [], [], []
    sel = np.flatnonzero(keep)
    rng = np.random.default_rng(seed)
    if len(sel) > max_genomes:
        sel = np.sort(rng.choice(sel, max_genomes, replace=False))
    y = labels[sel]
    # cross-validated measures (k-NN, probe, ARI, one-vs-all) over the classes with >= 2 genomes
    counts = np.bincount(y, minlength=len(names))
    cv = counts[y] >= 2
    cv_ok = len(np.unique(y[cv])) >= 2
    for kind in ("cls", "mean"):
        x, live = _embedding_vectors(acc, kind, sel)
        if len(sel) < 3 or len(live) == 0:  # too few genomes for a distribution
            continue
        values, pca = _embedding_metrics(x[:, live], y, cv if cv_ok else None, seed)
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
            ova = emb.one_vs_all_accuracy(x[cv][:, live], y[cv], seed=seed)
            ova_rows += [
                {"layer": int(layer), "kind": kind, "class": names[c],
                 "accuracy": ova.accuracy[j, i], "balanced_accuracy": ova.balanced_accuracy[j, i]}
                for j, layer in enumerate(live) for i, c in enumerate(ova.classes)
            ]  # fmt: skip
    maps_frame = pd.concat(maps, ignore_index=True) if maps else pd.DataFrame()
    return pd.DataFrame(metrics), maps_frame, pd.DataFrame(ova_rows)


def _embedding_vectors(
    acc: GeometryAccumulator, kind: str, sel: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(genome, layer, d_model) ``kind`` vectors of the ``sel`` genomes (layer 0 = the
    embeddings), and the layers whose vectors differ between genomes."""
    x = np.concatenate(
        [np.concatenate(acc.per_genome[f"{kind}_0"]), np.concatenate(acc.per_genome[kind])], 1
    )[sel].astype(np.float64)
    # a layer whose vectors are all the same (the [CLS] embedding) has no distribution
    return x, np.flatnonzero(x.std(axis=0).max(axis=-1) > 1e-9)


def nonlinear_map_table(
    acc: GeometryAccumulator,
    ids: Sequence[str],
    labels: np.ndarray,
    keep: np.ndarray,
    names: Sequence[str],
    methods: Sequence[str],
    *,
    seed: int = 0,
    max_genomes: int = 2000,
    perplexity: float = 30.0,
    n_neighbors: int = 15,
) -> tuple[pd.DataFrame, list[str], dict[str, float]]:
    """2-D t-SNE / UMAP maps of the [CLS] and mean-pooled vectors per hidden state, over
    ``keep`` genomes (a seeded subsample of at most ``max_genomes``: the fits cost
    O(genome log genome) per layer and method).

    Returns
    -------
    the table (seq_id, class, layer, kind, method, dim1, dim2; one row per genome, hidden
    state, kind and method), notes on skipped or clipped maps, and seconds per method
    """
    import time

    from bertgeom.geometry import embeddings as emb

    sel = np.flatnonzero(keep)
    if len(sel) > max_genomes:
        rng = np.random.default_rng(seed)
        sel = np.sort(rng.choice(sel, max_genomes, replace=False))
    frames, notes, seconds = [], [], dict.fromkeys(methods, 0.0)
    for kind in ("cls", "mean"):
        x, live = _embedding_vectors(acc, kind, sel)
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


def _embedding_metrics(
    x: np.ndarray, y: np.ndarray, cv: np.ndarray | None, seed: int
) -> tuple[dict[str, np.ndarray], Any]:
    """Per-layer metrics of ``x``; the cross-validated ones over the ``cv`` genomes (None:
    not computed)."""
    from bertgeom.geometry import embeddings as emb

    pca = emb.pca_summary(x, seed=seed)
    values = {
        "silhouette": emb.silhouette_by_layer(x, y, seed=seed),
        "anisotropy": emb.anisotropy(x, seed=seed),
        "pca1_variance": pca.explained_variance_ratio[:, 0],
    }
    normal = emb.normality_pvalues(x, n_components=2, seed=seed)  # None below 20 genomes
    if normal is not None:
        for j in range(normal.shape[1]):
            values[f"normality_p_pc{j + 1}"] = normal[:, j]
    if cv is not None:
        values["knn"] = emb.knn_accuracy(x[cv], y[cv], seed=seed)
        values["probe"] = emb.probe_accuracy(x[cv], y[cv], seed=seed, folds=3)
        values["ari"] = emb.kmeans_ari(x[cv], y[cv], seed=seed)
    return values, pca


def class_mean_maps(acc: GeometryAccumulator, all_genomes: bool) -> np.ndarray | None:
    """(layer, head, class, q_pos, k_pos) mean attention maps: row q averaged over the genomes
    whose position q is real (NaN-free: 0 for empty classes and positions)."""
    if acc.map_sum is None:
        return None
    groups = bucket_index(acc, all_genomes)
    total = torch.stack([acc.map_sum[:, :, g].sum(2) for g in groups], 2).cpu()
    n = torch.stack([acc.map_count[g].sum(0) for g in groups]).float()  # (class, q)
    return (total / n.clamp(min=1)[None, None, :, :, None]).numpy()


def rollout_table(
    acc: GeometryAccumulator, names: Sequence[str], all_genomes: bool, residual: float = 0.5
) -> pd.DataFrame:
    """Where [CLS] finally reads from, by spike domain: the attention rollout (Abnar & Zuidema
    2020; ``domains.attention_rollout``, identity weight ``residual``) of each class's mean maps
    over all layers, its [CLS] row mapped to domains (``domains.cls_domain_readout``), beside
    each domain's share of the content tokens. Columns: class, domain, rollout_share,
    token_share, special (the [CLS] row's weight on [CLS] and [SEP] themselves)."""
    mean = class_mean_maps(acc, all_genomes)
    if mean is None or acc.domains is None:
        return pd.DataFrame()
    groups = bucket_index(acc, all_genomes)
    real = torch.stack([acc.map_count[g].sum(0) for g in groups]) > 0  # (class, q)
    rows = []
    for c, name in enumerate(names):
        if not bool(real[c].any()):
            continue
        mask = real[c : c + 1]
        r = attention_rollout(torch.from_numpy(mean[:, :, c]).double()[None], mask, residual)
        out = cls_domain_readout(r, mask, acc.domains)
        content = content_mask(mask, True)[..., None]
        member = position_membership(mask, acc.domains).double() * content
        tokens = (member.sum(1) / content.sum(1).clamp(min=1))[0]
        rows += [
            {"class": name, "domain": d, "rollout_share": float(out.share[0, i]),
             "token_share": float(tokens[i]), "special": float(out.special[0])}
            for i, d in enumerate(out.names)
        ]  # fmt: skip
    return pd.DataFrame(rows)


def measure_tables(
    acc: GeometryAccumulator,
    ids: Sequence[str],
    labels: np.ndarray,
    keep: np.ndarray,
    names: Sequence[str],
    all_genomes: bool,
    seed: int,
    thresholds: GateThresholds | None = None,
) -> dict[str, pd.DataFrame]:
    """The tables of the families ``acc`` computed, but the spike domains: ``cone`` (per
    genome), ``cone_summary``, ``cls_cone``, ``embeddings``, ``embedding_maps``, ``one_vs_all``,
    ``separability``, ``output_histogram``, ``gates`` (labels by ``thresholds``),
    ``row_entropy``, ``direction``, ``head_overlap``, ``spectra`` and ``flow``. Class
    statistics are over the ``keep`` genomes; the bucketed sums (gates, separability) and the
    spectra subset use the same rule: correctly classified genomes, or all with
    ``all_genomes`` (``keep`` is then all genomes)."""
    t: dict[str, pd.DataFrame] = {}
    if acc.wants("cone"):
        t["cone"], t["cone_summary"] = cone_table(acc, ids, np.asarray(names)[labels], keep)
    if acc.wants("embeddings"):
        t["cls_cone"] = cls_cone_table(acc, labels, keep, names)
        t["embeddings"], t["embedding_maps"], t["one_vs_all"] = embedding_tables(
            acc, ids, labels, keep, names, seed=seed
        )
        t["separability"] = separability_table(acc, names, all_genomes)
        t["output_histogram"] = output_histogram_table(acc, keep)
    if acc.wants("gates"):
        t["gates"] = gates_table(acc, names, all_genomes, thresholds)
        t["row_entropy"] = row_entropy_table(acc, labels, keep, names)
    if acc.wants("direction"):
        t["direction"] = direction_table(acc, keep)
        t["head_overlap"] = head_overlap_table(acc)
    if acc.wants("spectra"):
        t["spectra"] = spectra_table(acc, names, all_genomes)
    t["flow"] = flow_table(
        t.get("cone_summary", pd.DataFrame()),
        t.get("spectra", pd.DataFrame()),
        t.get("separability", pd.DataFrame()),
    )
    return t


def flow_table(
    cone_summary: pd.DataFrame,
    spectra: pd.DataFrame,
    separability: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Change of per-layer summaries between consecutive stream points X->C->O->U->F->Y: the
    median cone index and the effective rank (averaged over classes) and Fisher's class
    separability of the mean-pooled vectors; each metric whose table is there."""
    from bertgeom.geometry.flow import stream_deltas

    def per_point(values: pd.Series, layers: list[int]) -> dict[str, np.ndarray]:
        return {p: np.array([values.get((p, la), np.nan) for la in layers]) for p in CONE_POINTS}

    summaries: dict[str, dict[str, np.ndarray]] = {}
    if not cone_summary.empty:
        whole = cone_summary[cone_summary["head"] == -1]
        if not whole.empty:
            layers = sorted(whole.layer.unique())
            summaries["cone"] = per_point(whole.groupby(["point", "layer"]).q50.mean(), layers)
    if not spectra.empty:
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
        records += stream_deltas({metric: values}, points=CONE_POINTS).records()
    out = pd.DataFrame(records)
    if not out.empty:
        out["transition"] = out["source"] + "->" + out["target"]
    return out
