"""Report sections on the residual stream (cone index, entropies and spectra, embeddings,
stream-point flow), from the ``analyze`` tables and figures; helpers in
:mod:`bertgeom.report.geometry_sections`."""

from __future__ import annotations

import pandas as pd

from bertgeom.report import findings
from bertgeom.report.artefacts import RunArtefacts, StageArtefacts
from bertgeom.report.common import missing_file, source_table, tables
from bertgeom.report.geometry_sections import class_order, fig, need, scope, start
from bertgeom.report.html import Section, esc, gallery, note, para, table

#: Embedding metrics of ``embeddings.tsv`` -> column titles, in display order.
METRIC_NAMES = {
    "probe": "linear-probe accuracy",
    "knn": "k-NN accuracy",
    "silhouette": "silhouette",
    "ari": "k-means ARI",
    "anisotropy": "anisotropy",
    "pca1_variance": "PC1 variance share",
}


def cone_section(run: RunArtefacts) -> Section:
    """Cone index of token rows per stream point and of the [CLS] vectors per class."""
    title = "Cone index"
    a, body, done = start(run, title)
    if done:
        return done
    summary, cls = a.table("cone_summary"), a.table("cls_cone")
    if summary is None and cls is None:
        return Section(title, body + missing_file(a, "cone_summary.tsv"))
    body += para(
        findings.token_cone_finding(summary) or "",
        findings.cls_cone_finding(cls) or "",
        scope(a),
    )
    body += fig(
        a,
        "cone_curves",
        "Normalised cone index over layers: per stream point the median over genomes of each "
        "class (band: 10th-90th percentile); last panel: the [CLS] vectors of each class.",
        "cone index curves",
    )
    if cls is not None:
        wide = cls.pivot_table(index="layer", columns="class", values="cone")
        wide = wide[class_order(list(wide.columns))].rename_axis("hidden state")
        wide.columns.name = None
        body += "<h3>[CLS] cone index per class</h3>" + table(wide, index=True)
    if summary is not None:
        whole = summary[summary["head"] == -1]
        wide = whole.pivot_table(index="layer", columns="point", values="q50", aggfunc="mean")
        order = [p for p in ("X", "C", "O", "U", "F", "Y") if p in wide.columns]
        wide = wide[order]
        wide.columns.name = None
        body += "<h3>Median token-row cone index per stream point (mean over classes)</h3>"
        body += table(wide, index=True)
    return Section(
        title,
        body,
        tables(
            source_table(a, "cone_summary", "per (class, layer, point, head): quantiles"),
            source_table(a, "cls_cone", "per (class, hidden state): [CLS] cone index"),
        ),
    )


def entropy_section(run: RunArtefacts) -> Section:
    """Row entropy, metastable-state size, ranks and von Neumann entropy."""
    title = "Entropies and spectra"
    a, body, done = start(run, title)
    if done:
        return done
    ent, spectra, gates = a.table("row_entropy"), a.table("spectra"), a.table("gates")
    if ent is None and spectra is None:
        return Section(title, body + missing_file(a, "spectra.tsv"))
    body += para(findings.entropy_finding(ent) or "", findings.spectra_finding(spectra) or "")
    if spectra is not None and "n" in spectra.columns:
        n_spectra = int(spectra.drop_duplicates("class")["n"].sum())
        body += para(
            f"Ranks and von Neumann entropies are computed on a class-stratified subset of "
            f"{n_spectra:,} genomes (the SVDs are the costly part)."
        )
    body += fig(
        a,
        "entropy_k",
        "Distributions over the heads of each layer of per-head attention measures (the "
        "metastable-state size k; the normalised row entropy where the analysis drew it).",
        "entropy and k",
    )
    body += fig(
        a,
        "spectra",
        "Effective rank (top) and stable rank (bottom) over layers per stream point (A "
        "attention, Z per-head output, C concatenation, Y layer output), one line per class.",
        "spectra",
    )
    cols: dict[str, pd.Series] = {}
    if ent is not None:
        cols["row entropy / ln n"] = ent.groupby("layer")["row_entropy"].mean()
    if gates is not None and "metastable_k" in gates.columns:
        cols["metastable k"] = findings.pooled_gates(gates).groupby("layer")["metastable_k"].mean()
    if spectra is not None:
        for point in ("A", "C", "Y"):
            sub = spectra[spectra["point"] == point]
            if not sub.empty:
                cols[f"effective rank {point}"] = sub.groupby("layer")["effective_rank"].mean()
                cols[f"stable rank {point}"] = sub.groupby("layer")["stable_rank"].mean()
        sub = spectra[spectra["point"] == "A"]
        if not sub.empty and "von_neumann" in sub.columns:
            cols["von Neumann A"] = sub.groupby("layer")["von_neumann"].mean()
    if cols:
        body += "<h3>Per layer (means over heads and classes)</h3>"
        body += table(pd.DataFrame(cols).rename_axis("layer"), index=True)
    return Section(
        title,
        body,
        tables(
            source_table(a, "row_entropy", "per (layer, head, class): normalised row entropy"),
            source_table(a, "spectra", "per (layer, head, point, class): ranks, entropy"),
        ),
    )


