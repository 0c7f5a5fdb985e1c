"""``bertgeom predict``: FASTA genomes in, one row per input genome out (input order).

Genomes are streamed in chunks: aligned and QC'd as in ``prepare`` (on ``jobs`` processes),
tokenized, classified on the GPU when present, and written, so memory stays flat in the number
of genomes. Without a model the installed default (:data:`bertgeom.model.shipped.DEFAULT_MODEL`)
is used. Rows join with Nextclade's TSV on ``index`` or ``seqName``; genomes that fail QC get
``Unassigned`` and the reasons, as pangolin writes them. Every row carries the model's name,
version and weights id and the package version. The columns are
:data:`bertgeom.columns.PREDICT`; the formats TSV, CSV, NDJSON and JSON
(:mod:`bertgeom.io.rows`).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bertgeom import __version__
from bertgeom.columns import PREDICT, UNASSIGNED, select
from bertgeom.config import PrepareConfig
from bertgeom.errors import ArtifactError, InputError
from bertgeom.io.fasta import FastaReport, check_fasta, count_records, read_fasta
from bertgeom.io.files import sha256_file
from bertgeom.io.outputs import check_output_path, check_outputs, writing
from bertgeom.io.rows import RowWriter, format_for, open_rows
from bertgeom.io.stdin import STDIN, spooled_stdin
from bertgeom.model.assess import assess_calls
from bertgeom.model.infer import check_batch_size, infer, resolve_device
from bertgeom.model.metrics import softmax
from bertgeom.model.openset import Detector, load_detectors
from bertgeom.model.shipped import find_model, identity
from bertgeom.model.store import ModelBundle, load_model_dir, weights_file
from bertgeom.pipeline.calibrate import OOD_FILE
from bertgeom.pipeline.prepare import process_genomes

if TYPE_CHECKING:
    from bertgeom.scale.predict import ScaleOptions

#: The columns of a predictions table, in order (kept under this name for callers).
COLUMNS = PREDICT
#: The note of a genome whose model outputs are not finite (it gets no call).
NO_CALL = "no call: the model's output is not finite (NaN or inf)"


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
    model_dir: str | os.PathLike | None,
    genomes: Sequence[str | os.PathLike],
    out_path: str | os.PathLike,
    prepare_config: PrepareConfig | None = None,
    device: str = "auto",
    batch_size: int = 64,
    chunk: int = 512,
    progress: bool = True,
    output_format: str | None = None,
    output_columns: str | Sequence[str] | None = None,
    scale: ScaleOptions | None = None,
) -> PredictSummary:
    """Classify every genome of ``genomes`` with a model.

    Parameters
    ----------
    model_dir
        A model directory, an installed model's ``NAME`` or ``NAME@VERSION``, or None for the
        installed default (see :func:`bertgeom.model.shipped.find_model`).
    genomes
        FASTA files (plain, gzip, bzip2 or xz); ``-`` is standard input.
    out_path
        The table to write (atomically; gzip-compressed when it ends in ``.gz``), or ``-`` for
        standard output.
    output_format
        ``tsv``, ``csv``, ``ndjson`` or ``json``; None: by the suffix of ``out_path``, else TSV.
    output_columns
        The columns to write, in order (names of :data:`COLUMNS`, or one comma-separated
        string); None: all.
    scale
        The engine (local or Ray), a record range, shards and a work folder
        (:class:`bertgeom.scale.predict.ScaleOptions`); None: one local stream.

    Every input record gets one row, in input order: records that fail QC get ``Unassigned``
    and the reasons; with ``dedupe = "keep-first"`` a record whose id repeats an earlier one
    gets a ``bad`` row saying so (it is not classified).
    """
    paths = [os.fspath(p) for p in genomes]
    if not paths:
        raise InputError("predict: no genome files given")
    for p in paths:
        if p != STDIN and not Path(p).exists():
            raise InputError(f"{p}: no such file")
    if str(out_path) != "-" and Path(out_path).is_dir():
        raise InputError(f"{out_path}: is a directory (--out names the table file to write)")
    columns = (
        select(output_columns)
        if output_columns is None or isinstance(output_columns, str)
        else select(",".join(output_columns))
    )
    format_for(out_path, output_format)  # an unknown format fails before any work
    check_batch_size(batch_size)
    if scale is not None:
        scale.check()  # the engine is installed, the options are valid
    cfg = prepare_config or PrepareConfig()
    dev = resolve_device(device)
    model_path = find_model(model_dir)
    check_outputs([model_path, *(p for p in paths if p != STDIN)], [out_path])
    if str(out_path) != "-":
        check_output_path(out_path, kind="file")
    lock = (
        contextlib.nullcontext()
        if str(out_path) == "-"
        else writing(out_path, inputs=[model_path, *(p for p in paths if p != STDIN)], kind="file")
    )
    with lock, spooled_stdin(paths) as names:  # one writer of out_path, before the model loads
        check_fasta(names)
        if scale is not None and scale.sharded:
            from bertgeom.scale.predict import predict_shards

            on = device if scale.engine == "ray" else dev  # "auto": each worker's device
            tally = predict_shards(
                names, model_path, out_path, columns, output_format, cfg, on, batch_size, scale,
                progress,
            )  # fmt: skip
        else:
            tally = _predict_stream(
                names, model_path, out_path, columns, output_format, cfg, dev, batch_size, chunk,
                progress,
            )  # fmt: skip
    if tally.counts["nonfinite"]:
        print(
            f"predict: warning: {tally.counts['nonfinite']} genomes got no call: the model's "
            f"outputs for them are not finite (damaged weights in {model_path}, or training "
            "diverged)",
            file=sys.stderr,
        )
    return tally.summary()


def _predict_stream(
    names: list[str],
    model_path: Path,
    out_path: str | os.PathLike,
    columns: Sequence[str],
    output_format: str | None,
    cfg: PrepareConfig,
    dev: str,
    batch_size: int,
    chunk: int,
    progress: bool,
) -> Tally:
    """One local stream over all records (alignment on ``cfg.jobs`` processes)."""
    bundle = load_model_dir(model_path, device=dev)
    ood = load_ood(model_path, bundle.model.config.hidden_size)
    stamp = model_stamp(model_path, bundle.meta)
    total = count_records(names)
    report = FastaReport()
    headers: deque[str] = deque()
    duplicates: list[tuple[int, tuple[str, str, int], str]] = []
    records = _note_duplicates(
        read_fasta(names, dedupe=cfg.dedupe, report=report),  # type: ignore[arg-type]
        report,
        duplicates,
        headers,
    )
    classifier = Classifier(bundle, ood, stamp, dev, batch_size)
    with open_rows(out_path, columns, output_format) as out:
        rows: list[dict[str, Any]] = []
        stream = process_genomes(records, cfg, total, progress, desc="predict")
        for k, row in enumerate(stream):
            while duplicates and duplicates[0][0] <= k:
                rows.append(duplicate_row(*duplicates.pop(0)[1:]))
            row["header"] = headers.popleft()
            rows.append(row)
            if len(rows) >= chunk:
                classifier.flush(rows, out)
                rows = []
        rows += [duplicate_row(d, h) for _, d, h in duplicates]
        classifier.flush(rows, out)
    return classifier.tally


def load_ood(model_path: Path, hidden_size: int) -> Detector | None:
    """The model's default open-set detector (None, with a warning, when it has none)."""
    ood_path = model_path / OOD_FILE
    if ood_path.is_file():
        detectors, default = load_detectors(str(ood_path))
        for d in detectors.values():
            for name, a in d.arrays.items():
                if name in ("centroids", "class_centroids") and (
                    a.ndim != 2 or a.shape[1] != hidden_size
                ):
                    raise ArtifactError(
                        f"{ood_path}: its {d.method} detector was fitted on embeddings of shape "
                        f"{a.shape[1:]}, but the model's are {hidden_size}-dimensional (not this "
                        "model's detector; `bertgeom evaluate --refit` fits it again)"
                    )
        return detectors[default]
    print(
        f"predict: warning: {ood_path} is missing, so the ood columns stay empty "
        "(`bertgeom evaluate --refit` fits the detector)",
        file=sys.stderr,
    )
    return None


