"""Temperature scaling and the out-of-distribution detector of the [CLS] embedding space.

Temperature scaling (Guo et al. 2017): one scalar T > 0 minimising the validation negative
log-likelihood of ``softmax(logits / T)``; it changes confidence, never the predicted class.

Out-of-distribution score: the Mahalanobis distance of a genome's final-layer [CLS] embedding
to the nearest class centroid, with one covariance shared by all classes (Lee et al. 2018),
estimated on the training split with a ridge of ``1e-3`` times the mean variance. The threshold
is the ``quantile`` (default 0.999) of the training genomes' own distances; a genome beyond it,
or whose calibrated top probability is below ``min_confidence``, is flagged OOD.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bertgeom.model.metrics import softmax


def fit_temperature(logits: np.ndarray, y: np.ndarray, max_iter: int = 200) -> float:
    """The temperature minimising the NLL of ``softmax(logits / T)`` on (logits, y).

    When every genome is classified correctly the NLL keeps falling as T -> 0 (sharper and
    sharper probabilities) and has no minimum: there is no evidence of miscalibration, so T = 1.
    """
    if len(y) == 0 or bool((logits.argmax(axis=1) == y).all()):
        return 1.0
    grid = np.exp(np.linspace(np.log(0.05), np.log(20.0), 241))
    nll = [_nll(logits, y, t) for t in grid]
    best = float(grid[int(np.argmin(nll))])
    lo, hi = best / 1.03, best * 1.03  # refine by golden-section search around the grid best
    ratio = (np.sqrt(5) - 1) / 2
    for _ in range(max_iter):
        if hi - lo < 1e-6:
            break
        a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
        if _nll(logits, y, a) < _nll(logits, y, b):
            hi = b
        else:
            lo = a
    return float((lo + hi) / 2)


def _nll(logits: np.ndarray, y: np.ndarray, t: float) -> float:
    p = softmax(logits.astype(np.float64), t)[np.arange(len(y)), y]
    return float(-np.log(np.clip(p, 1e-300, 1.0)).mean())


@dataclass(frozen=True)
class OodModel:
    """Class centroids and shared precision matrix of [CLS] embeddings, and the threshold."""

    centroids: np.ndarray  # (class, d_model)
    precision: np.ndarray  # (d_model, d_model)
    threshold: float
    min_confidence: float

    def distances(self, emb: np.ndarray) -> np.ndarray:
        """(n,) Mahalanobis distance of each embedding to its nearest centroid."""
        diff = emb[:, None, :] - self.centroids[None, :, :]  # (n, class, d)
        d2 = np.einsum("ncd,de,nce->nc", diff, self.precision, diff)
        return np.sqrt(np.maximum(d2.min(axis=1), 0.0))

    def flag(self, emb: np.ndarray, confidence: np.ndarray) -> np.ndarray:
        """True where a genome is out of distribution (a distance or confidence that is not
        finite counts as out of distribution: NaN compares False with any threshold)."""
        dist = self.distances(emb)
        return (
            ~np.isfinite(dist)
            | ~np.isfinite(confidence)
            | (dist > self.threshold)
            | (confidence < self.min_confidence)
        )


def fit_ood(
    emb: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    quantile: float = 0.999,
    min_confidence: float = 0.5,
    ridge: float = 1e-3,
) -> OodModel:
    """Fit the detector on training embeddings ``emb`` (n, d) with labels ``y``."""
    d = emb.shape[1]
    centroids = np.zeros((n_classes, d))
    resid = []
    for c in range(n_classes):
        members = emb[y == c]
        if len(members):
            centroids[c] = members.mean(axis=0)
            resid.append(members - centroids[c])
    r = np.concatenate(resid) if resid else np.zeros((1, d))
    cov = r.T @ r / max(len(r) - 1, 1)
    cov += ridge * max(float(np.trace(cov)) / d, 1e-12) * np.eye(d)
    present = np.array([np.any(y == c) for c in range(n_classes)])
    model = OodModel(
        centroids[present] if present.any() else centroids,
        np.linalg.inv(cov),
        np.inf,
        min_confidence,
    )
    threshold = float(np.quantile(model.distances(emb), quantile)) if len(emb) else np.inf
    return OodModel(model.centroids, model.precision, threshold, min_confidence)


def save_ood(model: OodModel, path: str) -> None:
    """Write the detector to an ``.npz`` file (atomically)."""
    from bertgeom.io.files import atomic_path

    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(
            fh,
            centroids=model.centroids,
            precision=model.precision,
            threshold=np.array(model.threshold),
            min_confidence=np.array(model.min_confidence),
        )


def load_ood(path: str) -> OodModel:
    """Read a detector written by :func:`save_ood`, checked against the model's manifest and
    for consistent, finite arrays.

    Raises
    ------
    ArtifactError
        The file is damaged, edited or not such a detector.
    """
    from bertgeom.errors import ArtifactError
    from bertgeom.io.files import reading
    from bertgeom.io.manifest import verify_artifact

    what = "bertgeom OOD detector (.npz)"
    fix = "`bertgeom evaluate --refit` fits it again"
    with reading(verify_artifact(path), what, fix), np.load(path, allow_pickle=False) as z:
        model = OodModel(
            np.asarray(z["centroids"], dtype=np.float64),
            np.asarray(z["precision"], dtype=np.float64),
            float(z["threshold"]),
            float(z["min_confidence"]),
        )
    c, p = model.centroids, model.precision
    ok = (
        c.ndim == 2
        and p.shape == (c.shape[1], c.shape[1])
        and np.isfinite(c).all()
        and np.isfinite(p).all()
        and not np.isnan(model.threshold)
        and np.isfinite(model.min_confidence)
    )
    if not ok:
        raise ArtifactError(
            f"{path}: damaged or not a {what} (arrays of the wrong shape or not finite) "
            "(`bertgeom evaluate --refit` fits it again)"
        )
    return model
