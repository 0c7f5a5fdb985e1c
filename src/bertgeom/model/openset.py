"""Open-set detectors: which calls come from genomes unlike any the model was trained on.

Each detector gives every genome a score (higher = further from the training data) and flags
it above a threshold fitted on the validation split: the ``quantile`` (0.995) of the scores of
correctly classified validation genomes, so about 0.5 % of correct in-distribution calls are
flagged. A genome is also flagged when its calibrated top probability is below
``min_confidence``. The methods (:data:`METHODS`):

- ``mahalanobis``: distance of the final-layer [CLS] embedding to the nearest class centroid,
  one covariance shared by all classes (Lee et al. 2018), training split, ridge ``1e-3`` times
  the mean variance;
- ``mahalanobis_class``: distance to the centroid of the predicted class, under that class's
  own covariance shrunk towards the shared one (weight ``n_c / (n_c + d_model)`` on its own);
- ``energy``: ``-logsumexp(logits)`` (Liu et al. 2020);
- ``msp``: one minus the calibrated top probability (Hendrycks & Gimpel 2017);
- ``nearest_spike``: the number of nucleotide differences to the nearest distinct training
  spike (aligned columns; columns missing (N) in the genome are not compared).

The constellation check (:mod:`bertgeom.genome.constellation`) is scored beside them by
:func:`support_scores`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from bertgeom.model.metrics import softmax

METHODS = ("mahalanobis", "mahalanobis_class", "energy", "msp", "nearest_spike")
#: What each method's score is, in a sentence's words (model cards, reports).
METHOD_TEXT = {
    "mahalanobis": "the Mahalanobis distance of the final [CLS] embedding to the nearest class "
    "centroid (one shared covariance)",
    "mahalanobis_class": "the Mahalanobis distance of the final [CLS] embedding to the centroid "
    "of the predicted class, under that class's covariance shrunk towards the shared one",
    "energy": "the energy score -logsumexp(logits)",
    "msp": "one minus the calibrated top probability",
    "nearest_spike": "the number of nucleotide differences to the nearest training spike",
}
#: The method ``predict`` uses unless told otherwise. Measured on the lineage-disjoint split of
#: ../shared/data (README): it flags the most wrong calls (AUROC 0.998 of wrong against right
#: calls, with ``mahalanobis``) while flagging the fewest correct in-distribution calls (0.75 %;
#: ``nearest_spike`` tells held-out lineages from known ones best, AUROC 0.72, but flags 1.6 %
#: of correct calls and misses wrong ones, AUROC 0.79).
DEFAULT_METHOD = "mahalanobis_class"
_SYMBOLS = "ACGT-"
_RIDGE = 1e-3


@dataclass(frozen=True)
class Detector:
    """A fitted open-set detector: its method, threshold and the arrays it needs."""

    method: str
    threshold: float
    min_confidence: float
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    def scores(
        self,
        logits: np.ndarray,
        cls: np.ndarray,
        spikes: Sequence[str],
        temperature: float = 1.0,
    ) -> np.ndarray:
        """(n,) scores of genomes from their logits (n, class), [CLS] embeddings (n, d) and
        aligned spikes."""
        return method_scores(self.method, self.arrays, logits, cls, spikes, temperature)

    def flag(self, scores: np.ndarray, confidence: np.ndarray) -> np.ndarray:
        """True where a genome is out of distribution (score above the threshold) or its
        calibrated confidence is below the minimum."""
        return (scores > self.threshold) | (confidence < self.min_confidence)


def method_scores(
    method: str,
    arrays: dict[str, np.ndarray],
    logits: np.ndarray,
    cls: np.ndarray,
    spikes: Sequence[str],
    temperature: float = 1.0,
) -> np.ndarray:
    """(n,) scores of ``method`` with fitted ``arrays`` (see :func:`fit_arrays`)."""
    if method == "mahalanobis":
        diff = cls[:, None, :] - arrays["centroids"][None]  # (n, class, d)
        d2 = np.einsum("ncd,de,nce->nc", diff, arrays["precision"], diff)
        return np.sqrt(np.maximum(d2.min(axis=1), 0.0))
    if method == "mahalanobis_class":
        pred = logits.argmax(axis=1)
        diff = cls - arrays["class_centroids"][pred]  # (n, d)
        d2 = np.einsum("nd,nde,ne->n", diff, arrays["class_precisions"][pred], diff)
        return np.sqrt(np.maximum(d2, 0.0))
    if method == "energy":
        z = logits.astype(np.float64)
        top = z.max(axis=1)
        return -(top + np.log(np.exp(z - top[:, None]).sum(axis=1)))
    if method == "msp":
        return 1.0 - softmax(logits.astype(np.float64), temperature).max(axis=1)
    if method == "nearest_spike":
        return nearest_spike_distances(spikes, arrays)
    raise ValueError(f"unknown open-set method {method!r} (valid: {', '.join(METHODS)})")


def fit_arrays(
    method: str,
    cls: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    spikes: Sequence[str],
    reference: str,
) -> dict[str, np.ndarray]:
    """The arrays ``method`` needs, from the training split: [CLS] embeddings (n, d), class
    ids (n,) and aligned spikes."""
    if method in ("energy", "msp"):
        return {}
    if method == "nearest_spike":
        return spike_index(spikes, reference)
    d = cls.shape[1]
    centroids = np.zeros((n_classes, d))
    present = np.array([bool(np.any(y == c)) for c in range(n_classes)])
    for c in np.flatnonzero(present):
        centroids[c] = cls[y == c].mean(axis=0)
    resid = cls - centroids[y]
    shared = _ridged(resid.T @ resid / max(len(resid) - 1, 1))
    if method == "mahalanobis":
        return {"centroids": centroids[present], "precision": np.linalg.inv(shared)}
    if method != "mahalanobis_class":
        raise ValueError(f"unknown open-set method {method!r} (valid: {', '.join(METHODS)})")
    precisions = np.zeros((n_classes, d, d))
    for c in range(n_classes):
        members = resid[y == c]
        n_c = len(members)
        own = members.T @ members / max(n_c - 1, 1) if n_c > 1 else shared
        w = n_c / (n_c + d)
        precisions[c] = np.linalg.inv(_ridged(w * own + (1 - w) * shared))
    return {"class_centroids": centroids, "class_precisions": precisions}


def _ridged(cov: np.ndarray) -> np.ndarray:
    d = cov.shape[0]
    return cov + _RIDGE * max(float(np.trace(cov)) / d, 1e-12) * np.eye(d)


# --------------------------------------------------------------------------- nearest spike


def _features(spike: str, reference: str) -> tuple[np.ndarray, np.ndarray]:
    """Feature ids ``column * 5 + symbol`` where ``spike`` differs from ``reference`` (A, C, G,
    T or a deletion), and the columns it does not read (N or an ambiguity code)."""
    s = np.frombuffer(spike.encode("ascii"), dtype=np.uint8)
    r = np.frombuffer(reference.encode("ascii"), dtype=np.uint8)
    code = np.full(256, -1, dtype=np.int64)
    for i, ch in enumerate(_SYMBOLS):
        code[ord(ch)] = i
    sym = code[s]
    known = sym >= 0
    cols = np.flatnonzero(known & (s != r))
    return cols * len(_SYMBOLS) + sym[cols], np.flatnonzero(~known)


def _csr(rows: Sequence[np.ndarray], n_features: int) -> object:
    from scipy.sparse import csr_matrix

    indptr = np.cumsum([0, *(len(r) for r in rows)])
    indices = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
    data = np.ones(len(indices), dtype=np.float32)
    return csr_matrix((data, indices, indptr), shape=(len(rows), n_features))


def spike_index(spikes: Sequence[str], reference: str) -> dict[str, np.ndarray]:
    """The distinct training spikes as sparse difference sets (CSR ``indptr``, ``indices``)."""
    distinct = sorted(set(spikes))
    rows = [_features(s, reference)[0] for s in distinct]
    indptr = np.cumsum([0, *(len(r) for r in rows)]).astype(np.int64)
    indices = np.concatenate(rows).astype(np.int64) if rows else np.zeros(0, np.int64)
    return {
        "spike_indptr": indptr,
        "spike_indices": indices,
        "reference": np.frombuffer(reference.encode("ascii"), dtype=np.uint8).copy(),
    }


def nearest_spike_distances(
    spikes: Sequence[str], arrays: dict[str, np.ndarray], chunk: int = 256
) -> np.ndarray:
    """(n,) nucleotide differences of each spike to its nearest indexed spike, over the
    columns the spike reads: ``|q| + |t| - |t at q's N columns| - 2 |q & t|``."""
    from scipy.sparse import csr_matrix

    reference = arrays["reference"].tobytes().decode("ascii")
    n_features = len(reference) * len(_SYMBOLS)
    indptr, indices = arrays["spike_indptr"], arrays["spike_indices"]
    train = csr_matrix(
        (np.ones(len(indices), np.float32), indices, indptr),
        shape=(len(indptr) - 1, n_features),
    )
    sizes = np.diff(indptr).astype(np.float64)  # (train,)
    out = np.zeros(len(spikes))
    for a in range(0, len(spikes), chunk):
        feats = [_features(s, reference) for s in spikes[a : a + chunk]]
        q = _csr([f[0] for f in feats], n_features)
        masked = _csr(
            [(f[1][:, None] * len(_SYMBOLS) + np.arange(len(_SYMBOLS))).ravel() for f in feats],
            n_features,
        )
        shared = np.asarray((q @ train.T).todense(), dtype=np.float64)  # (chunk, train)
        hidden = np.asarray((masked @ train.T).todense(), dtype=np.float64)
        own = np.array([len(f[0]) for f in feats], dtype=np.float64)
        dist = own[:, None] + sizes[None, :] - hidden - 2 * shared
        out[a : a + len(feats)] = dist.min(axis=1) if dist.shape[1] else np.inf
    return out


