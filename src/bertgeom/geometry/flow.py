"""Effect of concatenation, output projection, residual + LayerNorm and the MLP (science.md §6).

Along the stream points of a layer, X -> C -> O -> U -> F -> Y (input, concatenated heads,
output projection, first LayerNorm, MLP output, layer output; ``science.md`` §2), the change of
any per-layer summary (cone index, effective rank, class separability, ...) between consecutive
points tells which step concentrates, spreads or separates the representations ("recall").
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

#: Stream points of a layer in order (the per-head Z_h are summarised by C).
STREAM_POINTS: tuple[str, ...] = ("X", "C", "O", "U", "F", "Y")


@dataclass(frozen=True)
class StreamDeltas:
    """Changes of per-layer summaries between consecutive stream points.

    Attributes
    ----------
    metrics : the ``metric`` dimension
    transitions : the ``transition`` dimension, (source, target) pairs
    before, after : (metric, layer, transition) values at the source and target point
    delta : (metric, layer, transition) after - before
    relative : (metric, layer, transition) delta / |before| (NaN where before is 0)
    """

    metrics: tuple[str, ...]
    transitions: tuple[tuple[str, str], ...]
    before: np.ndarray
    after: np.ndarray
    delta: np.ndarray
    relative: np.ndarray

    def records(self) -> list[dict[str, object]]:
        """Tidy rows: metric, layer, source, target, before, after, delta, relative."""
        rows: list[dict[str, object]] = []
        for m, metric in enumerate(self.metrics):
            for layer in range(self.before.shape[1]):
                for t, (source, target) in enumerate(self.transitions):
                    rows.append({
                        "metric": metric, "layer": layer, "source": source, "target": target,
                        "before": float(self.before[m, layer, t]),
                        "after": float(self.after[m, layer, t]),
                        "delta": float(self.delta[m, layer, t]),
                        "relative": float(self.relative[m, layer, t]),
                    })  # fmt: skip
        return rows


def stream_deltas(
    summaries: Mapping[str, Mapping[str, Sequence[float] | np.ndarray]],
    points: Sequence[str] = STREAM_POINTS,
) -> StreamDeltas:
    """Differences of summaries between consecutive stream points, per metric and layer.

    ``delta[metric, layer, (p -> q)] = s[metric][q][layer] - s[metric][p][layer]`` for the
    consecutive pairs (p, q) of ``points``.

    Parameters
    ----------
    summaries : metric name -> stream point -> (layer,) values, e.g.
        ``{"cone": {"X": [...], "C": [...], ...}, "effective_rank": {...}}``
    points : the stream points to chain, in order (default X, C, O, U, F, Y)

    Returns
    -------
    StreamDeltas

    Raises
    ------
    ValueError
        If a metric lacks one of ``points`` or the layer counts differ.
    """
    if len(points) < 2:
        raise ValueError("need at least two stream points")
    metrics = tuple(summaries)
    stacked = []
    for metric in metrics:
        missing = [p for p in points if p not in summaries[metric]]
        if missing:
            raise ValueError(f"metric {metric!r} lacks stream points {missing}")
        stacked.append([np.asarray(summaries[metric][p], dtype=np.float64) for p in points])
    shapes = {v.shape for row in stacked for v in row}
    if len(shapes) > 1 or any(len(shape) != 1 for shape in shapes):
        raise ValueError(f"every summary must be a (layer,) sequence of one length, got {shapes}")
    values = np.array(stacked, dtype=np.float64) if metrics else np.zeros((0, len(points), 0))
    values = values.transpose(0, 2, 1)  # (metric, layer, point)
    before, after = values[..., :-1], values[..., 1:]
    delta = after - before
    with np.errstate(divide="ignore", invalid="ignore"):
        relative = np.where(before != 0, delta / np.abs(before), np.nan)
    return StreamDeltas(
        metrics=metrics,
        transitions=tuple(itertools.pairwise(points)),
        before=before,
        after=after,
        delta=delta,
        relative=relative,
    )
