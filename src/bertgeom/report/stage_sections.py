"""Sections on the data, training and classification stages (``prepared/``, ``model/``,
``evaluate/``), each ``RunArtefacts -> Section``."""

from __future__ import annotations

import re

import pandas as pd

from bertgeom.report.artefacts import RunArtefacts, StageArtefacts
from bertgeom.report.common import (
    file_name,
    frame_table,
    missing_file,
    render_png,
    source_table,
    stage_notes,
    tables,
    unavailable,
)
from bertgeom.report.html import Section, esc, figure, fmt, note, para, pct, table
from bertgeom.resources import CLASSES

#: ``metrics.json`` per-class keys -> column titles.
PER_CLASS_NAMES = {"label": "class", "f1": "F1", "roc_auc": "ROC-AUC (one vs rest)"}
#: Mutations listed per class in the report's mutation table.
TOP_MUTATIONS = 10


# ---------------------------------------------------------------------------- data and QC
def qc_reason_kind(reason: str) -> str:
    """A QC reason without its genome-specific values (``spike N fraction 0.024 > 0.01`` ->
    ``spike N fraction > 0.01``; ``frameshift: 21765del1`` -> ``frameshift``)."""
    text = re.sub(r":.*$", "", reason.strip())
    text = re.sub(r"^\d+ ", "", text)
    text = re.sub(r"fraction [\d.]+ >", "fraction >", text)
    return re.sub(r" at residue \d+$", "", text)


def qc_reasons(spikes: pd.DataFrame) -> pd.DataFrame:
    """Genomes per QC reason kind, commonest first."""
    reasons = spikes["qc_reasons"].fillna("").astype(str).str.split("; ").explode()
    kinds = reasons[reasons.str.strip() != ""].map(qc_reason_kind)
    counts = kinds.groupby(level=0).unique().explode().value_counts()
    return counts.rename_axis("reason").reset_index(name="genomes")


def _residue(mutation: str) -> int:
    m = re.search(r"(\d+)", mutation)
    return int(m.group(1)) if m else 0


def mutation_frequencies(spikes: pd.DataFrame) -> pd.DataFrame:
    """Per class and mutation, the genomes that carry it and their share of the class.

    Over labelled genomes that passed QC (good or mediocre). Columns: class, mutation,
    genomes, class_genomes, frequency; classes in the usual order, commonest mutations first.
    """
    use = spikes[spikes["label"].notna() & (spikes["qc_status"] != "bad")]
    cols = ["class", "mutation", "genomes", "class_genomes", "frequency"]
    if use.empty or "mutations" not in use.columns:
        return pd.DataFrame(columns=cols)
    sizes = use.groupby("label").size()
    long = use.assign(mutation=use["mutations"].fillna("").astype(str).str.split(","))
    long = long.explode("mutation")
    long = long[long["mutation"].str.strip() != ""]
    out = long.groupby(["label", "mutation"]).size().rename("genomes").reset_index()
    out = out.rename(columns={"label": "class"})
    out["class_genomes"] = out["class"].map(sizes).astype(int)
    out["frequency"] = out["genomes"] / out["class_genomes"]
    order = {c: i for i, c in enumerate(CLASSES)}
    out["_c"] = out["class"].map(lambda c: order.get(c, len(order)))
    out["_r"] = out["mutation"].map(_residue)
    out = out.sort_values(["_c", "class", "frequency", "_r"], ascending=[True, True, False, True])
    return out[cols].reset_index(drop=True)


def _share(frequency: float) -> str:
    """``100 %`` only when every genome carries it, else one decimal (``99.8 %``)."""
    return "100\u00a0%" if frequency >= 1.0 else f"{100 * frequency:.1f}\u00a0%"