def _note_duplicates(
    records: Iterator[Any],
    report: FastaReport,
    out: list[tuple[int, tuple[str, str, int], str]],
    headers: deque[str],
) -> Iterator[Any]:
    """``records`` as they are, their header lines appended to ``headers``; each duplicate the
    reader skipped is appended to ``out`` with the number of records yielded before it (where
    its row goes) and its header line."""
    seen = k = 0

    def note() -> None:
        nonlocal seen
        skipped = report.duplicates_skipped
        new = zip(skipped[seen:], report.duplicate_headers[seen:], strict=True)
        out.extend((k, d, h) for d, h in new)
        seen = len(skipped)

    for record in records:
        note()
        headers.append(record.description)
        yield record
        k += 1
    note()


def duplicate_row(dup: tuple[str, str, int], header: str) -> dict[str, Any]:
    seq_id, path, index = dup
    return {
        "id": seq_id,
        "header": header,
        "qc_status": "bad",
        "qc_reasons": f"duplicate id: record {index + 1} of {path} repeats an earlier record's "
        "id (dedupe keep-first: not classified)",
        "duplicate": True,
    }


def split_mutations(mutations: str) -> tuple[str, str, str]:
    """``(aaSubstitutions, aaDeletions, aaInsertions)`` of a comma-separated mutation list in
    Nextclade notation (``S:N501Y``, ``S:H69-``, ``S:214:EPE``), each comma-separated."""
    subs: list[str] = []
    dels: list[str] = []
    ins: list[str] = []
    for m in filter(None, mutations.split(",")):
        (ins if m.count(":") == 2 else dels if m.endswith("-") else subs).append(m)
    return ",".join(subs), ",".join(dels), ",".join(ins)


