"""The geometry over training: its output layout and the findings computed from its tables.

``analyze --over-training`` (:mod:`bertgeom.pipeline.analyze_dynamics`) writes every measure's
tables of every training snapshot, tagged with the snapshot's ``step``, into
``OUT/over_training/``; the report (:mod:`bertgeom.report.dynamics_section`) reads them back.
The functions here are pure: tables in, tables out.

Findings:

- :func:`probe_threshold_steps`: per hidden state, the first snapshot step at which the
  cross-validated linear-probe accuracy reaches a threshold (0.99), or none;
- :func:`plateau_step`: the first step of ``history.tsv`` whose validation accuracy is within
  a tolerance (0.01) of the run's best: where validation accuracy plateaus;
- :func:`label_changes`: heads whose gate label (all genomes pooled) at the last snapshot
  differs from their label at the first snapshot at or after a step (the plateau).
"""

from __future__ import annotations

import math

import pandas as pd

#: Measures computed per snapshot when ``over_training_only`` is empty: those whose stream
#: costs at most about twice the forward pass (benchmarks/analyze.py: gates 2.1x, direction
#: 0.36x, cone 0.28x, embeddings 0.06x; spectra 9.7x, maps and domains are left out) and
#: whose post-stream work is bounded (the embeddings' probes, no 2-D maps).
DEFAULT_MEASURES = ("cone", "gates", "direction", "embeddings")
#: Sub-folder of the analyze output.
FOLDER = "over_training"
#: Per-snapshot table of the analysed steps, and its columns.
SNAPSHOT_TABLE = "snapshots"
SNAPSHOT_COLUMNS = (
    "step", "epoch", "val_loss", "val_accuracy", "val_macro_f1", "sample_accuracy", "seconds",
)  # fmt: skip
#: Figure stems in ``over_training/figures/``.
FIGURES = ("training_dynamics", "cone_over_training", "gate_mix_over_training")
#: Tables of ``over_training/`` the report reads (the per-genome ones are never loaded).
REPORT_TABLES = (SNAPSHOT_TABLE, "embeddings", "separability", "gates", "direction")
#: Probe accuracy a hidden state must reach (:func:`probe_threshold_steps`).
PROBE_THRESHOLD = 0.99
#: Validation accuracy within this of the best counts as the plateau (:func:`plateau_step`).
PLATEAU_TOLERANCE = 0.01


def probe_threshold_steps(
    embeddings: pd.DataFrame, threshold: float = PROBE_THRESHOLD, kind: str = "mean"
) -> pd.DataFrame:
    """Per hidden state (``layer``: 0 = the embeddings), the first step whose linear-probe
    accuracy of the ``kind`` vectors is at least ``threshold`` (``first_step``, NaN: never),
    and the accuracy at the first and last snapshot.

    Parameters
    ----------
    embeddings : the over-training ``embeddings`` table (step, layer, kind, metric, value)
    """
    probe = embeddings[(embeddings["metric"] == "probe") & (embeddings["kind"] == kind)]
    rows = []
    for layer, part in probe.groupby("layer", sort=True):
        part = part.sort_values("step")
        above = part[part["value"] >= threshold]
        rows.append({
            "layer": int(layer),
            "first_step": float(above["step"].iloc[0]) if len(above) else math.nan,
            "first_value": float(part["value"].iloc[0]),
            "last_value": float(part["value"].iloc[-1]),
        })  # fmt: skip
    return pd.DataFrame(rows, columns=["layer", "first_step", "first_value", "last_value"])


def plateau_step(history: pd.DataFrame, tolerance: float = PLATEAU_TOLERANCE) -> float | None:
    """The first ``step`` of ``history`` (``history.tsv``) whose ``val_accuracy`` is within
    ``tolerance`` of the best; None without a finite validation accuracy."""
    h = history.dropna(subset=["val_accuracy"]).sort_values("step")
    if h.empty:
        return None
    best = float(h["val_accuracy"].max())
    return float(h[h["val_accuracy"] >= best - tolerance]["step"].iloc[0])


def label_changes(gates: pd.DataFrame, after: float) -> pd.DataFrame:
    """Heads whose gate label over all genomes (``class`` "all") at the last snapshot differs
    from their label at the first snapshot at or after step ``after``.

    Returns
    -------
    layer, head, step_from, label_from, step_to, label_to (one row per changed head; empty
    when no snapshot lies at or after ``after``)
    """
    columns = ["layer", "head", "step_from", "label_from", "step_to", "label_to"]
    pooled = gates[gates["class"] == "all"]
    steps = sorted(s for s in pooled["step"].unique() if s >= after)
    if not steps:
        return pd.DataFrame(columns=columns)
    first = pooled[pooled["step"] == steps[0]].set_index(["layer", "head"])["label"]
    last = pooled[pooled["step"] == steps[-1]].set_index(["layer", "head"])["label"]
    both = pd.DataFrame({"label_from": first, "label_to": last}).dropna()
    changed = both[both["label_from"] != both["label_to"]].reset_index()
    changed["step_from"], changed["step_to"] = steps[0], steps[-1]
    return changed[columns].sort_values(["layer", "head"]).reset_index(drop=True)
