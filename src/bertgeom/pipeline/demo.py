"""The demo's last step: the installed default model classifies a few of the demo's genomes."""

from __future__ import annotations

import csv
import os
from pathlib import Path

from bertgeom.errors import ArtifactError
from bertgeom.io.fasta import read_fasta, write_fasta

#: Genomes of the demo's simulated data the installed model classifies.
N_GENOMES = 8
PREDICTIONS = "shipped_model_predictions.tsv"


def shipped_prediction(
    run_dir: str | os.PathLike, n: int = N_GENOMES, progress: bool = False
) -> list[str]:
    """Classify the first ``n`` genomes of ``run_dir/data`` with the installed default model
    into ``run_dir/shipped_model_predictions.tsv``; returns the lines to print (a note when no
    model is installed)."""
    from bertgeom.model.shipped import DEFAULT_MODEL, find_model
    from bertgeom.pipeline import predict, simulate

    run = Path(run_dir)
    try:
        find_model(None)
    except ArtifactError:
        return [f"no installed {DEFAULT_MODEL} model, so no prediction (`make model` installs it)"]
    genomes = run / "data" / simulate.GENOMES_FILE
    if not genomes.is_file():
        return []
    subset = run / "data" / "shipped_model_input.fasta"
    records = read_fasta([genomes])
    write_fasta(((r.id, r.sequence) for _, r in zip(range(n), records, strict=False)), subset)
    out = run / PREDICTIONS
    predict.run(None, [subset], out, progress=progress, output_columns="seq_id,predicted_class,"
                "probability,model_name,model_version")  # fmt: skip
    truth = _labels(run / "data" / simulate.LABELS_FILE)
    with open(out, encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    agree = sum(truth.get(r["seq_id"]) == r["predicted_class"] for r in rows)
    head = rows[0]
    lines = [
        f"installed model {head['model_name']} {head['model_version']} on {len(rows)} demo "
        f"genomes: {agree} of {len(rows)} as simulated -> {out}",
    ]
    lines += [
        f"  {r['seq_id']:<24}{r['predicted_class']:<12}{r['probability']:>8}"
        f"  (simulated {truth.get(r['seq_id'], '?')})"
        for r in rows
    ]
    return lines


def _labels(path: Path) -> dict[str, str]:
    with open(path, encoding="utf-8", newline="") as fh:
        return {r["seq_id"]: r["class"] for r in csv.DictReader(fh, delimiter="\t")}
