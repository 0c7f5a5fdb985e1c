"""The methods section: definitions with formulas, thresholds, versions and resolved configs.

The definitions restate ``docs/science.md``: the general ones here, each measure's from the
measure itself (``Measure.definitions``); the parameter table lists each measure's options as the
analyze manifest saved them (``Measure.parameters``) and the other stages' thresholds from their
manifests, so every value is the one this run used.
"""

from __future__ import annotations

import dataclasses
import json

import pandas as pd

from bertgeom.genome.qc import QcThresholds
from bertgeom.report.artefacts import RunArtefacts, report_measures
from bertgeom.report.html import Section, esc, fmt, json_block, para, table

#: (term, explanation, formula); plain text, escaped when rendered.
DEFINITIONS: tuple[tuple[str, str, str], ...] = (
    (
        "Stream points",
        "For encoder layer l (post-LN BERT): X the layer input, A_h the attention of head h "
        "(PAD keys masked, rows sum to 1 over the n real tokens), Z_h = A_h V_h the head "
        "output, C the concatenation of the heads, O = C W_O + b_O, U = LN1(X + O), F = "
        "MLP(U), Y = LN2(U + F) the layer output. Statistics run over the real tokens. "
        "Attention tables number encoder layers from 0; [CLS] and embedding tables number "
        "hidden states, 0 being the embedding output and l the output of the l-th layer.",
        "A_h = softmax(Q_h K_hᵀ / √d_head + mask),  Q_h = X W_Q^h + b_Q^h,  K_h = X W_K^h + b_K^h",
    ),
    (
        "Classification metrics",
        "Accuracy; per-class precision, recall, specificity, F1 and one-vs-rest ROC-AUC; "
        "macro-F1 (mean of the per-class F1) and micro-F1; negative log-likelihood; the "
        "expected calibration error over equal-width bins of the top-class probability; the "
        "temperature T minimises the validation NLL of softmax(z / T).",
        "ECE = Σ_b (n_b / n) |acc_b − conf_b|,   NLL = −mean_i ln p_i,y_i",
    ),
)


def _definitions(run: RunArtefacts) -> str:
    """The general definitions, then each measure's (those of the run's measures)."""
    rows = list(DEFINITIONS[:1])
    for measure in report_measures(run):
        rows += measure.definitions
    rows += DEFINITIONS[1:]
    items = "".join(
        f'<dt>{esc(term)}</dt><dd>{esc(text)}<span class="formula">{esc(formula)}</span></dd>'
        for term, text, formula in rows
    )
    return f'<dl class="defs">{items}</dl>\n'


def _thresholds(run: RunArtefacts) -> pd.DataFrame:
    """Every parameter with the value this run used: each measure's options as the analyze
    manifest saved them (defaults where the run has none), QC thresholds and calibration."""
    rows: list[tuple[str, str, object, str]] = []
    saved = run.analyze.config.get("measures")
    saved = saved if isinstance(saved, dict) else {}
    for measure in report_measures(run):
        options = saved.get(measure.name)
        for name, value, source in measure.parameters(options or {}):
            if not isinstance(options, dict):
                source = "default (no analysis)"
            rows.append((measure.name, name, value, source))
    for key in (f.name for f in dataclasses.fields(QcThresholds)):
        if key in run.prepared.config:
            rows.append(("QC", key, run.prepared.config[key], "prepare config"))
    calib = (run.model.documents.get("bertgeom_model") or {}).get("calibration") or {}
    for key in ("temperature", "ood_threshold", "ood_quantile", "ood_min_confidence"):
        if key in calib:
            rows.append(("calibration", key, calib[key], "fitted by train (model directory)"))
    return pd.DataFrame(
        [(a, b, fmt(c), d) for a, b, c, d in rows],
        columns=["measure", "parameter", "value", "source"],
    )


def _versions(run: RunArtefacts) -> pd.DataFrame | None:
    cols = {
        s.command.split()[-1]: (s.manifest or {}).get("versions") or {}
        for s in run.stages.values()
        if s.present and s.manifest
    }
    if not cols:
        return None
    names = list(dict.fromkeys(k for v in cols.values() for k in v))
    frame = pd.DataFrame({stage: [v.get(n, "") for n in names] for stage, v in cols.items()})
    frame.insert(0, "package", names)
    return frame


def methods_section(run: RunArtefacts) -> Section:
    """Definitions and formulas, thresholds, software versions, every stage's config."""
    body = "<h3>Definitions</h3>" + para(
        "Definitions marked in the code as bertgeom's operational definitions (the gates, the "
        "cluster score, directionality on data, domain membership) make the paper's named "
        "concepts measurable; their thresholds are listed below."
    )
    token = (run.model.documents.get("bertgeom_model") or {}).get("token") or {}
    if token:
        body += para(
            f"Tokens: k-mers of k = {esc(token.get('k'))} nucleotides with stride "
            f"{esc(token.get('stride'))} ({esc(token.get('mode', ''))} mode) over the spike in "
            "reference coordinates, between [CLS] and [SEP]."
        )
    body += _definitions(run)
    body += "<h3>Thresholds and parameters</h3>" + table(_thresholds(run), max_rows=100)
    versions = _versions(run)
    body += "<h3>Software versions</h3>"
    body += table(versions) if versions is not None else para("No stage manifest was found.")
    body += "<h3>Configuration of each stage</h3>"
    for stage in run.stages.values():
        if not stage.present:
            continue
        if stage.manifest is None:
            body += para(f"<code>{esc(stage.name)}/</code>: no readable manifest.json.")
            continue
        command = " ".join(str(c) for c in stage.manifest.get("command") or [])
        body += f"<h4>{esc(stage.command)}</h4>"
        if command:
            body += para(f"Command line: <code>{esc(command)}</code>")
        config = json.dumps(stage.manifest.get("config") or {}, indent=2, default=str)
        body += json_block(config)
    return Section("Methods", body)
