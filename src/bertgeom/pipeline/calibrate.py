"""Fit the calibration temperature (validation split) and the open-set detectors (training
split, thresholds on the validation split) of a trained model, and store them in its model
directory (``bertgeom_model.json``, ``ood.npz``).

Every method of :data:`bertgeom.model.openset.METHODS` is fitted and stored; ``method`` names the
one ``predict`` uses (default :data:`bertgeom.model.openset.DEFAULT_METHOD`). ``train`` runs this
at its end; ``evaluate`` reuses what is stored.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from bertgeom.errors import ConfigError
from bertgeom.io.manifest import refresh_outputs
from bertgeom.io.outputs import check_outputs, output_lock
from bertgeom.model.calibrate import fit_temperature
from bertgeom.model.data import encode_labels, load_split, sequences_for
from bertgeom.model.infer import infer, require_finite, resolve_device
from bertgeom.model.metrics import softmax
from bertgeom.model.openset import (
    DEFAULT_METHOD,
    METHODS,
    Detector,
    fit_arrays,
    fit_threshold,
    method_scores,
    save_detectors,
)
from bertgeom.model.store import MODEL_META, load_model_dir, update_meta
from bertgeom.pipeline.evaluate_heldout import OOD_FILE
from bertgeom.resources import spike_reference

__all__ = ["OOD_FILE", "run"]


def run(
    model_dir: str | os.PathLike,
    prepared_dir: str | os.PathLike,
    device: str = "auto",
    batch_size: int = 64,
    quantile: float = 0.995,
    min_confidence: float = 0.5,
    method: str = DEFAULT_METHOD,
) -> dict[str, Any]:
    """Fit and store temperature and open-set detectors; returns the ``calibration`` metadata.

    ``quantile`` of the correct validation calls' scores is each detector's threshold; a call
    whose calibrated top probability is below ``min_confidence`` is flagged too. The model
    folder is locked while it is written, and its manifest (when it has one) is re-hashed so
    that the files it lists stay verifiable.
    """
    if method not in METHODS:
        raise ConfigError(f"open-set method must be one of {', '.join(METHODS)} (got {method!r})")
    check_outputs([prepared_dir], [model_dir])
    dev = resolve_device(device)
    with output_lock(model_dir):
        return _calibrate(
            model_dir, prepared_dir, dev, batch_size, quantile, min_confidence, method
        )


def _calibrate(
    model_dir: str | os.PathLike,
    prepared_dir: str | os.PathLike,
    dev: str,
    batch_size: int,
    quantile: float,
    min_confidence: float,
    method: str,
) -> dict[str, Any]:
    bundle = load_model_dir(model_dir, device=dev)
    token_mode = bundle.vocab.spec.mode
    val = load_split(prepared_dir, "val")
    val_out = infer(
        bundle.model, bundle.vocab.encode(sequences_for(val, token_mode)), batch_size, dev
    )
    require_finite(val_out.logits, Path(model_dir))
    y_val = encode_labels(val.label, bundle.labels)
    temperature = fit_temperature(val_out.logits, y_val)
    train = load_split(prepared_dir, "train")
    train_out = infer(
        bundle.model, bundle.vocab.encode(sequences_for(train, token_mode)), batch_size, dev
    )
    y_train = encode_labels(train.label, bundle.labels)
    correct = softmax(val_out.logits.astype(np.float64), temperature).argmax(axis=1) == y_val
    detectors: dict[str, Detector] = {}
    reference = spike_reference()
    for name in METHODS:
        arrays = fit_arrays(
            name, train_out.cls, y_train, len(bundle.labels), train.spike.tolist(), reference
        )
        scores = method_scores(
            name, arrays, val_out.logits, val_out.cls, val.spike.tolist(), temperature
        )
        threshold = fit_threshold(scores, correct, quantile)
        detectors[name] = Detector(name, threshold, min_confidence, arrays)
    save_detectors(detectors, method, str(Path(model_dir) / OOD_FILE))
    out: dict[str, Any] = {
        "temperature": temperature,
        "n_val": len(val),
        "ood_method": method,
        "ood_threshold": detectors[method].threshold,
        "ood_thresholds": {name: d.threshold for name, d in detectors.items()},
        "ood_quantile": quantile,
        "ood_min_confidence": min_confidence,
        "n_train": len(train),
    }
    update_meta(model_dir, calibration=out)
    refresh_outputs(model_dir, added=[MODEL_META, OOD_FILE])
    return out
