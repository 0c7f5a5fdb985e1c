"""``bertgeom prepare``: genomes -> spikes in reference coordinates, mutations, QC and splits.

Outputs in ``out_dir``: ``spikes.parquet`` (one row per input genome, see docs/formats.md),
``counts.tsv`` (genomes per class, split and QC status) and ``manifest.json``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import multiprocessing as mp
import os
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bertgeom.config import PrepareConfig
from bertgeom.errors import InputError
from bertgeom.genome.process import SpikeProcessor, SpikeResult
from bertgeom.genome.qc import QcThresholds
from bertgeom.genome.split import (
    LineageSplit,
    SplitResult,
    assign_lineage_splits,
    assign_splits,
    lineage_group,
)
from bertgeom.io.fasta import FastaReport, check_fasta, count_records, read_fasta
from bertgeom.io.files import atomic_path, write_tsv
from bertgeom.io.manifest import describe_inputs, write_manifest
from bertgeom.io.outputs import check_target, writing
from bertgeom.io.spikes import SPIKES_FILE, SpikesWriter, iter_spike_batches
from bertgeom.pipeline.labels import (
    LINEAGE_COLUMNS,
    Labels,
    classes_from_filenames,
    read_labels,
)
from bertgeom.resources import CLASSES

_GAP_CHARS = str.maketrans("", "", "-_")


@dataclass(frozen=True)
class PrepareSummary:
    """What ``prepare`` did (also saved in the manifest)."""

    n_genomes: int
    qc: dict[str, int]
    per_class: dict[str, dict[str, int]]  # class -> split/qc -> count
    n_identical_groups: int
    n_genomes_in_identical_groups: int
    duplicates_skipped: int
    labels_source: str
    unlabelled: int
    labels_not_in_input: int
    split_by: str = "spike"
    held_out_lineages: tuple[str, ...] = ()  # lineage groups kept out of training (test)
    n_held_out: int = 0  # genomes of those groups


def _check_lineage_split(
    config: PrepareConfig, labels: Labels | None, labels_path: str | os.PathLike | None
) -> None:
    """A lineage split needs labels with a lineage column; checked before any alignment."""
    if config.split_by != "lineage":
        return
    if labels is None:
        raise InputError("prepare: --split-by lineage needs --labels with a lineage column")
    if labels.lineage_column is None:
        raise InputError(
            f"{labels_path}: --split-by lineage needs a lineage column (one of "
            f"{', '.join(LINEAGE_COLUMNS)}, or name it with lineage_column)"
        )


def _split(
    keys: list[tuple[str, str | None, str, str]],
    lineages: list[str | None],
    config: PrepareConfig,
) -> SplitResult | LineageSplit:
    """The split ``config.split_by`` asks for."""
    labels = [k[1] for k in keys]
    spike_keys = [k[3] for k in keys]
    eligible = [k[2] != "bad" for k in keys]
    if config.split_by == "lineage":
        return assign_lineage_splits(
            labels,
            [lineage_group(x, config.lineage_depth) for x in lineages],
            spike_keys,
            eligible,
            config.val_fraction,
            config.test_fraction,
            config.held_out_fraction,
            config.seed,
            holdout=config.holdout_lineages,
            min_lineages=config.min_lineages,
        )
    return assign_splits(
        labels, spike_keys, eligible, config.val_fraction, config.test_fraction, config.seed
    )


def run(
    genomes: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    config: PrepareConfig,
    labels_path: str | os.PathLike | None = None,
    progress: bool = True,
) -> PrepareSummary:
    """Prepare genomes for training: see the module docstring."""
    paths = [str(p) for p in genomes]
    if not paths:
        raise InputError("prepare: no genome files given")
    for p in paths:  # validate before any heavy work
        if not Path(p).exists():
            raise InputError(f"{p}: no such file")
    check_target(out_dir, [*paths, labels_path], stage="prepare")
    labels = read_labels(labels_path, config.lineage_column) if labels_path is not None else None
    _check_lineage_split(config, labels, labels_path)
    file_classes = None if labels is not None else classes_from_filenames(paths)
    check_fasta(paths)
    with writing(out_dir, inputs=[*paths, labels_path], stage="prepare") as out:
        return _prepare(paths, out, config, labels, file_classes, labels_path, progress)


def _prepare(
    paths: list[str],
    out: Path,
    config: PrepareConfig,
    labels: Labels | None,
    file_classes: dict[str, str | None] | None,
    labels_path: str | os.PathLike | None,
    progress: bool,
) -> PrepareSummary:
    total = count_records(paths)
    report = FastaReport()
    records = read_fasta(paths, dedupe=config.dedupe, report=report)  # type: ignore[arg-type]
    keys: list[tuple[str, str | None, str, str]] = []  # (id, label, qc, spike_key)
    lineages: list[str | None] = []
    tmp_rows = out / f".{SPIKES_FILE}.rows.tmp"
    try:
        with SpikesWriter(tmp_rows, batch_size=config.batch_size) as writer:
            for row in process_genomes(records, config, total, progress):
                label, raw = _label_of(row, labels, file_classes)
                row["label"], row["label_raw"] = label, raw
                row["lineage"] = labels.lineage_by_id.get(row["id"]) if labels else None
                writer.write(row)
                keys.append((row["id"], label, row["qc_status"], row["spike_key"]))
                lineages.append(row["lineage"])
        split = _split(keys, lineages, config)
        held = getattr(split, "held_out", None) or (False,) * len(keys)
        _write_with_splits(tmp_rows, out / SPIKES_FILE, split.splits, held, config.batch_size)
    finally:
        if tmp_rows.exists():
            tmp_rows.unlink()

    per_class = _count(keys, split.splits)
    write_tsv(
        out / "counts.tsv",
        ["class", "n", "train", "val", "test", "good", "mediocre", "bad"],
        [
            [
                c,
                *(
                    per_class[c][k]
                    for k in ("n", "train", "val", "test", "good", "mediocre", "bad")
                ),
            ]
            for c in per_class
        ],
    )
    ids_seen = {k[0] for k in keys}
    summary = PrepareSummary(
        n_genomes=len(keys),
        qc=dict(Counter(k[2] for k in keys)),
        per_class=per_class,
        n_identical_groups=split.n_groups_shared,
        n_genomes_in_identical_groups=split.n_genomes_in_shared,
        duplicates_skipped=len(report.duplicates_skipped),
        labels_source=(labels.source if labels else "file names" if file_classes else "none"),
        unlabelled=sum(1 for k in keys if k[1] is None),
        labels_not_in_input=(len(set(labels.by_id) - ids_seen) if labels else 0),
        split_by=config.split_by,
        held_out_lineages=getattr(split, "held_out_lineages", ()),
        n_held_out=sum(held),
    )
    inputs = describe_inputs(paths + ([str(labels_path)] if labels_path else []))
    write_manifest(
        out,
        "prepare",
        inputs,
        config,
        [SPIKES_FILE, "counts.tsv"],
        summary=summary.__dict__ | {"duplicate_ids": report.duplicates_skipped[:100]},
    )
    return summary


def _label_of(
    row: dict[str, Any], labels: Labels | None, file_classes: dict[str, str | None] | None
) -> tuple[str | None, str | None]:
    if labels is not None:
        hit = labels.by_id.get(row["id"])
        return (hit[0], hit[1]) if hit else (None, None)
    if file_classes is not None:
        cls = file_classes[row["source_file"]]
        return (cls, Path(row["source_file"]).name) if cls else (None, None)
    return None, None


def process_genomes(
    records: Iterator[Any], config: PrepareConfig, total: int, progress: bool, desc: str = "prepare"
) -> Iterator[dict[str, Any]]:
    """Spikes-table rows (label and split empty) of FASTA records, in input order, on
    ``config.jobs`` processes, reporting progress over ``total`` genomes
    (:func:`bertgeom.progress.progress`)."""
    from bertgeom.progress import progress as progress_reporter

    items = ((r.id, r.sequence, r.path, r.index) for r in records)
    bar = progress_reporter(total=total, desc=desc, unit="genome", enabled=progress)
    with bar:
        if config.jobs == 1:
            _init_worker(config)
            for item in items:
                yield _process_one(item)
                bar.update()
            return
        ctx = mp.get_context("spawn" if sys.platform == "darwin" else "fork")
        with ctx.Pool(config.jobs, initializer=_init_worker, initargs=(config,)) as pool:
            for row in pool.imap(_process_one, items, chunksize=16):
                yield row
                bar.update()


_PROCESSOR: SpikeProcessor | None = None


def _init_worker(config: PrepareConfig) -> None:
    global _PROCESSOR
    _PROCESSOR = SpikeProcessor(
        thresholds=qc_thresholds(config),
        pad=config.window_pad,
        query_margin=config.query_margin,
        preset=config.preset,
    )


def qc_thresholds(config: PrepareConfig) -> QcThresholds:
    """The QC thresholds of a prepare config (its fields of the same names)."""
    return QcThresholds(
        **{f.name: getattr(config, f.name) for f in dataclasses.fields(QcThresholds)}
    )


def _process_one(item: tuple[str, str, str, int]) -> dict[str, Any]:
    gid, seq, path, index = item
    assert _PROCESSOR is not None
    clean = seq.translate(_GAP_CHARS)  # alignment gaps in the input are deleted bases
    result = _PROCESSOR.process(gid, clean)
    return result_row(
        result, source_file=path, source_index=index, gap_chars_removed=len(seq) - len(clean)
    )


def result_row(
    result: SpikeResult, source_file: str, source_index: int, gap_chars_removed: int = 0
) -> dict[str, Any]:
    """The spikes-table row of one processed genome (label and split filled in later)."""
    spike, calls, qc = result.spike, result.calls, result.qc
    insertions = ",".join(str(i) for i in spike.insertions)  # Nextclade's notation
    key = hashlib.sha1(f"{spike.aligned}|{insertions}".encode("ascii")).hexdigest()
    return {
        "id": result.id,
        "label": None,
        "label_raw": None,
        "lineage": None,
        "split": None,
        "held_out": False,
        "qc_status": qc.status,
        "qc_reasons": "; ".join(qc.reasons),
        "spike": spike.aligned,
        "insertions": insertions,
        "raw_spike": spike.raw,
        "mutations": ",".join(calls.mutations),
        "n_mutations": len(calls.mutations),
        "n_count": qc.n_count,
        "n_fraction": round(qc.n_fraction, 6),
        "ambiguous_count": qc.ambiguous_count,
        "coverage": round(qc.coverage, 6),
        "frameshift": qc.frameshift,
        "premature_stop": qc.premature_stop,
        "strand": spike.strand,
        "align_method": spike.method,
        "genome_length": result.genome_length,
        "gap_chars_removed": gap_chars_removed,
        "spike_key": key,
        "source_file": source_file,
        "source_index": source_index,
    }


def _write_with_splits(
    src: Path,
    dst: Path,
    splits: Sequence[str | None],
    held_out: Sequence[bool],
    batch_size: int,
) -> None:
    with atomic_path(dst) as tmp, SpikesWriter(tmp, batch_size=batch_size) as writer:
        i = 0
        for batch in iter_spike_batches(src, batch_size=batch_size):
            for row in batch:
                row["split"] = splits[i]
                row["held_out"] = bool(held_out[i])
                writer.write(row)
                i += 1


def _count(
    keys: list[tuple[str, str | None, str, str]], splits: Sequence[str | None]
) -> dict[str, dict[str, int]]:
    names = [c for c in CLASSES if any(k[1] == c for k in keys)]
    if any(k[1] is None for k in keys):
        names.append("unlabelled")
    fields = ("n", "train", "val", "test", "good", "mediocre", "bad")
    out = {c: dict.fromkeys(fields, 0) for c in names}
    for (_, label, qc, _), split in zip(keys, splits, strict=True):
        c = out[label or "unlabelled"]
        c["n"] += 1
        c[qc] += 1
        if split:
            c[split] += 1
    return out
