"""Deltas of per-layer summaries along the stream points (science.md §6)."""

from __future__ import annotations

import numpy as np
import pytest

from bertgeom.geometry.flow import STREAM_POINTS, stream_deltas


def test_deltas_between_consecutive_points():
    cone = {p: [i, 2 * i] for i, p in enumerate(STREAM_POINTS)}  # 2 layers
    rank = {p: [10.0, 10.0] for p in STREAM_POINTS}
    d = stream_deltas({"cone": cone, "rank": rank})
    assert d.transitions[0] == ("X", "C") and d.transitions[-1] == ("F", "Y")
    assert d.delta.shape == (2, 2, 5)
    assert (d.delta[0, 0] == 1).all() and (d.delta[0, 1] == 2).all() and (d.delta[1] == 0).all()
    assert np.isnan(d.relative[0, 0, 0]) and d.relative[0, 0, 1] == 1.0  # 0 -> 1, then 1 -> 2
    rows = d.records()
    assert len(rows) == 2 * 2 * 5
    assert rows[1] == {
        "metric": "cone", "layer": 0, "source": "C", "target": "O",
        "before": 1.0, "after": 2.0, "delta": 1.0, "relative": 1.0,
    }  # fmt: skip


def test_custom_points_and_errors():
    d = stream_deltas({"sep": {"X": [0.2], "Y": [0.9]}}, points=("X", "Y"))
    assert d.delta[0, 0, 0] == pytest.approx(0.7)
    with pytest.raises(ValueError, match="lacks stream points"):
        stream_deltas({"sep": {"X": [0.2]}}, points=("X", "Y"))
    with pytest.raises(ValueError, match="one length"):
        stream_deltas({"sep": {"X": [0.2], "Y": [0.9, 1.0]}}, points=("X", "Y"))
