"""Fit the calibration temperature (validation split) and the OOD detector (training split) of
a trained model, and store them in its model directory (``bertgeom_model.json``, ``ood.npz``).

``train`` runs this at its end; ``evaluate`` reuses what is stored.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from bertgeom.io.manifest import refresh_outputs
from bertgeom.io.outputs import check_outputs, output_lock
from bertgeom.model.calibrate import fit_ood, fit_temperature, save_ood
from bertgeom.model.data import encode_labels, load_split, sequences_for
from bertgeom.model.infer import infer, require_finite, resolve_device
from bertgeom.model.store import MODEL_META, load_model_dir, update_meta

OOD_FILE = "ood.npz"


def run(
    model_dir: str | os.PathLike,
    prepared_dir: str | os.PathLike,
    device: str = "auto",
    batch_size: int = 64,
    quantile: float = 0.999,
    min_confidence: float = 0.5,
) -> dict[str, Any]:
    """Fit and store temperature and OOD detector; returns the ``calibration`` metadata.

    The model folder is locked while it is written, and its manifest (when it has one) is
    re-hashed so that the files it lists stay verifiable.
    """
    check_outputs([prepared_dir], [model_dir])
    dev = resolve_device(device)
    with output_lock(model_dir):
        return _calibrate(model_dir, prepared_dir, dev, batch_size, quantile, min_confidence)


def _calibrate(
    model_dir: str | os.PathLike,
    prepared_dir: str | os.PathLike,
    dev: str,
    batch_size: int,
    quantile: float,
    min_confidence: float,
) -> dict[str, Any]:
    bundle = load_model_dir(model_dir, device=dev)
    token_mode = bundle.vocab.spec.mode
    out: dict[str, Any] = {}
    val = load_split(prepared_dir, "val")
    val_out = infer(
        bundle.model, bundle.vocab.encode(sequences_for(val, token_mode)), batch_size, dev
    )
    require_finite(val_out.logits, Path(model_dir))
    y_val = encode_labels(val.label, bundle.labels)
    out["temperature"] = fit_temperature(val_out.logits, y_val)
    out["n_val"] = len(val)
    train = load_split(prepared_dir, "train")
    train_out = infer(
        bundle.model, bundle.vocab.encode(sequences_for(train, token_mode)), batch_size, dev
    )
    ood = fit_ood(
        train_out.cls,
        encode_labels(train.label, bundle.labels),
        len(bundle.labels),
        quantile=quantile,
        min_confidence=min_confidence,
    )
    save_ood(ood, str(Path(model_dir) / OOD_FILE))
    out.update(
        ood_threshold=ood.threshold,
        ood_quantile=quantile,
        ood_min_confidence=min_confidence,
        n_train=len(train),
    )
    update_meta(model_dir, calibration=out)
    refresh_outputs(model_dir, added=[MODEL_META, OOD_FILE])
    return out