def embeddings_section(run: RunArtefacts) -> Section:
    """Separability of the [CLS] and mean-pooled vectors over hidden states; PCA, t-SNE and
    UMAP maps."""
    title = "Embeddings and separability"
    a, body, done = start(run, title)
    if done:
        return done
    emb, miss = need(a, "embeddings")
    body += miss
    body += para(findings.probe_finding(emb) or "", scope(a))
    body += fig(
        a,
        "separability",
        "Per hidden state (0 = embeddings): silhouette, k-NN and linear-probe accuracy, "
        "k-means ARI, anisotropy and the variance share of the first principal component, for "
        "the [CLS] and the mean-pooled token vectors.",
        "separability",
    )
    if "output_histogram" in a.figures:  # runs of older versions have none
        body += fig(
            a,
            "output_histogram",
            "Distribution of the token-summed output of each hidden state (0 = embeddings), "
            "pooled over genomes and model dimensions.",
            "token-summed outputs",
        )
    body += _map_figures(a)
    if emb is not None:
        for kind, name in (("cls", "[CLS] vectors"), ("mean", "mean-pooled token vectors")):
            sub = emb[emb["kind"] == kind]
            if sub.empty:
                continue
            wide = sub.pivot_table(index="layer", columns="metric", values="value", dropna=False)
            order = [m for m in METRIC_NAMES if m in wide.columns]
            wide = wide[order + [m for m in wide.columns if m not in order]]
            wide = wide.rename(columns=METRIC_NAMES).rename_axis("hidden state")
            wide.columns.name = None
            body += f"<h3>{esc(name)}</h3>"
            if kind == "cls" and 0 in wide.index and wide.loc[0].isna().all():
                body += para(
                    "At hidden state 0 every genome has the same [CLS] vector (the embedding "
                    "of the [CLS] token), so its measures are undefined (–)."
                )
            body += table(wide, index=True)
    ova = a.table("one_vs_all")
    if ova is not None and "balanced_accuracy" in ova.columns:
        sub = ova[ova["kind"] == "cls"] if "kind" in ova.columns else ova
        wide = sub.pivot_table(index="layer", columns="class", values="balanced_accuracy")
        wide = wide[class_order(list(wide.columns))].rename_axis("hidden state")
        wide.columns.name = None
        body += "<h3>One class against the rest ([CLS], balanced accuracy)</h3>"
        body += table(wide, index=True)
    return Section(
        title,
        body,
        tables(
            source_table(a, "embeddings", "per (hidden state, kind, metric): value"),
            source_table(a, "one_vs_all", "per (hidden state, kind, class): probe accuracy"),
        ),
    )


#: Non-linear maps -> (figure caption, alternative text).
MAP_CAPTIONS = {
    "tsne": ("t-SNE", "t-SNE maps"),
    "umap": ("UMAP", "UMAP maps"),
}


