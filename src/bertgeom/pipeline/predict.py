"""``bertgeom predict``: FASTA genomes in, one TSV row per input genome out (input order).

Genomes are streamed in chunks: aligned and QC'd as in ``prepare`` (on ``jobs`` processes),
tokenized, classified on the GPU when present, and written, so memory stays flat in the number
of genomes. Genomes that fail QC get a row with an empty class and the reason. Every row carries
the model id and the package version, as pangolin's reports do.
"""

from __future__ import annotations

import gzip
import io
import os
import re
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from bertgeom import __version__
from bertgeom.config import PrepareConfig
from bertgeom.errors import InputError
from bertgeom.io.fasta import FastaReport, check_fasta, count_records, read_fasta
from bertgeom.io.files import atomic_path, sha256_file
from bertgeom.model.assess import assess_calls
from bertgeom.model.infer import check_batch_size, infer, resolve_device
from bertgeom.model.metrics import softmax
from bertgeom.model.openset import Detector, load_detectors
from bertgeom.model.store import ModelBundle, load_model_dir, weights_file
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
    "support",
    "conflict",
    "note",
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
    n_duplicates: int = 0  # records skipped by ``dedupe = "keep-first"`` (rows marked bad)


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
    """Classify every genome of ``genomes`` with the model in ``model_dir``.

    ``out_path`` is a TSV file (gzip-compressed when it ends in ``.gz``), written atomically, or
    ``-`` for standard output. Every input record gets one row, in input order: records that
    fail QC get an empty class and the reasons; with ``dedupe = "keep-first"`` a record whose id
    repeats an earlier one gets a ``bad`` row saying so (it is not classified).
    """
    paths = [str(p) for p in genomes]
    if not paths:
        raise InputError("predict: no genome files given")
    for p in paths:
        if not Path(p).exists():
            raise InputError(f"{p}: no such file")
    if str(out_path) != "-" and Path(out_path).is_dir():
        raise InputError(f"{out_path}: is a directory (--out names the TSV file to write)")
    check_batch_size(batch_size)
    cfg = prepare_config or PrepareConfig()
    dev = resolve_device(device)
    check_fasta(paths)
    bundle = load_model_dir(model_dir, device=dev)
    ood_path = Path(model_dir) / OOD_FILE
    ood = _default_detector(str(ood_path)) if ood_path.is_file() else None
    if ood is None:
        print(
            f"predict: warning: {ood_path} is missing, so the ood columns stay empty "
            "(`bertgeom evaluate --refit` fits the detector)",
            file=sys.stderr,
        )
    model_id = sha256_file(weights_file(model_dir))[:12]
    total = count_records(paths)
    report = FastaReport()
    duplicates: list[tuple[int, tuple[str, str, int]]] = []
    records = _note_duplicates(
        read_fasta(paths, dedupe=cfg.dedupe, report=report),  # type: ignore[arg-type]
        report,
        duplicates,
    )
    counts = {"n": 0, "ok": 0, "bad": 0, "ood": 0, "dup": 0}
    per_class: dict[str, int] = {}
    out = _Writer(bundle, ood, model_id, dev, batch_size, counts, per_class)
    with _open_output(out_path) as fh:
        fh.write(_line(COLUMNS))
        rows: list[dict[str, Any]] = []
        for k, row in enumerate(process_genomes(records, cfg, total, progress, desc="predict")):
            while duplicates and duplicates[0][0] <= k:
                rows.append(_duplicate_row(duplicates.pop(0)[1]))
            rows.append(row)
            if len(rows) >= chunk:
                out.flush(rows, fh)
                rows = []
        rows += [_duplicate_row(d) for _, d in duplicates]
        out.flush(rows, fh)
    return PredictSummary(
        counts["n"], counts["ok"], counts["bad"], counts["ood"], per_class, counts["dup"]
    )


def _default_detector(path: str) -> Detector:
    detectors, default = load_detectors(path)
    return detectors[default]


def _note_duplicates(
    records: Iterator[Any], report: FastaReport, out: list[tuple[int, tuple[str, str, int]]]
) -> Iterator[Any]:
    """``records`` as they are; each duplicate the reader skipped is appended to ``out`` with
    the number of records yielded before it (where its row goes)."""
    seen = k = 0
    for record in records:
        skipped = report.duplicates_skipped
        out.extend((k, d) for d in skipped[seen:])
        seen = len(skipped)
        yield record
        k += 1
    out.extend((k, d) for d in report.duplicates_skipped[seen:])