def _mutation_overview(spikes: pd.DataFrame, freq: pd.DataFrame) -> pd.DataFrame:
    use = spikes[spikes["label"].notna() & (spikes["qc_status"] != "bad")]
    rows = []
    for cls, grp in use.groupby("label", sort=False):
        top = freq[freq["class"] == cls].head(TOP_MUTATIONS)
        listed = ", ".join(
            f"{m} ({_share(f)})" for m, f in zip(top.mutation, top.frequency, strict=True)
        )
        median = grp["n_mutations"].median() if "n_mutations" in grp.columns else float("nan")
        rows.append((cls, len(grp), float(median), listed or "none"))
    order = {c: i for i, c in enumerate(CLASSES)}
    rows.sort(key=lambda r: order.get(r[0], len(order)))
    return pd.DataFrame(
        rows, columns=["class", "genomes", "median mutations", "commonest mutations (share)"]
    )


def _simulated(data: StageArtefacts) -> str:
    if not data.present:
        return ""
    per_class = data.summary.get("per_class") or {}
    seed = data.config.get("seed")
    if per_class:
        total = sum(int(v) for v in per_class.values())
        text = (
            f"The genomes were simulated by <code>bertgeom simulate</code>: {total:,} genomes, "
            f"{len(per_class)} classes"
        )
        text += f", seed {esc(seed)}." if seed is not None else "."
        return para(text) + stage_notes(data)
    return para("A <code>data/</code> folder from <code>bertgeom simulate</code> is present.") + (
        stage_notes(data)
    )


def data_section(run: RunArtefacts) -> Section:
    """Per-class counts, QC outcomes and reasons, mutation frequencies per class."""
    title = "Data and QC"
    st = run.prepared
    body = _simulated(run.data)
    simulated = tables(
        source_table(run.data, "labels", "simulated genomes: id and class"),
        source_table(run.data, "truth", "simulated genomes: the mutations planted in each"),
    )
    missing = unavailable(st)
    if missing:
        return Section(title, body + missing, simulated)
    body += stage_notes(st)
    spikes, counts = st.table("spikes"), st.table("counts")
    summary = st.summary
    if spikes is None:
        return Section(title, body + missing_file(st, "spikes.parquet"), simulated)
    labels_source = str(summary.get("labels_source") or "")
    inputs = [
        str(i["path"])
        for i in (st.manifest or {}).get("inputs", [])
        if i.get("path") and str(i["path"]) != labels_source
    ]
    source = ", ".join(file_name(p) for p in inputs)
    labels = f" (labels from {esc(file_name(labels_source))})" if labels_source else ""
    body += para(
        f"{len(spikes):,} genomes were read{' from ' + esc(source) if source else ''}{labels}; "
        f"{spikes['label'].notna().sum():,} carry a class label and "
        f"{spikes['split'].notna().sum():,} were assigned to a split (train, validation, test; "
        "QC-bad and unlabelled genomes are left out)."
    )
    if summary.get("n_identical_groups"):
        body += para(
            f"{summary['n_genomes_in_identical_groups']:,} genomes fall into "
            f"{summary['n_identical_groups']:,} groups of identical spikes; each group stays "
            "within one split."
        )
    if counts is not None:
        body += "<h3>Genomes per class</h3>" + table(counts)
    else:
        body += missing_file(st, "counts.tsv")
    qc = spikes["qc_status"].value_counts().rename_axis("QC status").reset_index(name="genomes")
    qc["share"] = qc["genomes"] / max(len(spikes), 1)
    body += "<h3>QC outcomes</h3>" + table(qc, formats={"share": pct})
    reasons = qc_reasons(spikes)
    if reasons.empty:
        body += para("No genome has a QC reason: every genome passed QC as good.")
    else:
        body += "<h4>Commonest QC reasons</h4>" + table(reasons, max_rows=10)
    freq = mutation_frequencies(spikes)
    body += "<h3>Spike mutations per class</h3>"
    if freq.empty:
        body += para("No labelled genome that passed QC carries a spike amino-acid mutation.")
    else:
        body += para(
            f"The {TOP_MUTATIONS} commonest spike amino-acid mutations (Nextclade notation) of "
            "each class, with the share of its genomes (labelled, QC good or mediocre) that "
            "carry them."
        ) + table(_mutation_overview(spikes, freq))
    return Section(
        title,
        body,
        simulated
        + tables(
            source_table(st, "counts", "genomes per class: total, per split, per QC status"),
            frame_table("qc_reasons", "genomes per QC reason kind", reasons),
            frame_table(
                "mutation_frequencies",
                "per class and spike mutation: genomes carrying it and their share",
                freq,
            ),
        ),
    )