@dataclass(frozen=True)
class Classified:
    """One output row before its ``index``: its column values and what it counts as
    (``outcome``: ``ok`` classified, ``bad`` failed QC or duplicate, ``nonfinite`` no call)."""

    values: dict[str, Any]
    outcome: str
    label: str = ""
    ood: bool = False
    duplicate: bool = False


@dataclass
class Tally:
    """Numbers the classified rows in order, writes them and counts them."""

    counts: dict[str, int] = field(
        default_factory=lambda: {"n": 0, "ok": 0, "bad": 0, "ood": 0, "dup": 0, "nonfinite": 0}
    )
    per_class: dict[str, int] = field(default_factory=dict)
    first: int = 0  # the index of the first row (the first record of a record range)

    def write(self, items: Sequence[Classified], out: RowWriter) -> None:
        """Write ``items`` (the next rows in input order) with their global ``index``."""
        counts = self.counts
        for item in items:
            counts[item.outcome] += 1
            counts["ood"] += int(item.ood)
            counts["dup"] += int(item.duplicate)
            if item.outcome == "ok":
                self.per_class[item.label] = self.per_class.get(item.label, 0) + 1
            out.write(item.values | {"index": self.first + counts["n"]})
            counts["n"] += 1

    def summary(self) -> PredictSummary:
        """The counts as a :class:`PredictSummary`."""
        c = self.counts
        return PredictSummary(c["n"], c["ok"], c["bad"], c["ood"], self.per_class, c["dup"])


def model_stamp(model_path: Path, meta: dict[str, Any]) -> dict[str, str]:
    """The model's name, version and weights id and the package version (every row has them)."""
    name, version = identity(model_path, meta)
    return {
        "model_name": name,
        "model_version": version,
        "model_id": sha256_file(weights_file(model_path))[:12],
        "bertgeom_version": __version__,
    }


def token_column(bundle: ModelBundle) -> str:
    """The spikes-table column the model's vocabulary encodes."""
    return "spike" if bundle.vocab.spec.mode == "aligned" else "raw_spike"