def _duplicate_row(dup: tuple[str, str, int]) -> dict[str, Any]:
    seq_id, path, index = dup
    return {
        "id": seq_id,
        "qc_status": "bad",
        "qc_reasons": f"duplicate id: record {index + 1} of {path} repeats an earlier record's "
        "id (dedupe keep-first: not classified)",
        "duplicate": True,
    }


@contextmanager
def _open_output(out_path: str | os.PathLike) -> Iterator[TextIO]:
    """Standard output for ``-``; else an atomically written file, gzip for ``.gz``."""
    if str(out_path) == "-":
        yield sys.stdout
        sys.stdout.flush()
        return
    with atomic_path(out_path) as tmp:
        if str(out_path).endswith(".gz"):
            # no file name or time in the header: equal rows give equal bytes
            with (
                open(tmp, "wb") as raw,
                gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as packed,
                io.TextIOWrapper(packed, encoding="utf-8", newline="") as fh,
            ):
                yield fh
        else:
            with open(tmp, "w", encoding="utf-8", newline="") as fh:
                yield fh


def _line(cells: Sequence[Any]) -> str:
    """One TSV line; cells are written as they are (no quoting: an id with a quote stays the
    FASTA's id), with tabs and line breaks inside a cell turned into spaces."""
    return "\t".join(_CLEAN.sub(" ", str(c)) for c in cells) + "\n"


_CLEAN = re.compile(r"[\t\r\n]")


@dataclass
class _Writer:
    """Classifies chunks of processed rows and writes their TSV lines."""

    bundle: ModelBundle
    ood: Detector | None
    model_id: str
    device: str
    batch_size: int
    counts: dict[str, int]
    per_class: dict[str, int]

    def flush(self, rows: list[dict[str, Any]], fh: TextIO) -> None:
        bundle, ood, counts = self.bundle, self.ood, self.counts
        ok = [i for i, r in enumerate(rows) if r["qc_status"] != "bad"]
        column = "spike" if bundle.vocab.spec.mode == "aligned" else "raw_spike"
        out = infer(
            bundle.model,
            bundle.vocab.encode([rows[i][column] for i in ok]),
            self.batch_size,
            self.device,
        )
        probs = softmax(out.logits.astype(np.float64), bundle.temperature)
        order = np.argsort(-probs, axis=1)
        checks = assess_calls(
            bundle.labels,
            probs,
            out.logits,
            out.cls,
            [rows[i]["spike"] for i in ok],
            [rows[i]["mutations"] for i in ok],
            ood,
            bundle.temperature,
        )
        dist, flags = checks.ood_score, checks.ood
        result = {i: k for k, i in enumerate(ok)}
        for i, row in enumerate(rows):
            k = result.get(i)
            cells = [row["id"], "", "", "", "", "", "", "", "", "", ""]
            if k is not None:
                top = checks.calls[k]  # the model's call, or the constellation check's
                rest = [c for c in order[k] if c != top]
                second = rest[0] if rest else top
                label = bundle.labels[top]
                cells[1:11] = [
                    label,
                    f"{probs[k, top]:.4f}",
                    bundle.labels[second],
                    f"{probs[k, second]:.4f}",
                    f"{probs[k, top] - probs[k, second]:.4f}",
                    "" if flags is None else str(bool(flags[k])).lower(),
                    "" if dist is None else f"{dist[k]:.2f}",
                    "" if checks.support[k] < 0 else str(checks.support[k]),
                    "" if checks.conflict[k] < 0 else str(checks.conflict[k]),
                    checks.notes[k],
                ]
                self.per_class[label] = self.per_class.get(label, 0) + 1
                counts["ok"] += 1
                counts["ood"] += int(flags is not None and bool(flags[k]))
            else:
                counts["bad"] += 1
            if row.get("duplicate"):
                counts["dup"] += 1
                cells += [row["qc_status"], row["qc_reasons"], "", "", "", ""]
            else:
                cells += [
                    row["qc_status"],
                    row["qc_reasons"],
                    row["mutations"],
                    row["n_mutations"],
                    f"{row['n_fraction']:.4f}",
                    row["align_method"],
                ]
            cells += [self.model_id, __version__]
            fh.write(_line(cells))
            counts["n"] += 1