# --------------------------------------------------------------------------- thresholds


def fit_threshold(scores: np.ndarray, correct: np.ndarray, quantile: float = 0.995) -> float:
    """The ``quantile`` of the scores of correct calls (inf when there are none)."""
    s = np.asarray(scores, dtype=np.float64)[np.asarray(correct, dtype=bool)]
    return float(np.quantile(s, quantile)) if len(s) else float("inf")


def auroc(scores_out: np.ndarray, scores_in: np.ndarray) -> float:
    """Probability that a random ``out`` genome scores above a random ``in`` one (ties half):
    the area under the ROC curve of telling them apart by score."""
    a = np.asarray(scores_out, dtype=np.float64)
    b = np.asarray(scores_in, dtype=np.float64)
    if not len(a) or not len(b):
        return float("nan")
    allv = np.concatenate([a, b])
    order = np.argsort(allv, kind="mergesort")
    ranks = np.empty(len(allv))
    sorted_v = allv[order]
    # average ranks of ties
    _, first, counts = np.unique(sorted_v, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(avg, counts)
    r_out = ranks[: len(a)].sum()
    return float((r_out - len(a) * (len(a) + 1) / 2) / (len(a) * len(b)))


# --------------------------------------------------------------------------- storage


def save_detectors(detectors: dict[str, Detector], default: str, path: str) -> None:
    """Write fitted detectors to one ``.npz`` file (atomically): ``method`` (the default one),
    ``methods``, ``min_confidence``, and per method ``METHOD.threshold`` and its arrays as
    ``METHOD.NAME``."""
    from bertgeom.io.files import atomic_path

    if default not in detectors:
        raise ValueError(f"default method {default!r} is not among {sorted(detectors)}")
    fields: dict[str, np.ndarray] = {
        "method": np.array(default),
        "methods": np.array(sorted(detectors)),
        "min_confidence": np.array(detectors[default].min_confidence),
    }
    for name, det in detectors.items():
        fields[f"{name}.threshold"] = np.array(det.threshold)
        fields.update({f"{name}.{k}": v for k, v in det.arrays.items()})
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **fields)


