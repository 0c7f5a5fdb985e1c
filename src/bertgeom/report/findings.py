"""The geometry findings of a run, stated as sentences computed from the ``analyze`` tables.

Each function takes one tidy table (``docs/formats.md``) and returns escaped HTML sentences
(``None`` when the table lacks what the finding needs), so the summary and the geometry sections
say the same thing. Layer numbering follows the tables: attention measures count encoder layers
from 0; [CLS] and embedding measures count hidden states, 0 being the embedding output.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from bertgeom.report.html import esc


def _has(table: pd.DataFrame | None, columns: Iterable[str]) -> bool:
    return table is not None and not table.empty and set(columns) <= set(table.columns)


def hidden_state(layer: int) -> str:
    """Name of hidden state ``layer`` (0 = the embedding output)."""
    return "hidden state 0 (the embeddings)" if layer == 0 else f"hidden state {layer}"


def _ranges(layers: list[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``layers 0–2 and 5``."""
    parts, start = [], None
    for i, layer in enumerate(layers):
        if start is None:
            start = layer
        if i + 1 == len(layers) or layers[i + 1] != layer + 1:
            parts.append(f"{start}" if start == layer else f"{start}–{layer}")
            start = None
    word = "layer" if len(layers) == 1 else "layers"
    return f"{word} {', '.join(parts[:-1]) + ' and ' + parts[-1] if len(parts) > 1 else parts[0]}"


def _flat(curve: pd.Series, digits: int) -> bool:
    """The curve's values agree to the printed precision."""
    return bool(curve.max() - curve.min() < 0.5 * 10.0**-digits)


def pooled_gates(gates: pd.DataFrame) -> pd.DataFrame:
    """The gate rows pooled over classes (``class == "all"``), else every row."""
    pooled = gates[gates["class"] == "all"] if "class" in gates.columns else gates
    return pooled if not pooled.empty else gates


def gate_label_counts(gates: pd.DataFrame) -> pd.DataFrame:
    """Heads per (layer, label) of the pooled gate table, wide: one row per layer."""
    pooled = pooled_gates(gates)
    counts = pooled.groupby(["layer", "label"]).size().unstack(fill_value=0)
    counts.columns.name = None
    return counts.reset_index()


def gate_finding(gates: pd.DataFrame | None) -> str | None:
    """Which gate label dominates in each layer (runs of layers with the same one merged)."""
    if not _has(gates, ("layer", "head", "label")):
        return None
    pooled = pooled_gates(gates)
    runs: list[list] = []  # [label, layers, heads with the label, heads]
    for layer, grp in pooled.groupby("layer", sort=True):
        counts = grp["label"].value_counts()
        unique = len(counts) == 1 or counts.iloc[0] > counts.iloc[1]
        label = str(counts.index[0]) if unique else "tie"
        if runs and runs[-1][0] == label:
            runs[-1][1].append(int(layer))
            runs[-1][2] += int(counts.iloc[0])
            runs[-1][3] += len(grp)
        else:
            runs.append([label, [int(layer)], int(counts.iloc[0]), len(grp)])
    parts = []
    for label, layers, n, total in runs:
        if label == "tie":
            parts.append(f"{_ranges(layers)}: no single commonest label")
        else:
            parts.append(f"{_ranges(layers)}: “{esc(label)}” ({n} of {total} heads)")
    return "Commonest gate label per layer (pooled over classes): " + "; ".join(parts) + "."


def cls_cone_finding(cls_cone: pd.DataFrame | None) -> str | None:
    """Where the per-class [CLS] cone index (mean over classes) is highest and lowest."""
    if not _has(cls_cone, ("layer", "cone")):
        return None
    curve = cls_cone.groupby("layer")["cone"].mean()
    hi, lo = int(curve.idxmax()), int(curve.idxmin())
    if _flat(curve, 3):
        return (
            f"The normalised cone index of the [CLS] vectors within each class is "
            f"{curve.max():.3f} at every hidden state (mean over classes)."
        )
    return (
        f"The normalised cone index of the [CLS] vectors within each class (mean over classes) "
        f"peaks at {hidden_state(hi)} with {curve[hi]:.3f} and is lowest at {hidden_state(lo)} "
        f"with {curve[lo]:.3f}."
    )


def token_cone_finding(cone_summary: pd.DataFrame | None) -> str | None:
    """Median token-row cone index of the layer outputs Y: where it is highest and lowest."""
    if not _has(cone_summary, ("layer", "point", "head", "q50")):
        return None
    y = cone_summary[(cone_summary["point"] == "Y") & (cone_summary["head"] == -1)]
    if y.empty:
        return None
    curve = y.groupby("layer")["q50"].mean()
    hi, lo = int(curve.idxmax()), int(curve.idxmin())
    if _flat(curve, 3):
        return (
            f"Within a genome, the median normalised cone index of the token vectors of the "
            f"layer output Y is {curve.mean():.3f} after every layer (mean over classes)."
        )
    return (
        f"Within a genome, the token vectors of the layer output Y are most aligned after layer "
        f"{hi} (median normalised cone index {curve[hi]:.3f}, mean over classes) and least after "
        f"layer {lo} ({curve[lo]:.3f})."
    )