# ---------------------------------------------------------------------------- training
def _history_png(run: RunArtefacts, history: pd.DataFrame | None) -> bytes | None:
    if history is not None:
        from bertgeom.plots.classification import history_figure

        return render_png(history_figure(history.to_dict("records")))
    return run.evaluate.figure("history")


def _training_numbers(st: StageArtefacts, history: pd.DataFrame | None) -> pd.DataFrame:
    meta = st.documents.get("bertgeom_model", {})
    hf = st.documents.get("config", {})
    calib = meta.get("calibration") or {}
    rows: list[tuple[str, object]] = [
        ("preset", meta.get("preset")),
        ("encoder layers", hf.get("num_hidden_layers")),
        ("attention heads", hf.get("num_attention_heads")),
        ("hidden size", hf.get("hidden_size")),
        ("vocabulary size", hf.get("vocab_size")),
        ("training genomes", meta.get("n_train")),
        ("validation genomes", meta.get("n_val")),
        ("best epoch", meta.get("best_epoch")),
        ("best validation macro-F1", meta.get("best_val_macro_f1")),
        ("calibration temperature", calib.get("temperature")),
    ]
    if history is not None and not history.empty:
        last = history.iloc[-1]
        rows += [
            ("epochs run", int(last["epoch"])),
            ("optimiser steps", int(last["step"])),
            ("final training loss", float(last["train_loss"])),
            ("final validation loss", float(last["val_loss"])),
            ("training time (s)", float(history["seconds"].sum())),
            ("median throughput (spikes/s)", float(history["spikes_per_s"].median())),
        ]
    return pd.DataFrame(
        [(k, fmt(v)) for k, v in rows if v is not None], columns=["quantity", "value"]
    )


def training_section(run: RunArtefacts) -> Section:
    """Training curves from ``model/history.tsv`` and the final numbers."""
    title = "Training"
    st = run.model
    missing = unavailable(st)
    if missing:
        return Section(title, missing)
    body = stage_notes(st)
    history = st.table("history")
    need = {"epoch", "train_loss", "val_loss", "val_accuracy", "val_macro_f1"}
    if history is not None and not need <= set(history.columns):
        body += note("<code>model/history.tsv</code> lacks the columns of a training history.")
        history = None
    png = _history_png(run, history)
    if png is not None:
        body += figure(
            png,
            "Left: cross-entropy of the training and validation splits per epoch (log "
            "scale); right: validation accuracy and macro-F1 per epoch.",
            "training curves",
        )
    else:
        body += missing_file(st, "history.tsv")
    body += "<h3>Final numbers</h3>" + table(_training_numbers(st, history))
    return Section(
        title,
        body,
        tables(source_table(st, "history", "one row per epoch: losses, validation metrics, time")),
    )


# ---------------------------------------------------------------------------- classification
def calibration_sentence(metrics: dict) -> str:
    """ECE and NLL before and after temperature scaling, from ``metrics.json``."""
    cal, raw = metrics.get("calibrated") or {}, metrics.get("uncalibrated") or {}
    t = float(metrics.get("temperature", float("nan")))
    nan = float("nan")
    if t == 1.0:
        return (
            f"The temperature is T = 1, so the temperature-scaled probabilities equal the raw "
            f"ones: expected calibration error (ECE) {cal.get('ece', nan):.4f}, negative "
            f"log-likelihood {cal.get('nll', nan):.4f}."
        )
    return (
        f"Temperature scaling with T = {t:.3f} changes the expected calibration error (ECE) from "
        f"{raw.get('ece', nan):.4f} to {cal.get('ece', nan):.4f} and the negative "
        f"log-likelihood from {raw.get('nll', nan):.4f} to {cal.get('nll', nan):.4f}."
    )


