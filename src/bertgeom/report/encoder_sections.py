"""The report of ``bertgeom analyze-encoder``: an overview, each measure's section, the Methods.

The measures' sections and the Methods are the ones ``bertgeom report`` shows (they read only
``analyze/``); the spike pipeline's data, training and classification sections are left out,
and the overview replaces the summary: the model, the inputs, the notes, and the measures'
computed findings.
"""

from __future__ import annotations

from bertgeom.report.artefacts import RunArtefacts, report_measures
from bertgeom.report.common import file_name, stage_notes, unavailable
from bertgeom.report.html import Section, bullets, esc, key_numbers, note, para
from bertgeom.report.methods import methods_section


def encoder_overview_section(run: RunArtefacts) -> Section:
    """The encoder, the inputs, what was left out and the findings."""
    title = "Encoder and inputs"
    a = run.analyze
    missing = unavailable(a)
    if missing:
        return Section(title, missing)
    body = stage_notes(a)
    s = a.summary
    inputs = [file_name(i.get("path", "")) for i in (a.manifest or {}).get("inputs", [])]
    numbers = [
        (f"{s.get('n_sequences', 0):,}", "sequences"),
        (str(len(s.get("classes") or [])) if s.get("labelled") else "none", "labels"),
        (f"{s.get('n_layers', '?')} x {s.get('n_heads', '?')}", "layers x heads"),
    ]
    body += key_numbers(numbers)
    body += para(
        f"Model type <code>{esc(s.get('model_type', '?'))}</code>, inputs "
        f"{esc(', '.join(inputs))}; sequences of at most {esc(s.get('max_length', '?'))} tokens "
        "as the model's own tokenizer cuts them. Every sequence is in the statistics (an encoder "
        "makes no predictions to score); the class statistics group them by the label column"
        + (" of the input." if s.get("labelled") else ", absent here (one class, all).")
        + " The sections below say “genomes” for the sequences."
    )
    notes = s.get("notes") or []
    if notes:
        body += "<h3>Notes</h3>" + bullets(esc(n) for n in notes)
    items = [f for m in report_measures(run) for f in m.findings(run) if f]
    if items:
        body += "<h3>Findings</h3>" + bullets(items).replace("<ul>", '<ul class="findings">', 1)
    else:
        body += note("The measures computed no findings.")
    return Section(title, body)


def build_encoder_sections(run: RunArtefacts) -> list[Section]:
    """The overview, each measure's section (registry order) and the Methods."""
    out = [encoder_overview_section(run)]
    for measure in report_measures(run):
        section = measure.section(run)
        if section is not None:
            out.append(section)
    out.append(methods_section(run))
    return out