def probe_finding(embeddings: pd.DataFrame | None) -> str | None:
    """The hidden state where linear-probe (and k-NN) accuracy on [CLS] first peaks."""
    if not _has(embeddings, ("layer", "kind", "metric", "value")):
        return None
    out = []
    for metric, name in (("probe", "linear-probe"), ("knn", "k-NN")):
        rows = embeddings[(embeddings["metric"] == metric) & (embeddings["kind"] == "cls")]
        rows = rows.dropna(subset=["value"]).sort_values("layer")
        if rows.empty:
            continue
        best = rows["value"].max()
        first = int(rows[rows["value"] >= best - 1e-12]["layer"].iloc[0])
        out.append(
            f"{name} accuracy on the [CLS] vectors peaks at {best:.3f}, first reached at "
            f"{hidden_state(first)}"
        )
    if not out:
        return None
    return "Class separability: " + "; ".join(out) + "."


def significant_domains(domains: pd.DataFrame) -> pd.DataFrame:
    """Significant (layer, class, head, domain) rows, strongest enrichment (z) first."""
    sig = domains[domains["significant"].astype(bool)]
    return sig.sort_values("z", ascending=False, key=lambda z: z.astype(float))


def domain_finding(domains: pd.DataFrame | None, top: int = 3) -> str | None:
    """The heads with the strongest significant enrichment of attention on a domain."""
    need = ("layer", "class", "head", "domain", "attention_share", "token_share", "z")
    if not _has(domains, (*need, "significant")):
        return None
    sig = significant_domains(domains)
    tests = len(domains)
    enriched = sig[sig["z"] > 0]
    if enriched.empty:
        return (
            f"No head attends to any spike domain significantly more than the domain's share "
            f"of tokens ({len(sig):,} of {tests:,} tests significant, none of them enriched)."
        )
    best = enriched.drop_duplicates(["layer", "head"]).head(top)
    items = [
        f"layer {int(r['layer'])} head {int(r['head'])} on {esc(r['domain'])} for "
        f"{esc(r['class'])} (attention share {r['attention_share']:.3f} vs token share "
        f"{r['token_share']:.3f}, z = {r['z']:.1f})"
        for r in best.to_dict("records")
    ]
    text = (
        f"{len(enriched):,} of {tests:,} (layer, class, head, domain) tests show a significant "
        f"enrichment after Bonferroni correction; the strongest: " + "; ".join(items) + "."
    )
    if "significant_genome" in domains.columns and "excess" in domains.columns:
        by_genome = enriched[
            enriched["significant_genome"].astype(bool) & (enriched["excess"].astype(float) > 0)
        ]
        text += (
            f" With the genome as the unit (one-sample t-test of each genome's attention share "
            f"minus its token share), {len(by_genome):,} of them remain significant."
        )
    return text


def direction_finding(direction: pd.DataFrame | None) -> str | None:
    """Mean directionality index and the most antisymmetric head."""
    if not _has(direction, ("layer", "head", "index")):
        return None
    top = direction.loc[direction["index"].astype(float).idxmax()]
    text = (
        f"The directionality index d_h of the heads' query-key forms averages "
        f"{direction['index'].mean():.3f} (0 symmetric, 1 antisymmetric); the most "
        f"antisymmetric head is layer {int(top['layer'])} head {int(top['head'])} "
        f"(d_h = {float(top['index']):.3f})."
    )
    if "principal_angle_mean" in direction.columns:
        angle = np.degrees(direction["principal_angle_mean"].astype(float).mean())
        text += f" Query and key subspaces differ by a mean principal angle of {angle:.0f}°."
    return text


def flow_finding(flow: pd.DataFrame | None) -> str | None:
    """The stream-point transitions that raise and lower the cone index most, on average."""
    if not _has(flow, ("metric", "transition", "delta")):
        return None
    cone = flow[flow["metric"] == "cone"]
    if cone.empty:
        return None
    mean = cone.groupby("transition", sort=False)["delta"].mean()
    mean.index = [str(t).replace("->", " → ") for t in mean.index]
    up, down = mean.idxmax(), mean.idxmin()
    return (
        f"Along the stream points of a layer, the median cone index rises most at "
        f"{esc(up)} (by {mean[up]:+.3f} on average over layers) and falls most at "
        f"{esc(down)} ({mean[down]:+.3f})."
    )


def entropy_finding(row_entropy: pd.DataFrame | None) -> str | None:
    """The layers whose attention rows are most focused and most uniform."""
    if not _has(row_entropy, ("layer", "row_entropy")):
        return None
    curve = row_entropy.groupby("layer")["row_entropy"].mean()
    lo, hi = int(curve.idxmin()), int(curve.idxmax())
    if _flat(curve, 3):
        return (
            f"The mean normalised row entropy of attention is {curve.mean():.3f} in every layer "
            f"(1 = uniform reading of all tokens)."
        )
    return (
        f"Attention rows are most focused in layer {lo} (mean normalised row entropy "
        f"{curve[lo]:.3f}) and closest to uniform in layer {hi} ({curve[hi]:.3f})."
    )


def spectra_finding(spectra: pd.DataFrame | None) -> str | None:
    """Effective rank of the attention matrices: lowest and highest layer."""
    if not _has(spectra, ("layer", "point", "effective_rank")):
        return None
    a = spectra[spectra["point"] == "A"]
    if a.empty:
        return None
    curve = a.groupby("layer")["effective_rank"].mean()
    lo, hi = int(curve.idxmin()), int(curve.idxmax())
    if _flat(curve, 1):
        return (
            f"The effective rank of the attention matrices (mean over heads and classes) is "
            f"{curve.mean():.1f} in every layer."
        )
    return (
        f"The effective rank of the attention matrices (mean over heads and classes) is lowest "
        f"in layer {lo} ({curve[lo]:.1f}) and highest in layer {hi} ({curve[hi]:.1f})."
    )