def _map_figures(a: StageArtefacts) -> str:
    """The PCA, t-SNE and UMAP maps of the [CLS] vectors side by side, with the notes on maps
    that were skipped or whose perplexity / neighbourhood was clipped."""
    methods = str(a.measure_options("embeddings").get("maps", "pca")).split(",")
    figs = []
    if "pca" in methods or "embedding_maps" in a.figures:
        figs.append(fig(
            a, "embedding_maps",
            "First two principal components of the [CLS] vectors per hidden state, coloured by "
            "class.", "PCA maps",
        ))  # fmt: skip
    for method, (name, alt) in MAP_CAPTIONS.items():
        if f"embedding_maps_{method}" in a.figures:
            figs.append(fig(
                a, f"embedding_maps_{method}",
                f"{name} map of the [CLS] vectors per hidden state, coloured by class (fitted per "
                "hidden state; neighbourhoods are kept, distances between clusters and the axes "
                "mean nothing).", alt,
            ))  # fmt: skip
    out = gallery(figs)
    notes = [str(n) for n in a.summary.get("notes") or () if str(n).split(":")[0] in MAP_CAPTIONS]
    if notes:
        out += note("2-D maps: " + "; ".join(esc(n) for n in notes) + ".")
    cfg = a.measure_options("embeddings")
    if any(f"embedding_maps_{m}" in a.figures for m in MAP_CAPTIONS) and "map_genomes" in cfg:
        out += para(
            f"The t-SNE and UMAP maps use at most {int(cfg['map_genomes']):,} genomes (a seeded "
            f"subsample); t-SNE perplexity {esc(cfg.get('perplexity'))}, UMAP "
            f"{esc(cfg.get('n_neighbors'))} neighbours (both clipped for small samples); the "
            "coordinates of the [CLS] and mean-pooled vectors are in "
            "<code>analyze/nonlinear_maps.tsv</code>."
        )
    return out


def flow_section(run: RunArtefacts) -> Section:
    """Change of cone index and rank between consecutive stream points."""
    title = "Stream-point flow"
    a, body, done = start(run, title)
    if done:
        return done
    flow, miss = need(a, "flow")
    body += miss
    body += para(findings.flow_finding(flow) or "")
    body += fig(
        a,
        "flow",
        "Change (after − before) between consecutive stream points X → C → O → U → F → Y, per "
        "layer, of the median cone index, the effective rank (spectra subset) and Fisher's "
        "class separability of the mean-pooled vectors.",
        "flow",
    )
    if flow is not None:
        wide = flow.pivot_table(
            index=["metric", "transition"], columns="layer", values="delta", sort=False
        )
        wide.columns = [f"layer {c}" for c in wide.columns]
        wide.index = wide.index.set_levels(
            [str(t).replace("->", " → ") for t in wide.index.levels[1]], level=1
        )
        signed = {c: (lambda v: "–" if pd.isna(v) else f"{v:+.3f}") for c in wide.columns}
        body += "<h3>Change (after − before) per transition and layer</h3>"
        body += table(wide, index=True, formats=signed)
    sep = a.table("separability")
    if sep is not None and {"layer", "point", "fisher"} <= set(sep.columns):
        wide = sep.pivot_table(index="layer", columns="point", values="fisher", sort=False)
        wide = wide[[p for p in ("X", "C", "O", "U", "F", "Y") if p in wide.columns]]
        wide.columns.name = None
        body += "<h3>Class separability per stream point (Fisher's criterion)</h3>"
        body += para(
            "Between-class over within-class scatter of the mean-pooled vectors, "
            "Σ_c n_c ||μ_c − μ||² / Σ_c Σ_i ||x_i − μ_c||², at every stream point of every layer."
        )
        body += table(wide.rename_axis("layer"), index=True)
    return Section(
        title,
        body,
        tables(
            source_table(a, "flow", "per (metric, layer, transition): change"),
            source_table(a, "separability", "per (layer, point): Fisher's criterion"),
        ),
    )