@dataclass
class Classifier:
    """Classifies chunks of processed rows (and writes them, with :meth:`flush`)."""

    bundle: ModelBundle
    ood: Detector | None
    stamp: dict[str, str]
    device: str
    batch_size: int
    tally: Tally = field(default_factory=Tally)

    def flush(self, rows: list[dict[str, Any]], out: RowWriter) -> None:
        self.tally.write(self.classify(rows), out)

    def classify(
        self, rows: list[dict[str, Any]], ids: np.ndarray | None = None
    ) -> list[Classified]:
        """The output rows of processed ``rows``; ``ids``: the token ids of the rows that
        passed QC, in order, when already encoded (else encoded here)."""
        bundle, ood = self.bundle, self.ood
        ok = [i for i, r in enumerate(rows) if r["qc_status"] != "bad"]
        if ids is None:
            ids = bundle.vocab.encode([rows[i][token_column(bundle)] for i in ok])
        result = infer(bundle.model, ids.astype(np.int64), self.batch_size, self.device)
        probs = softmax(result.logits.astype(np.float64), bundle.temperature)
        order = np.argsort(-probs, axis=1)
        finite = np.isfinite(result.logits).all(axis=1) & np.isfinite(probs).all(axis=1)  # (n,)
        good = np.flatnonzero(finite)  # the constellation and open-set checks of finite rows
        checks = assess_calls(
            bundle.labels,
            probs[good],
            result.logits[good],
            result.cls[good],
            [rows[ok[k]]["spike"] for k in good],
            [rows[ok[k]]["mutations"] for k in good],
            ood,
            bundle.temperature,
        )
        dist, flags = checks.ood_score, checks.ood
        position = {i: k for k, i in enumerate(ok)}
        checked = {k: j for j, k in enumerate(good)}
        classified = []
        for i, row in enumerate(rows):
            values = self._describe(row)
            k = position.get(i)
            duplicate = bool(row.get("duplicate"))
            if k is not None and not finite[k]:  # never a call from NaN or infinite outputs
                values["predicted_class"] = ""
                values["ood"] = True
                values["qc_reasons"] = "; ".join(filter(None, [row["qc_reasons"], NO_CALL]))
                classified.append(Classified(values, "nonfinite", duplicate=duplicate))
            elif k is not None:
                j = checked[k]
                top = int(checks.calls[j])  # the model's call, or the constellation check's
                rest = [c for c in order[k] if c != top]
                second = rest[0] if rest else top
                label = bundle.labels[top]
                values |= {
                    "predicted_class": label,
                    "probability": float(probs[k, top]),
                    "runner_up": bundle.labels[second],
                    "runner_up_probability": float(probs[k, second]),
                    "margin": float(probs[k, top] - probs[k, second]),
                    "ood": None if flags is None else bool(flags[j]),
                    "ood_distance": None if dist is None else float(dist[j]),
                    "support": None if checks.support[j] < 0 else int(checks.support[j]),
                    "conflict": None if checks.conflict[j] < 0 else int(checks.conflict[j]),
                    "model_class": bundle.labels[int(order[k, 0])],
                    "note": checks.notes[j],
                }
                flagged = flags is not None and bool(flags[j])
                classified.append(Classified(values, "ok", label, flagged, duplicate))
            else:
                values["predicted_class"] = UNASSIGNED
                classified.append(Classified(values, "bad", duplicate=duplicate))
        return classified

    def _describe(self, row: dict[str, Any]) -> dict[str, Any]:
        """The columns of a row that do not depend on the model's output."""
        values: dict[str, Any] = {
            "seqName": row["header"],
            "seq_id": row["id"],
            "qc_status": row["qc_status"],
            "qc_reasons": row["qc_reasons"],
            **self.stamp,
        }
        if row.get("duplicate"):
            return values
        subs, dels, ins = split_mutations(row["mutations"])
        return values | {
            "mutations": row["mutations"],
            "aaSubstitutions": subs,
            "aaDeletions": dels,
            "aaInsertions": ins,
            "insertions": row["insertions"],
            "n_mutations": row["n_mutations"],
            "n_fraction": float(row["n_fraction"]),
            "align_method": row["align_method"],
        }
