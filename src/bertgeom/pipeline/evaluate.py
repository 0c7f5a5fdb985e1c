"""``bertgeom evaluate``: honest metrics of a model on the test split of a prepared dataset.

Outputs in ``out_dir``: ``metrics.json`` (accuracy, macro/micro F1, per-class precision, recall,
specificity, F1 and one-vs-rest ROC-AUC, expected calibration error and NLL before and after
temperature scaling; calls right, flagged and wrong without a flag, in distribution and on
held-out lineages), ``per_class.tsv``, ``confusion.tsv``, ``predictions.tsv`` (every test
genome: true and predicted class, probability, support, conflict, note), ``lineages.tsv`` (per
lineage: right, flagged, wrong without a flag), ``open_set.tsv`` (per open-set method: AUROC
of held-out-lineage against in-distribution genomes, flag rates; with a fitted detector),
figures ``confusion.png``, ``reliability.png``
and, when the model directory has a ``history.tsv``, ``history.png``; and ``manifest.json``.
The temperature comes from the model directory (fitted on the validation split by ``train``);
``refit=True`` fits it again first.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from bertgeom.columns import EVALUATE_PREDICTIONS, cell
from bertgeom.io.files import read_tsv, reading, save_figure, write_json, write_tsv
from bertgeom.io.manifest import describe_inputs, verify_artifact, write_manifest
from bertgeom.io.outputs import check_target, writing
from bertgeom.model.data import encode_labels, load_split, sequences_for
from bertgeom.model.infer import check_batch_size, infer, require_finite, resolve_device
from bertgeom.model.metrics import Metrics, classification_metrics, softmax
from bertgeom.model.store import load_model_dir, weights_file
from bertgeom.pipeline import calibrate
from bertgeom.pipeline.evaluate_heldout import (
    LINEAGE_COLUMNS,
    OPEN_SET_COLUMNS,
    HeldOut,
    held_out_tables,
)


def run(
    model_dir: str | os.PathLike,
    prepared_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    split: str = "test",
    device: str = "auto",
    batch_size: int = 64,
    refit: bool = False,
) -> Metrics:
    """Evaluate ``model_dir`` on ``split`` of ``prepared_dir``; returns the calibrated metrics."""
    check_batch_size(batch_size)
    check_target(out_dir, [model_dir, prepared_dir], stage="evaluate")
    dev = resolve_device(device)
    if refit:
        calibrate.run(model_dir, prepared_dir, device=device, batch_size=batch_size)
    bundle = load_model_dir(model_dir, device=dev)
    df = load_split(prepared_dir, split, _columns(prepared_dir))
    out = infer(
        bundle.model,
        bundle.vocab.encode(sequences_for(df, bundle.vocab.spec.mode)),
        batch_size,
        dev,
    )
    require_finite(out.logits, model_dir)
    y = encode_labels(df.label, bundle.labels)
    raw = classification_metrics(y, softmax(out.logits.astype(np.float64)), bundle.labels)
    probs = softmax(out.logits.astype(np.float64), bundle.temperature)
    cal = classification_metrics(y, probs, bundle.labels)
    with writing(out_dir, inputs=[model_dir, prepared_dir], stage="evaluate") as d:
        outputs = _write(d, df, y, probs, cal, raw, bundle, Path(model_dir), split, out)
        write_manifest(
            d,
            "evaluate",
            describe_inputs([Path(prepared_dir) / "spikes.parquet", weights_file(model_dir)]),
            {"split": split, "device": dev, "batch_size": batch_size, "refit": refit},
            outputs,
            summary=_summary(cal),
        )
    return cal


def _write(
    d: Path,
    df: Any,
    y: np.ndarray,
    probs: np.ndarray,
    cal: Metrics,
    raw: Metrics,
    bundle: Any,
    model_dir: Path,
    split: str,
    out: Any,
) -> list[str]:
    """Tables, metrics and figures; returns the names written."""
    held = held_out_tables(model_dir, df, bundle, out, probs, y)
    _write_tables(d, df, y, probs, cal, bundle.labels, held)
    write_tsv(d / "lineages.tsv", LINEAGE_COLUMNS, held.lineage_rows)
    if held.open_set_rows:
        write_tsv(d / "open_set.tsv", OPEN_SET_COLUMNS, held.open_set_rows)
    write_json(
        d / "metrics.json",
        {
            "split": split,
            "calls": held.summary,
            "n": cal.n,
            "temperature": bundle.temperature,
            "calibrated": _summary(cal),
            "uncalibrated": _summary(raw),
            "per_class": [asdict(c) for c in cal.per_class],
            "confusion": {"labels": list(cal.labels), "counts": cal.confusion.tolist()},
        },
    )
    figures = _write_figures(d, cal, raw, model_dir)
    outputs = ["metrics.json", "per_class.tsv", "confusion.tsv", "predictions.tsv", "lineages.tsv"]
    outputs += ["open_set.tsv"] if held.open_set_rows else []
    return outputs + figures


def _summary(m: Metrics) -> dict[str, Any]:
    return {
        "accuracy": m.accuracy,
        "macro_f1": m.macro_f1,
        "micro_f1": m.micro_f1,
        "ece": m.reliability.ece,
        "nll": m.nll,
    }


def _columns(prepared_dir: str | os.PathLike) -> tuple[str, ...]:
    """The training columns, plus ``lineage`` and ``held_out`` when the table has them (tables
    written before they existed do not)."""
    import pyarrow.parquet as pq

    from bertgeom.model.data import TRAIN_COLUMNS, spikes_path

    path = spikes_path(prepared_dir)
    with reading(path, "Parquet table (spikes.parquet)", "run `bertgeom prepare` again"):
        names = pq.ParquetFile(os.path.abspath(path)).schema_arrow.names
    return TRAIN_COLUMNS + tuple(c for c in ("lineage", "held_out") if c in names)


def _write_tables(
    d: Path,
    df: Any,
    y: np.ndarray,
    probs: np.ndarray,
    m: Metrics,
    labels: tuple[str, ...],
    held: HeldOut,
) -> None:
    write_tsv(
        d / "per_class.tsv",
        ["class", "support", "precision", "recall", "specificity", "f1", "roc_auc"],
        (
            [
                c.label,
                c.support,
                f"{c.precision:.4f}",
                f"{c.recall:.4f}",
                f"{c.specificity:.4f}",
                f"{c.f1:.4f}",
                "" if c.roc_auc is None else f"{c.roc_auc:.4f}",
            ]
            for c in m.per_class
        ),
    )
    write_tsv(
        d / "confusion.tsv",
        ["true \\ predicted", *labels],
        ([labels[i], *m.confusion[i].tolist()] for i in range(len(labels))),
    )
    pred = held.checks.calls  # after the constellation check
    model = probs.argmax(axis=1)
    write_tsv(
        d / "predictions.tsv",
        EVALUATE_PREDICTIONS,
        (
            [
                cell(name, value)
                for name, value in zip(
                    EVALUATE_PREDICTIONS,
                    (r.id, r.label, held.lineages[i] or "", bool(held.held_out[i]),
                     labels[pred[i]], labels[model[i]], float(probs[i, pred[i]]),
                     bool(pred[i] == y[i]),
                     None if held.checks.support[i] < 0 else int(held.checks.support[i]),
                     None if held.checks.conflict[i] < 0 else int(held.checks.conflict[i]),
                     held.checks.notes[i], r.mutations),
                    strict=True,
                )
            ]
            for i, r in enumerate(df.itertuples())
        ),
    )  # fmt: skip


def _write_figures(d: Path, cal: Metrics, raw: Metrics, model_dir: Path) -> list[str]:
    import matplotlib.pyplot as plt

    from bertgeom.plots.classification import (
        confusion_figure,
        history_figure,
        reliability_figure,
    )

    figures = {
        "confusion.png": confusion_figure(cal.confusion, cal.labels),
        "reliability.png": reliability_figure(
            cal.reliability.confidence,
            cal.reliability.accuracy,
            cal.reliability.count,
            cal.reliability.ece,
            label=f"calibrated (uncalibrated ECE {raw.reliability.ece:.4f})",
        ),
    }
    history = model_dir / "history.tsv"
    if history.is_file():
        with reading(verify_artifact(history), "training history TSV", "retrain"):
            header, rows = read_tsv(history)
            figures["history.png"] = history_figure(
                [dict(zip(header, r, strict=True)) for r in rows]
            )
    for name, fig in figures.items():
        save_figure(fig, d / name)
        plt.close(fig)
    return list(figures)
