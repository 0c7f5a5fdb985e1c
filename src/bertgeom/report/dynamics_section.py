"""The report's "Training dynamics" section: the geometry of every training snapshot
(``analyze --over-training``, ``analyze/over_training/``) beside the training curves
(``model/history.tsv``), with findings computed by :mod:`bertgeom.geometry.dynamics`."""

from __future__ import annotations

import math

import pandas as pd

from bertgeom.geometry import dynamics as dyn
from bertgeom.report.artefacts import RunArtefacts, StageArtefacts
from bertgeom.report.common import tables
from bertgeom.report.html import Section, TableFile, bullets, esc, figure, note, para, table

TITLE = "Training dynamics"


def _table(a: StageArtefacts, name: str) -> pd.DataFrame | None:
    return a.table(f"{dyn.FOLDER}/{name}")


def _fig(a: StageArtefacts, stem: str, caption: str, alt: str) -> str:
    key = f"{dyn.FOLDER}/{stem}"
    return figure(a.figure(key), caption, alt, f"analyze/{key}.png")


def _source(a: StageArtefacts, name: str, description: str) -> TableFile | None:
    path = a.table_files.get(f"{dyn.FOLDER}/{name}")
    if path is None:
        return None
    return TableFile(f"analyze_{dyn.FOLDER}_{path.name}", description, source=path)


def _step(value: float) -> str:
    return "never" if value is None or math.isnan(value) else f"{int(value):,}"


def probe_finding(a: StageArtefacts) -> str | None:
    """When each hidden state's linear probe first reaches the threshold."""
    emb = _table(a, "embeddings")
    if emb is None:
        return None
    steps = dyn.probe_threshold_steps(emb)
    if steps.empty:
        return None
    reached = steps.dropna(subset=["first_step"])
    parts = [
        f"hidden state {int(r.layer)} at step {_step(r.first_step)}" for r in reached.itertuples()
    ]
    never = [str(int(r.layer)) for r in steps.itertuples() if math.isnan(r.first_step)]
    text = (
        f"Over training, the linear-probe accuracy of the mean-pooled vectors first reaches "
        f"{dyn.PROBE_THRESHOLD:g} in {', '.join(parts) if parts else 'no hidden state'}"
    )
    if never:
        text += f"; never in hidden state{'s' if len(never) > 1 else ''} {', '.join(never)}"
    return text + " (snapshot steps; 0 = the embeddings)."


def gate_change_finding(run: RunArtefacts) -> str | None:
    """Heads whose gate label changes after the validation accuracy plateaus."""
    gates, history = _table(run.analyze, "gates"), run.model.table("history")
    if gates is None or history is None:
        return None
    plateau = dyn.plateau_step(history)
    if plateau is None:
        return None
    changed = dyn.label_changes(gates, plateau)
    lead = (
        f"Validation accuracy plateaus (within {dyn.PLATEAU_TOLERANCE:g} of its best) at step "
        f"{int(plateau):,}"
    )
    if not (gates["step"] >= plateau).any():
        return f"{lead}, after the last snapshot."
    if changed.empty:
        return f"{lead}; no head's gate label changes after it."
    heads = [
        f"L{int(r.layer)}H{int(r.head)} {esc(r.label_from)} → {esc(r.label_to)}"
        for r in changed.itertuples()
    ]
    return (
        f"{lead}; {len(changed)} head{'s' if len(changed) > 1 else ''} change gate label after "
        f"it (steps {int(changed.step_from.iloc[0]):,} → {int(changed.step_to.iloc[0]):,}): "
        f"{', '.join(heads)}."
    )


def dynamics_findings(run: RunArtefacts) -> list[str]:
    """The section's findings, for the summary too."""
    if not run.analyze.present or _table(run.analyze, dyn.SNAPSHOT_TABLE) is None:
        return []
    return [s for s in (probe_finding(run.analyze), gate_change_finding(run)) if s]


def dynamics_section(run: RunArtefacts) -> Section | None:
    """The section, or None when the analysis ran without ``--over-training``."""
    a = run.analyze
    snaps = _table(a, dyn.SNAPSHOT_TABLE) if a.present else None
    if snaps is None:
        return None
    steps = [int(s) for s in snaps["step"]]
    body = para(
        f"The analysed genomes streamed through {len(steps)} training snapshots of the model "
        f"(steps {', '.join(f'{s:,}' for s in steps)}; <code>bertgeom train --snapshots N</code>"
        ", <code>bertgeom analyze --over-training</code>), every genome in the statistics at "
        "every step."
    )
    found = dynamics_findings(run)
    body += bullets(found) if found else note("No findings: the probe or gate tables are missing.")
    if run.model.table("history") is None:
        body += note("<code>model/history.tsv</code> was not found: no training curves.")
    body += _fig(
        a,
        "training_dynamics",
        "Against the optimiser step (symmetric-log axis; grey lines: the snapshots): training "
        "and validation loss and validation accuracy per epoch; linear-probe accuracy of the "
        "mean-pooled vectors per hidden state; Fisher separability of the mean-pooled layer "
        "outputs; directionality index per layer (mean over heads).",
        "training dynamics",
    )
    body += _fig(
        a,
        "cone_over_training",
        "Cone index (over tokens, mean over genomes, then over classes) at every stream point, "
        "one line per layer, against the step.",
        "cone index over training",
    )
    body += _fig(
        a,
        "gate_mix_over_training",
        "Share of the heads of each layer carrying each gate label (all genomes pooled) "
        "against the step.",
        "gate mix over training",
    )
    shown = snaps.copy()
    body += "<h3>Snapshots</h3>" + table(shown.drop(columns=["seconds"], errors="ignore"))
    emb = _table(a, "embeddings")
    if emb is not None:
        probe = dyn.probe_threshold_steps(emb)
        probe["first_step"] = probe["first_step"].map(_step)
        body += f"<h3>Linear probe reaching {dyn.PROBE_THRESHOLD:g}</h3>" + table(
            probe.rename(columns={"layer": "hidden state"})
        )
    return Section(
        TITLE,
        body,
        tables(
            _source(a, dyn.SNAPSHOT_TABLE, "per snapshot: step, epoch, validation metrics"),
            _source(a, "embeddings", "per (step, hidden state, kind, metric): value"),
            _source(a, "gates", "per (step, layer, head, class): gate scores and label"),
            _source(a, "direction", "per (step, layer, head): directionality"),
            _source(a, "separability", "per (step, layer, point): Fisher separability"),
        ),
    )
