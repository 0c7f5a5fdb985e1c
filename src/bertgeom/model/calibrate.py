"""Temperature scaling (Guo et al. 2017): one scalar T > 0 minimising the validation negative
log-likelihood of ``softmax(logits / T)``; it changes confidence, never the predicted class.

The out-of-distribution detectors are in :mod:`bertgeom.model.openset`.
"""

from __future__ import annotations

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
