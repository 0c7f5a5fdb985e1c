"""``bertgeom predict``: FASTA genomes in, one TSV row per input genome out (input order).

Genomes are streamed in chunks: aligned and QC'd as in ``prepare`` (on ``jobs`` processes),
tokenized, classified on the GPU when present, and written, so memory stays flat in the number
of genomes. Genomes that fail QC get a row with an empty class and the reason. Every row carries
the model id and the package version, as pangolin's reports do.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bertgeom import __version__
from bertgeom.config import PrepareConfig
from bertgeom.errors import InputError
from bertgeom.io.fasta import check_fasta, count_records, read_fasta
from bertgeom.io.files import atomic_path, sha256_file
from bertgeom.model.calibrate import OodModel, load_ood
from bertgeom.model.infer import infer, resolve_device
from bertgeom.model.metrics import softmax
from bertgeom.model.store import WEIGHTS, ModelBundle, load_model_dir
from bertgeom.pipeline.calibrate import OOD_FILE
from bertgeom.pipeline.prepare import process_genomes

COLUMNS = (
    "seq_id",
    "predicted_class",
    "probability",
    "runner_up",
    "runner_up_probability",
    "margin",
    "ood",
    "ood_distance",
    "qc_status",
    "qc_notes",
    "spike_mutations",
    "n_mutations",
    "spike_n_fraction",
    "align_method",
    "model_id",
    "bertgeom_version",
)


@dataclass(frozen=True)
class PredictSummary:
    """Counts of what ``predict`` wrote."""

    n_genomes: int
    n_classified: int
    n_failed_qc: int
    n_ood: int
    per_class: dict[str, int]


def run(
    model_dir: str | os.PathLike,
    genomes: Sequence[str | os.PathLike],
    out_path: str | os.PathLike,
    prepare_config: PrepareConfig | None = None,
    device: str = "auto",
    batch_size: int = 64,
    chunk: int = 512,
    progress: bool = True,
) -> PredictSummary:
    """Classify every genome of ``genomes`` with the model in ``model_dir``."""
    paths = [str(p) for p in genomes]
    if not paths:
        raise InputError("predict: no genome files given")
    for p in paths:
        if not Path(p).exists():
            raise InputError(f"{p}: no such file")
    cfg = prepare_config or PrepareConfig()
    dev = resolve_device(device)
    bundle = load_model_dir(model_dir, device=dev)
    ood_path = Path(model_dir) / OOD_FILE
    ood = load_ood(str(ood_path)) if ood_path.is_file() else None
    model_id = sha256_file(Path(model_dir) / WEIGHTS)[:12]
    check_fasta(paths)
    total = count_records(paths)
    records = read_fasta(paths, dedupe=cfg.dedupe)  # type: ignore[arg-type]
    counts = {"n": 0, "ok": 0, "bad": 0, "ood": 0}
    per_class: dict[str, int] = {}
    with atomic_path(out_path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, delimiter="\t", lineterminator="\n")
        writer.writerow(COLUMNS)
        rows: list[dict[str, Any]] = []
        for row in process_genomes(records, cfg, total, progress, desc="predict"):
            rows.append(row)
            if len(rows) >= chunk:
                _flush(rows, bundle, ood, model_id, dev, batch_size, writer, counts, per_class)
                rows = []
        _flush(rows, bundle, ood, model_id, dev, batch_size, writer, counts, per_class)
    return PredictSummary(counts["n"], counts["ok"], counts["bad"], counts["ood"], per_class)


def _flush(
    rows: list[dict[str, Any]],
    bundle: ModelBundle,
    ood: OodModel | None,
    model_id: str,
    device: str,
    batch_size: int,
    writer: Any,
    counts: dict[str, int],
    per_class: dict[str, int],
) -> None:
    ok = [i for i, r in enumerate(rows) if r["qc_status"] != "bad"]
    column = "spike" if bundle.vocab.spec.mode == "aligned" else "raw_spike"
    out = infer(
        bundle.model, bundle.vocab.encode([rows[i][column] for i in ok]), batch_size, device
    )
    probs = softmax(out.logits.astype(np.float64), bundle.temperature)
    order = np.argsort(-probs, axis=1)
    dist = ood.distances(out.cls) if ood is not None else None
    flags = ood.flag(out.cls, probs.max(axis=1)) if ood is not None else None
    result = {i: k for k, i in enumerate(ok)}
    for i, row in enumerate(rows):
        k = result.get(i)
        cells = [row["id"], "", "", "", "", "", "", ""]
        if k is not None:
            top, second = order[k, 0], order[k, 1] if probs.shape[1] > 1 else order[k, 0]
            label = bundle.labels[top]
            cells[1:8] = [
                label,
                f"{probs[k, top]:.4f}",
                bundle.labels[second],
                f"{probs[k, second]:.4f}",
                f"{probs[k, top] - probs[k, second]:.4f}",
                "" if flags is None else str(bool(flags[k])).lower(),
                "" if dist is None else f"{dist[k]:.2f}",
            ]
            per_class[label] = per_class.get(label, 0) + 1
            counts["ok"] += 1
            counts["ood"] += int(flags is not None and bool(flags[k]))
        else:
            counts["bad"] += 1
        cells += [
            row["qc_status"],
            row["qc_reasons"],
            row["mutations"],
            row["n_mutations"],
            f"{row['n_fraction']:.4f}",
            row["align_method"],
            model_id,
            __version__,
        ]
        writer.writerow(cells)
        counts["n"] += 1