def _metrics_table(metrics: dict) -> pd.DataFrame:
    rows = []
    for key, name in (("uncalibrated", "uncalibrated"), ("calibrated", "temperature-scaled")):
        m = metrics.get(key) or {}
        rows.append((name, m.get("accuracy"), m.get("macro_f1"), m.get("micro_f1"),
                     m.get("ece"), m.get("nll")))  # fmt: skip
    return pd.DataFrame(rows, columns=["probabilities", "accuracy", "macro-F1", "micro-F1",
                                       "ECE", "NLL"])  # fmt: skip


def _misclassified(predictions: pd.DataFrame) -> pd.DataFrame:
    # `false` (this version) or `0` (runs written before the column vocabulary)
    wrong = predictions[predictions["correct"].astype(str).str.lower().isin(("false", "0"))]
    cols = [c for c in ("seq_id", "class", "predicted_class", "probability", "mutations")
            if c in wrong.columns]  # fmt: skip
    return wrong.sort_values("probability", ascending=False)[cols].reset_index(drop=True)


def classification_section(run: RunArtefacts) -> Section:
    """Metrics, per-class table, confusion matrix, calibration, misclassified genomes."""
    title = "Classification"
    st = run.evaluate
    missing = unavailable(st)
    if missing:
        return Section(title, missing)
    body = stage_notes(st)
    metrics = st.documents.get("metrics")
    if not metrics:
        return Section(title, body + missing_file(st, "metrics.json"))
    cal = metrics.get("calibrated") or {}
    body += para(
        f"Evaluated on the {metrics.get('n', 0):,} genomes of the "
        f"{esc(metrics.get('split', ''))} split: accuracy {pct(cal.get('accuracy'), 2)}, "
        f"macro-F1 {cal.get('macro_f1', float('nan')):.4f}, micro-F1 "
        f"{cal.get('micro_f1', float('nan')):.4f}."
    )
    body += table(_metrics_table(metrics))
    per_class = pd.DataFrame(metrics.get("per_class") or [])
    if not per_class.empty:
        body += "<h3>Per class</h3>" + table(per_class.rename(columns=PER_CLASS_NAMES))
    body += "<h3>Confusion matrix</h3>"
    conf = metrics.get("confusion") or {}
    body += figure(
        st.figure("confusion"),
        "Rows: true class; columns: predicted class; colour: share of the true class; numbers: "
        "genomes.",
        "confusion matrix",
        "evaluate/confusion.png",
    )
    if conf.get("labels") and conf.get("counts"):
        frame = pd.DataFrame(conf["counts"], index=conf["labels"], columns=conf["labels"])
        body += table(frame.rename_axis("true \\ predicted"), index=True)
    body += "<h3>Calibration</h3>" + para(calibration_sentence(metrics))
    body += figure(
        st.figure("reliability"),
        "Reliability diagram of the temperature-scaled probabilities: accuracy against mean "
        "confidence per confidence bin (top) and genomes per bin (bottom).",
        "reliability diagram",
        "evaluate/reliability.png",
    )
    body += "<h3>Misclassified genomes</h3>"
    predictions = st.table("predictions")
    wrong = None
    if predictions is None or "correct" not in predictions.columns:
        body += missing_file(st, "predictions.tsv")
    else:
        wrong = _misclassified(predictions)
        if wrong.empty:
            body += para(f"All {len(predictions):,} genomes were classified correctly.")
        else:
            body += para(
                f"{len(wrong):,} of {len(predictions):,} genomes were misclassified; the most "
                "confident errors first."
            ) + table(wrong, max_rows=50)
    return Section(
        title,
        body,
        tables(
            source_table(
                st, "per_class", "per class: support, precision, recall, specificity, F1, ROC-AUC"
            ),
            source_table(st, "confusion", "confusion matrix (rows true, columns predicted)"),
            source_table(
                st, "predictions", "every evaluated genome: class, prediction, probability"
            ),
            frame_table("misclassified", "misclassified genomes, most confident first", wrong),
        ),
    )
