"""Report sections on attention (maps, gates, directionality, domains) from ``analyze``.

Each function takes the loaded :class:`~bertgeom.report.artefacts.RunArtefacts` and returns a
:class:`~bertgeom.report.html.Section`: the figures ``analyze`` drew, the findings computed from
its tables (:mod:`bertgeom.report.findings`) and compact per-layer tables.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bertgeom.report import findings
from bertgeom.report.artefacts import RunArtefacts, StageArtefacts
from bertgeom.report.common import (
    frame_table,
    missing_file,
    source_table,
    stage_notes,
    tables,
    unavailable,
)
from bertgeom.report.html import Section, details, esc, figure, gallery, para, table
from bertgeom.resources import CLASSES


def class_order(names: list[str]) -> list[str]:
    order = {c: i for i, c in enumerate(CLASSES)}
    return sorted(names, key=lambda c: (order.get(c, len(order)), c))


def scope(a: StageArtefacts) -> str:
    """Which genomes the class statistics cover, from the analyze config."""
    cfg = a.config
    split = cfg.get("split")
    where = f"the {esc(split)} split" if split and split != "all" else "all splits"
    who = (
        "all analysed genomes"
        if cfg.get("all_genomes")
        else "the correctly classified genomes (the paper's choice)"
    )
    if not cfg:
        return ""
    return f"Class statistics cover {who} of {where}."


def start(run: RunArtefacts, title: str) -> tuple[StageArtefacts, str, Section | None]:
    a = run.analyze
    missing = unavailable(a)
    if missing:
        return a, "", Section(title, missing)
    return a, stage_notes(a), None


def fig(a: StageArtefacts, name: str, caption: str, alt: str) -> str:
    return figure(a.figure(name), caption, alt, f"analyze/figures/{name}.png")


def need(a: StageArtefacts, name: str) -> tuple[pd.DataFrame | None, str]:
    t = a.table(name)
    return t, "" if t is not None else missing_file(a, f"{name}.tsv")


def attention_section(run: RunArtefacts) -> Section:
    """Class-mean attention maps with the spike domains."""
    title = "Attention maps and domains"
    a, body, done = start(run, title)
    if done:
        return done
    names = class_order([n[len("attention_") :] for n in a.figures if n.startswith("attention_")])
    if not names:
        return Section(title, body + missing_file(a, "figures/attention_<class>.png"))
    gates = a.table("gates")
    last = int(gates["layer"].max()) if gates is not None else None
    layer = f"layer {last}" if last is not None else "the last layer"
    body += para(
        f"Mean attention map of each class in {layer} (the last encoder layer), averaged over "
        "heads, on a logarithmic colour scale; the spike domains are marked along both axes "
        f"(query rows, key columns; [CLS] first, [SEP] last). {scope(a)}"
    )
    figs = [fig(a, f"attention_{c}", f"{esc(c)}", f"{c}: class-mean attention map") for c in names]
    return Section(title, body + gallery(figs))


def gates_section(run: RunArtefacts) -> Section:
    """The seven gate scores per head, the labels and the per-head statistics."""
    title = "Attention gates"
    a, body, done = start(run, title)
    if done:
        return done
    gates, miss = need(a, "gates")
    body += miss
    if gates is not None:
        body += para(findings.gate_finding(gates) or "", scope(a))
    body += fig(
        a,
        "gate_grid",
        "Gate label of every head (pooled over classes); the number is the score of the "
        "labelled gate, or for a “mixed” head its highest score with the gate abbreviated.",
        "gate grid",
    )
    body += fig(a, "gate_scores", "Each gate score per layer and head, from 0 to 1.", "scores")
    if gates is not None:
        body += "<h3>Heads per label and layer</h3>" + table(findings.gate_label_counts(gates))
        pooled = findings.pooled_gates(gates)
        stats = [c for c in ("cls", "sep", "distance", "metastable_k") if c in pooled.columns]
        if stats:
            per_layer = pooled.groupby("layer")[stats].mean().reset_index()
            per_layer.columns = ["layer"] + [
                {"cls": "mass on [CLS]", "sep": "mass on [SEP]", "distance": "distance (tokens)",
                 "metastable_k": "metastable k"}[c] for c in stats
            ]  # fmt: skip
            body += "<h3>Per-head statistics (mean over the heads of a layer)</h3>" + table(
                per_layer
            )
    return Section(
        title,
        body,
        tables(source_table(a, "gates", "per (layer, head, class): gate scores, label, stats")),
    )


def direction_section(run: RunArtefacts) -> Section:
    """Directionality index, signature and principal angles of the heads."""
    title = "Directionality"
    a, body, done = start(run, title)
    if done:
        return done
    d, miss = need(a, "direction")
    body += miss
    if d is not None:
        body += para(findings.direction_finding(d) or "")
    body += fig(
        a,
        "directionality",
        "Per head: directionality index d_h of the query-key form, asymmetry of the attention "
        "on data and the share of positive eigenvalue mass of the symmetric part S.",
        "directionality",
    )
    if d is not None:
        cols = {
            "index": "mean d_h",
            "principal_angle_mean": "principal angle (°)",
            "pos_mass": "positive mass of S",
            "data_antisymmetry": "score antisymmetry",
            "attention_asymmetry": "attention asymmetry",
        }
        have = [c for c in cols if c in d.columns]
        per = d.groupby("layer")[have].mean()
        if "principal_angle_mean" in per.columns:
            per["principal_angle_mean"] = np.degrees(per["principal_angle_mean"])
        top = d.loc[d.groupby("layer")["index"].idxmax(), ["layer", "head", "index"]]
        per["most antisymmetric head"] = [
            f"{int(h)} ({v:.3f})" for h, v in zip(top["head"], top["index"], strict=True)
        ]
        overlap = a.table("head_overlap")
        if overlap is not None and {"head", "other", "query_overlap"} <= set(overlap.columns):
            off = overlap[overlap["head"] != overlap["other"]]
            mean = off.groupby("layer")[["query_overlap", "key_overlap"]].mean()
            per = per.join(mean.rename(columns={
                "query_overlap": "query overlap between heads",
                "key_overlap": "key overlap between heads",
            }))  # fmt: skip
        body += "<h3>Per layer (means over heads)</h3>" + table(
            per.rename(columns=cols).reset_index()
        )
        body += para(
            "Overlap between heads: mean cos² of the principal angles between two heads' query "
            "(key) subspaces of the residual stream, averaged over pairs of distinct heads (1 = "
            "the same subspace; about d_head / d_model for random subspaces)."
        )
    return Section(
        title,
        body,
        tables(
            source_table(a, "direction", "per (layer, head): directionality"),
            source_table(a, "head_overlap", "per (layer, head, other head): subspace overlap"),
        ),
    )


def domains_section(run: RunArtefacts) -> Section:
    """Attention share per spike domain vs token share, z-tests, significant heads."""
    title = "Domain enrichment"
    a, body, done = start(run, title)
    if done:
        return done
    dom, miss = need(a, "domains")
    body += miss
    sig = None
    if dom is not None:
        n_tests = dom["layer"].nunique() * dom["head"].nunique()
        alpha = float(a.measure_options("domains").get("alpha", 0.05))
        body += para(
            findings.domain_finding(dom) or "",
            f"Significance: two-sided z-test at α = {alpha:g} / {n_tests} "
            f"(layers × heads) = {alpha / max(n_tests, 1):.2e}. The z-test (the paper's) counts "
            "every token of every genome as an observation; the genome-level t-test "
            "(columns excess, t, p_genome, significant_genome) treats genomes as the units.",
        )
        sig = findings.significant_domains(dom)
    names = class_order([n[len("domains_") :] for n in a.figures if n.startswith("domains_")])
    if names:
        body += para(
            "Per class, log2(attention share / token share) of every head (rows) and domain "
            "(columns): red where a head reads the domain more than its share of tokens, blue "
            "less; dots mark significant cells. The first class is shown; click a class to open "
            "its map."
            if len(names) > 1
            else "log2(attention share / token share) of every head (rows) and domain "
            "(columns): red where a head reads the domain more than its share of tokens, blue "
            "less; dots mark significant cells."
        )
    body += "".join(
        details(
            f"{esc(c)}: attention to the spike domains",
            fig(a, f"domains_{c}", f"{esc(c)}", f"{c}: domain enrichment per head"),
            opened=i == 0,
        )
        for i, c in enumerate(names)
    )
    if sig is not None and not sig.empty:
        cols = ["layer", "head", "class", "domain", "attention_share", "token_share", "z",
                "p_value", "excess", "p_genome"]  # fmt: skip
        body += "<h3>Significant heads, strongest enrichment first</h3>"
        body += table(sig[[c for c in cols if c in sig.columns]], max_rows=30)
    roll = a.table("rollout")
    if roll is not None and {"class", "domain", "rollout_share"} <= set(roll.columns):
        wide = roll.pivot_table(index="domain", columns="class", values="rollout_share", sort=False)
        wide = wide[class_order(list(wide.columns))]
        tokens = roll.drop_duplicates("domain").set_index("domain")["token_share"]
        wide.insert(0, "token share", tokens.reindex(wide.index))
        wide.columns.name = None
        body += "<h3>Where [CLS] finally reads from (attention rollout of the class means)</h3>"
        body += para(
            "Abnar and Zuidema's rollout of each class's mean attention maps over all layers "
            "(identity weight 0.5): the share of the [CLS] row's content weight on each domain, "
            "beside the domain's share of tokens (domains nest: S1 holds NTD and RBD)."
        )
        body += table(wide.rename_axis("domain"), index=True)
    return Section(
        title,
        body,
        tables(
            source_table(a, "domains", "per (layer, class, head, domain): shares, z, t, p"),
            frame_table("significant_domains", "significant tests, by z", sig),
            source_table(a, "rollout", "per (class, domain): rollout share of [CLS]"),
        ),
    )