def load_detectors(path: str) -> tuple[dict[str, Detector], str]:
    """Read detectors written by :func:`save_detectors` and the default method's name; an older
    ``ood.npz`` (``centroids``, ``precision``, ``threshold``) reads as ``mahalanobis``. Checked
    against the model's manifest; a damaged file, or one whose arrays are not finite, is an
    :class:`~bertgeom.errors.ArtifactError` naming it."""
    from bertgeom.errors import ArtifactError
    from bertgeom.io.files import reading
    from bertgeom.io.manifest import verify_artifact

    what = "bertgeom open-set detector file (.npz)"
    fix = "`bertgeom evaluate --refit` fits it again"
    with reading(verify_artifact(path), what, fix), np.load(path, allow_pickle=False) as z:
        names = set(z.files)
        floor = float(z["min_confidence"])
        if "method" not in names:
            arrays = {"centroids": z["centroids"], "precision": z["precision"]}
            out = {"mahalanobis": Detector("mahalanobis", float(z["threshold"]), floor, arrays)}
            default = "mahalanobis"
        else:
            out = {}
            for method in (str(m) for m in z["methods"]):
                prefix = f"{method}."
                arrays = {
                    k[len(prefix) :]: z[k]
                    for k in names
                    if k.startswith(prefix) and k != f"{method}.threshold"
                }
                out[method] = Detector(method, float(z[f"{method}.threshold"]), floor, arrays)
            default = str(z["method"])
    finite = all(
        np.isfinite(a).all() for d in out.values() for a in d.arrays.values() if a.dtype.kind == "f"
    )
    if default not in out or not finite or np.isnan(floor):
        raise ArtifactError(f"{path}: damaged or not a {what} ({fix})")
    return out, default
