"""Tidy tables (pandas) from an accumulator's results: one row per layer/head/class/point.

Column layouts are documented in docs/formats.md (``analyze`` output); the figures in
``plots/geometry*.py`` read these tables.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from bertgeom.geometry.accumulate import CONE_POINTS, SPECTRA_POINTS, GeometryAccumulator
from bertgeom.geometry.cone import cone_sums
from bertgeom.geometry.direction import directionality, principal_angles, symmetric_signature
from bertgeom.geometry.domains import domain_enrichment
from bertgeom.geometry.gates import GATES, HEAD_STATS, GateThresholds, gate_scores, label_heads


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


def spectra_table(acc: GeometryAccumulator, names: Sequence[str]) -> pd.DataFrame:
    """Effective, stable and numerical rank and von Neumann entropy per (layer, head, point,
    class) over the spectra subset, plus the normalised row entropy of attention."""
    rows = []
    labels = np.concatenate(acc.spectra_labels) if acc.spectra_labels else np.zeros(0, int)
    for point in SPECTRA_POINTS:
        if point not in acc.spectra:
            continue
        v = np.concatenate(acc.spectra[point])  # (genome, layer, head, 4)
        for c in np.unique(labels):
            m = v[labels == c].mean(0)
            for layer in range(m.shape[0]):
                for head in range(m.shape[1]):
                    rows.append({
                        "layer": layer, "head": head if m.shape[1] > 1 else -1, "point": point,
                        "class": names[c], "effective_rank": m[layer, head, 0],
                        "stable_rank": m[layer, head, 1], "numerical_rank": m[layer, head, 2],
                        "von_neumann": m[layer, head, 3], "n": int((labels == c).sum()),
                    })  # fmt: skip
    out = pd.DataFrame(rows)
    return out


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
    """Attention share vs token share per (layer, head, class, domain), z-tests, Bonferroni."""
    stats = [s for s in acc.domain_stats if s is not None]
    if not stats:
        return pd.DataFrame()
    groups = bucket_index(acc, all_genomes)
    merged = [
        type(s)(
            s.names,
            _merge(s.attention, groups),
            _merge(s.content_attention, groups),
            _merge(s.tokens, groups),
            _merge(s.n_tokens, groups),
        )
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
    counts = np.bincount(y, minlength=len(names))
    cv_ok = len(np.unique(y)) >= 2 and counts[counts > 0].min() >= 2
    for kind in ("cls", "mean"):
        x, live = _embedding_vectors(acc, kind, sel)
        if len(sel) < 3 or len(live) == 0:  # too few genomes for a distribution
            continue
        values, pca = _embedding_metrics(x[:, live], y, cv_ok, seed)
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
            ova = emb.one_vs_all_accuracy(x[:, live], y, seed=seed)
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
    x: np.ndarray, y: np.ndarray, cv_ok: bool, seed: int
) -> tuple[dict[str, np.ndarray], Any]:
    from bertgeom.geometry import embeddings as emb

    pca = emb.pca_summary(x, seed=seed)
    values = {
        "silhouette": emb.silhouette_by_layer(x, y, seed=seed),
        "anisotropy": emb.anisotropy(x, seed=seed),
        "pca1_variance": pca.explained_variance_ratio[:, 0],
    }
    if cv_ok:
        values["knn"] = emb.knn_accuracy(x, y, seed=seed)
        values["probe"] = emb.probe_accuracy(x, y, seed=seed, folds=3)
        values["ari"] = emb.kmeans_ari(x, y, seed=seed)
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


def measure_tables(
    acc: GeometryAccumulator,
    ids: Sequence[str],
    labels: np.ndarray,
    keep: np.ndarray,
    names: Sequence[str],
    all_genomes: bool,
    seed: int,
) -> dict[str, pd.DataFrame]:
    """The tables of the families ``acc`` computed, but the spike domains: ``cone`` (per
    genome), ``cone_summary``, ``cls_cone``, ``embeddings``, ``embedding_maps``, ``one_vs_all``,
    ``gates``, ``row_entropy``, ``direction``, ``spectra`` and ``flow``; class statistics over
    the ``keep`` genomes (gate sums over all genomes with ``all_genomes``)."""
    t: dict[str, pd.DataFrame] = {}
    if acc.wants("cone"):
        t["cone"], t["cone_summary"] = cone_table(acc, ids, np.asarray(names)[labels], keep)
    if acc.wants("embeddings"):
        t["cls_cone"] = cls_cone_table(acc, labels, keep, names)
        t["embeddings"], t["embedding_maps"], t["one_vs_all"] = embedding_tables(
            acc, ids, labels, keep, names, seed=seed
        )
    if acc.wants("gates"):
        t["gates"] = gates_table(acc, names, all_genomes)
        t["row_entropy"] = row_entropy_table(acc, labels, keep, names)
    if acc.wants("direction"):
        t["direction"] = direction_table(acc, keep)
    if acc.wants("spectra"):
        t["spectra"] = spectra_table(acc, names)
    if "cone_summary" in t:
        t["flow"] = flow_table(t["cone_summary"], t.get("spectra", pd.DataFrame()))
    return t


def flow_table(cone_summary: pd.DataFrame, spectra: pd.DataFrame) -> pd.DataFrame:
    """Change of the median cone index and of the effective rank between consecutive stream
    points (X->C->O->U->F->Y for the cone, C->Y for the rank), per layer, averaged over classes."""
    from bertgeom.geometry.flow import stream_deltas

    records = []
    whole = cone_summary[cone_summary["head"] == -1]
    if not whole.empty:
        med = whole.groupby(["point", "layer"]).q50.mean()
        layers = sorted(whole.layer.unique())
        summaries = {
            "cone": {p: np.array([med.get((p, la), np.nan) for la in layers]) for p in CONE_POINTS}
        }
        if not spectra.empty:
            er = spectra[spectra["head"] == -1].groupby(["point", "layer"]).effective_rank.mean()
            summaries["effective_rank"] = {
                p: np.array([er.get((p, la), np.nan) for la in layers]) for p in ("C", "Y")
            }
        for metric, per_point in summaries.items():
            d = stream_deltas({metric: per_point}, points=tuple(per_point))
            records += d.records()
    out = pd.DataFrame(records)
    if not out.empty:
        out["transition"] = out["source"] + "->" + out["target"]
    return out
