"""The report's sections, in order: the stages', then one per measure, then the Methods.

The summary lives here; the data, training and classification sections in
:mod:`bertgeom.report.stage_sections`; each geometry measure's section comes from the measure
itself (``Measure.section``, registry order; the section functions live in
:mod:`bertgeom.report.geometry_sections` and :mod:`bertgeom.report.stream_sections`); the methods
in :mod:`bertgeom.report.methods`.
Every sentence is computed from the run's artefacts or is a definition; a section whose stage
has not been run says so.
"""

from __future__ import annotations

from collections.abc import Callable

from bertgeom.report.artefacts import RunArtefacts, StageArtefacts, report_measures
from bertgeom.report.common import (
    file_name,
)
from bertgeom.report.dynamics_section import dynamics_findings, dynamics_section
from bertgeom.report.html import (
    Section,
    bullets,
    esc,
    key_numbers,
    note,
    para,
    pct,
)
from bertgeom.report.methods import methods_section
from bertgeom.report.stage_sections import (
    calibration_sentence,
    classification_section,
    data_section,
    training_section,
)


def _created(stage: StageArtefacts) -> str:
    created = str((stage.manifest or {}).get("created", ""))
    return created.replace("T", " ").replace("+00:00", " UTC") if created else "time unknown"


def _stages_run(run: RunArtefacts) -> str:
    items = []
    for stage in run.stages.values():
        if stage.present:
            inputs = ", ".join(
                file_name(i.get("path", "")) for i in (stage.manifest or {}).get("inputs", [])
            )
            from_ = f" from {esc(inputs)}" if inputs else ""
            items.append(f"<code>{esc(stage.command)}</code> ({esc(_created(stage))}){from_}")
    missing = [f"<code>{esc(s.command)}</code>" for s in run.stages.values() if not s.present]
    text = "Stages found in this run directory: " + (bullets(items) if items else "none.")
    if missing:
        text += para(f"Not run (no folder): {', '.join(missing)}.")
    return text


def _key_numbers(run: RunArtefacts) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    spikes = run.prepared.table("spikes")
    if spikes is not None:
        qc = spikes["qc_status"].value_counts()
        out.append((f"{len(spikes):,}", "genomes prepared"))
        out += [(f"{int(qc.get(s, 0)):,}", f"QC {s}") for s in ("good", "mediocre", "bad")]
        labelled = spikes["label"].dropna()
        out.append((f"{labelled.nunique()}", "classes"))
    metrics = run.evaluate.documents.get("metrics")
    if metrics:
        cal = metrics.get("calibrated", {})
        split = metrics.get("split", "test")
        out.append(
            (pct(cal.get("accuracy")), f"{split} accuracy ({metrics.get('n', 0):,} genomes)")
        )
        out.append((f"{cal.get('macro_f1', float('nan')):.4f}", f"{split} macro-F1"))
    genomes = run.analyze.table("genomes")
    if genomes is not None:
        out.append((f"{len(genomes):,}", "genomes analysed"))
    return out


def _output_hashes(stage: StageArtefacts) -> dict[str, str]:
    outputs = (stage.manifest or {}).get("outputs") or []
    return {file_name(o.get("path", "")): str(o.get("sha256")) for o in outputs if o.get("sha256")}


def consistency_notes(run: RunArtefacts) -> list[str]:
    """Stages whose inputs are not the outputs of this run's earlier stages (by SHA-256)."""
    made = {"spikes.parquet": ("prepared", _output_hashes(run.prepared)),
            "model.safetensors": ("model", _output_hashes(run.model))}  # fmt: skip
    notes = []
    for stage in (run.model, run.evaluate, run.analyze):
        for item in (stage.manifest or {}).get("inputs") or []:
            name = file_name(item.get("path", ""))
            source, hashes = made.get(name, ("", {}))
            if name in hashes and item.get("sha256") and item["sha256"] != hashes[name]:
                notes.append(
                    f"Caution: <code>{esc(stage.name)}/</code> was computed from a "
                    f"{esc(name)} that differs from the one in <code>{esc(source)}/</code> "
                    "(SHA-256 in the manifests), so its numbers may not belong to this run."
                )
    return notes


def summary_section(run: RunArtefacts) -> Section:
    """What was run, the key numbers and the main findings."""
    body = _stages_run(run) + key_numbers(_key_numbers(run))
    items = []
    metrics = run.evaluate.documents.get("metrics")
    if metrics:
        cal = metrics.get("calibrated") or {}
        items.append(
            f"On the {metrics.get('n', 0):,} genomes of the {esc(metrics.get('split', ''))} "
            f"split the classifier reaches accuracy {pct(cal.get('accuracy'), 2)} and macro-F1 "
            f"{cal.get('macro_f1', float('nan')):.4f}. {calibration_sentence(metrics)}"
        )
    items += consistency_notes(run)
    for measure in report_measures(run):
        items += [s for s in measure.findings(run) if s]
    items += dynamics_findings(run)
    if items:
        body += "<h3>Findings</h3>" + bullets(items).replace("<ul>", '<ul class="findings">', 1)
    else:
        body += note("No evaluation or analysis outputs were found, so there are no findings yet.")
    return Section("Summary", body)


#: The sections before the measures' own, in order.
STAGE_SECTIONS: tuple[Callable[[RunArtefacts], Section], ...] = (
    summary_section,
    data_section,
    training_section,
    classification_section,
)


def build_sections(run: RunArtefacts) -> list[Section]:
    """Every section of the report, in order: the stages', each measure's (registry order),
    the training dynamics (with ``analyze --over-training``), the Methods."""
    out = [build(run) for build in STAGE_SECTIONS]
    for measure in report_measures(run):
        section = measure.section(run)
        if section is not None:
            out.append(section)
    dynamics = dynamics_section(run)
    if dynamics is not None:
        out.append(dynamics)
    out.append(methods_section(run))
    return out
