"""``evaluate``'s trust checks: every test call assessed as ``predict`` assesses it, tabulated
per lineage, and every open-set method scored on held-out lineages (``lineages.tsv``,
``open_set.tsv``, ``metrics.json``'s ``calls``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bertgeom.model.assess import Assessment, assess_calls
from bertgeom.model.heldout import LINEAGE_COLUMNS, OPEN_SET_COLUMNS, lineage_rows, open_set_rows
from bertgeom.model.infer import Inference
from bertgeom.model.openset import load_detectors
from bertgeom.model.store import ModelBundle

__all__ = ["LINEAGE_COLUMNS", "OPEN_SET_COLUMNS", "HeldOut", "held_out_tables"]

OOD_FILE = "ood.npz"  # as bertgeom.pipeline.calibrate.OOD_FILE (imported there from here)


@dataclass(frozen=True)
class HeldOut:
    """Per-genome checks and the tables built from them."""

    checks: Assessment
    lineages: list[str | None]
    held_out: np.ndarray  # (n,) bool
    lineage_rows: list[list[object]]
    open_set_rows: list[list[object]]
    summary: dict[str, Any]


def held_out_tables(
    model_dir: Path, df: Any, bundle: ModelBundle, out: Inference, probs: np.ndarray, y: np.ndarray
) -> HeldOut:
    """Assess the calls of ``df``'s genomes (model outputs ``out``, calibrated ``probs``, true
    class ids ``y``) with the model's default detector and constellation check."""
    path = model_dir / OOD_FILE
    detectors, default = load_detectors(str(path)) if path.is_file() else ({}, "")
    spikes, mutations = df.spike.tolist(), df.mutations.fillna("").tolist()
    args = (bundle.labels, probs, out.logits, out.cls, spikes, mutations)
    checks = assess_calls(*args, detectors.get(default), bundle.temperature)
    lineages = df.lineage.tolist() if "lineage" in df else [None] * len(df)
    held = df.held_out.fillna(False).to_numpy(bool) if "held_out" in df else np.zeros(len(df), bool)
    model_correct = probs.argmax(axis=1) == y
    correct = checks.calls == y
    flagged = checks.flagged
    calls = [bundle.labels[k] for k in checks.calls]
    truth = [bundle.labels[k] for k in y]
    rows = lineage_rows(lineages, truth, calls, flagged, held)
    open_rows: list[list[object]] = []
    if detectors:
        constellation = assess_calls(*args, None, bundle.temperature, override=False)
        scores: dict[str, np.ndarray | None] = {"constellation": constellation.support_score}
        flags = {"constellation": constellation.flagged}
        thresholds = {"constellation": 0.0}
        for name, det in detectors.items():
            s = det.scores(out.logits, out.cls, spikes, bundle.temperature)
            scores[name], flags[name] = s, det.flag(s, probs.max(axis=1))
            thresholds[name] = det.threshold
        for name in detectors:  # what predict would flag with each method as the default
            both = f"{name} + constellation" + (" (default)" if name == default else "")
            confirmed = constellation.confirmed
            scores[both], flags[both] = None, (flags[name] & ~confirmed) | constellation.flagged
        open_rows = open_set_rows(scores, flags, thresholds, model_correct, held)
    summary = _summary(correct, flagged, held)
    summary["model"] = _summary(model_correct, flagged, held)
    summary["replaced"] = int(checks.replaced.sum())
    return HeldOut(checks, lineages, held, rows, open_rows, summary)


def _summary(correct: np.ndarray, flagged: np.ndarray, held: np.ndarray) -> dict[str, Any]:
    """Counts of right, right and flagged, wrong and flagged, wrong without a flag, for the
    in-distribution and the held-out genomes."""
    out = {}
    for name, part in (("in_distribution", ~held), ("held_out", held)):
        c, f = correct[part], flagged[part]
        out[name] = {
            "n": int(part.sum()),
            "right": int(c.sum()),
            "right_flagged": int((c & f).sum()),
            "wrong_flagged": int((~c & f).sum()),
            "wrong_unflagged": int((~c & ~f).sum()),
        }
    return out
