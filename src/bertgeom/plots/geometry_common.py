"""Helpers shared by the geometry figures (``plots/geometry*.py``): colours, table checks, grids.

Colours are colour-blind safe: classes use Paul Tol's "muted" qualitative scheme, gate labels
the Okabe-Ito palette, continuous values viridis (sequential) or RdBu_r (diverging, centred at
0). Each class and each gate label keeps one colour in every figure, whichever subset is drawn.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from bertgeom.errors import ArtifactError, ConfigError
from bertgeom.resources import CLASSES

#: The pooled pseudo-class of the tables ("all" genomes).
ALL = "all"
#: Sequential and diverging colour maps (both colour-blind safe).
SEQUENTIAL = "viridis"
DIVERGING = "RdBu_r"
#: Colour of cells without a value (NaN) in heat maps.
MISSING = "#d9d9d9"

_TOL_MUTED = (
    "#332288", "#88CCEE", "#44AA99", "#117733", "#CC6677", "#DDCC77", "#AA4499", "#999933",
    "#882255",
)  # fmt: skip
_CLASS_COLOURS = dict(zip(CLASSES, _TOL_MUTED, strict=False))

#: Gate labels in display order, each with a fixed colour (Okabe-Ito; greys for no gate).
GATE_NAMES: tuple[str, ...] = (
    "closed", "open", "backward", "forward", "directional", "instance", "cluster",
)  # fmt: skip
LABEL_COLOURS: dict[str, str] = {
    "closed": "#444444",
    "open": "#F0E442",
    "backward": "#0072B2",
    "forward": "#56B4E9",
    "directional": "#D55E00",
    "instance": "#CC79A7",
    "cluster": "#009E73",
    "mixed": "#DDDDDD",
    "empty": "#FFFFFF",
}


def pyplot() -> Any:
    """matplotlib.pyplot on the non-interactive Agg backend (imported lazily)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def require(table: pd.DataFrame, columns: Iterable[str], name: str) -> pd.DataFrame:
    """Return ``table`` if it has rows and every column, else raise ``ArtifactError``."""
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ArtifactError(
            f"the {name} table lacks columns {missing}; it has {list(table.columns)}"
        )
    if table.empty:
        raise ArtifactError(f"the {name} table has no rows")
    return table


def select_class(table: pd.DataFrame, class_name: str, name: str) -> pd.DataFrame:
    """Rows of one class, or ``ConfigError`` naming the classes the table holds."""
    rows = table[table["class"] == class_name]
    if rows.empty:
        have = order_classes(table["class"].unique())
        raise ConfigError(f"no rows for class {class_name!r} in the {name} table; classes: {have}")
    return rows


def order_classes(classes: Iterable[Any]) -> list[str]:
    """Known classes in ``CLASSES`` order, then unknown ones sorted, then "all"."""
    names = {str(c) for c in classes}
    known = [c for c in CLASSES if c in names]
    extra = sorted(names - set(CLASSES) - {ALL})
    return known + extra + ([ALL] if ALL in names else [])


def class_colour(name: str) -> str:
    """Fixed colour of a class ("all" is black, unknown classes cycle through tab10)."""
    if name == ALL:
        return "#000000"
    if name in _CLASS_COLOURS:
        return _CLASS_COLOURS[name]
    return f"C{sum(map(ord, name)) % 10}"


def class_style(name: str) -> dict[str, Any]:
    """Line keyword arguments of a class: its colour; "all" dashed and thicker."""
    if name == ALL:
        return {"color": "#000000", "ls": "--", "lw": 2.0}
    return {"color": class_colour(name), "lw": 1.6}


def grid(
    table: pd.DataFrame, value: str, rows: str = "layer", cols: str = "head"
) -> tuple[np.ndarray, list[Any], list[Any]]:
    """(row, col) array of ``value`` (mean of duplicates, NaN where absent), with the labels.

    Integer dimensions (layer, head) are filled to a full ``min..max`` range so that a missing
    head shows as an empty cell rather than shifting the others.
    """
    means = table.groupby([rows, cols])[value].mean().unstack(cols)
    row_labels = _full_range(means.index)
    col_labels = _full_range(means.columns)
    means = means.reindex(index=row_labels, columns=col_labels)
    return means.to_numpy(dtype=np.float64), row_labels, col_labels


def _full_range(labels: pd.Index) -> list[Any]:
    values = list(labels)
    if values and all(isinstance(v, int | np.integer) for v in values):
        return list(range(int(min(values)), int(max(values)) + 1))
    return values


def cell_ticks(ax: Any, row_labels: Sequence[Any], col_labels: Sequence[Any]) -> None:
    """Tick every row/column of an ``imshow`` grid (at most ~24 labels per axis)."""
    for setter, labels in ((ax.set_yticks, row_labels), (ax.set_xticks, col_labels)):
        step = max(1, int(np.ceil(len(labels) / 24)))
        idx = range(0, len(labels), step)
        setter(list(idx), [str(labels[i]) for i in idx])


def text_colour(rgba: Sequence[float]) -> str:
    """Black or white, whichever reads better on a cell of colour ``rgba``."""
    r, g, b = rgba[:3]
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"


def masked(values: np.ndarray) -> np.ma.MaskedArray:
    """``values`` with NaN/inf masked, for ``imshow`` with a ``set_bad`` colour."""
    return np.ma.masked_invalid(np.asarray(values, dtype=np.float64))


def colour_map(name: str) -> Any:
    """A copy of a named colour map whose missing (masked) cells are light grey."""
    import matplotlib as mpl

    return mpl.colormaps[name].with_extremes(bad=MISSING)


def symmetric_limit(values: np.ndarray, floor: float = 1e-12) -> float:
    """max |finite value| (at least ``floor``), for diverging colour scales centred at 0."""
    finite = np.abs(values[np.isfinite(values)])
    return max(float(finite.max()), floor) if finite.size else 1.0


def integer_layers(ax: Any) -> None:
    """Integer ticks on the x axis (layers)."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def layer_heads(table: pd.DataFrame) -> pd.DataFrame:
    """Rows of individual heads (``head >= 0``) when the table has a head column."""
    return table[table["head"] >= 0] if "head" in table.columns else table
