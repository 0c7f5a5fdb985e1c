"""Attention maps on the spike and attention share of protein domains.

Each function takes computed results and returns a matplotlib Figure; it never computes a
measure and never saves (the pipeline decides file names).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from bertgeom.errors import ConfigError
from bertgeom.plots.geometry_common import (
    DIVERGING,
    SEQUENTIAL,
    colour_map,
    masked,
    pyplot,
    require,
    select_class,
    symmetric_limit,
    text_colour,
)
from bertgeom.resources import protein_domains

#: Band colours of the spike domains (Paul Tol's "light"/"vibrant" schemes; S1/S2 in greys).
DOMAIN_COLOURS: dict[str, str] = {
    "SP": "#EE8866",
    "NTD": "#77AADD",
    "RBD": "#EE3377",
    "FP": "#44BB99",
    "HR1": "#BBCC33",
    "HR2": "#99DDFF",
    "TM": "#AAAA00",
    "CT": "#FFAABB",
    "S1": "#BBBBBB",
    "S2": "#777777",
}
_NORMS = ("log", "power", "linear")
#: The colour scale of domain enrichment saturates at 16-fold (log2 ratio ±4).
_MAX_LOG2 = 4.0


def _domain_tuples(domains: Sequence[Any] | None) -> list[tuple[str, int, int]]:
    """(name, start, end) from ``Domain`` records or plain tuples (default: the spike's)."""
    items = protein_domains() if domains is None else domains
    out = []
    for d in items:
        if isinstance(d, tuple | list):
            name, start, end = d
        else:
            name, start, end = d.name, d.start, d.end
        out.append((str(name), int(start), int(end)))
    return out


def _split_levels(
    domains: list[tuple[str, int, int]],
) -> tuple[list[tuple[str, int, int]], list[tuple[str, int, int]]]:
    """(subunits, leaves): a subunit (S1, S2) strictly contains another domain."""

    def contains(d: tuple[str, int, int], e: tuple[str, int, int]) -> bool:
        return d[1] <= e[1] and e[2] <= d[2] and (d[1], d[2]) != (e[1], e[2])

    subunits = [d for d in domains if any(contains(d, e) for e in domains)]
    return subunits, [d for d in domains if d not in subunits]


def _positions(token_residues: np.ndarray, n: int) -> tuple[int, np.ndarray]:
    """(offset, residues): the position of the first content token and its (token, 2) table."""
    res = np.asarray(token_residues, dtype=np.int64)
    if res.ndim != 2 or res.shape[1] != 2:
        raise ConfigError(f"token_residues must be (token, 2), got shape {res.shape}")
    if len(res) == n - 2:
        return 1, res  # [CLS] + content + [SEP]
    if len(res) == n:
        return 0, res  # content tokens only
    raise ConfigError(
        f"token_residues has {len(res)} rows; a ({n}, {n}) map needs {n - 2} ([CLS] and [SEP] "
        f"at both ends) or {n}"
    )


def _span(res: np.ndarray, offset: int, start: int, end: int) -> tuple[float, float] | None:
    """First and last position (edges, ±0.5) of the tokens overlapping residues start..end."""
    hit = np.flatnonzero((res[:, 1] >= start) & (res[:, 0] <= end))
    if hit.size == 0:
        return None
    return hit[0] + offset - 0.5, hit[-1] + offset + 0.5


def _draw_band(
    ax: Any, domains: list[tuple[str, int, int]], res: np.ndarray, offset: int, vertical: bool
) -> None:
    n_pos = len(res) + 2 * offset
    for name, start, end in domains:
        span = _span(res, offset, start, end)
        if span is None:
            continue
        colour = DOMAIN_COLOURS.get(name, "#CCCCCC")
        (ax.axhspan if vertical else ax.axvspan)(*span, color=colour, lw=0)
        if span[1] - span[0] >= 0.06 * n_pos:  # wide enough for its name
            mid = (span[0] + span[1]) / 2
            xy = (0.5, mid) if vertical else (mid, 0.5)
            ax.text(
                *xy,
                name,
                ha="center",
                va="center",
                fontsize=7,
                rotation=90 if vertical else 0,
                color=text_colour(_rgba(colour)),
                transform=ax.get_yaxis_transform() if vertical else ax.get_xaxis_transform(),
            )
    ax.tick_params(left=False, bottom=False, labelleft=False, labelbottom=False)
    for spine in ax.spines.values():
        spine.set_visible(False)


def _rgba(colour: str) -> tuple[float, ...]:
    from matplotlib.colors import to_rgba

    return to_rgba(colour)


def _norm(values: np.ndarray, norm: str, gamma: float) -> Any:
    from matplotlib.colors import LogNorm, Normalize, PowerNorm

    finite = values[np.isfinite(values)]
    vmax = float(finite.max()) if finite.size else 1.0
    vmax = vmax if vmax > 0 else 1.0
    if norm == "log":
        positive = finite[finite > 0]
        vmin = max(float(positive.min()), vmax * 1e-4) if positive.size else vmax * 1e-4
        return LogNorm(vmin=min(vmin, vmax / 10), vmax=vmax, clip=True)
    if norm == "power":
        return PowerNorm(gamma=gamma, vmin=0.0, vmax=vmax)
    return Normalize(vmin=0.0, vmax=vmax)


def _residue_ticks(res: np.ndarray, offset: int, every: int) -> tuple[list[float], list[str]]:
    """Ticks at residues every, 2*every, ...: the last token starting at or before each."""
    ticks, labels = [], []
    for r in range(every, int(res[:, 1].max()) + 1, every):
        t = int(np.searchsorted(res[:, 0], r, side="right")) - 1
        if t >= 0 and res[t, 1] >= r:
            ticks.append(float(t + offset))
            labels.append(str(r))
    return ticks, labels


def attention_heatmap(
    matrix: np.ndarray,
    token_residues: np.ndarray,
    domains: Sequence[Any] | None = None,
    title: str = "",
    *,
    norm: str = "log",
    gamma: float = 0.5,
    tick_every: int = 100,
) -> Any:
    """Heat map of one attention map with residue ticks and spike-domain bands.

    Parameters
    ----------
    matrix : (q_pos, k_pos) attention weights, e.g. [CLS], 425 k-mer tokens, [SEP]
    token_residues : (token, 2) first and last residue (1-based) of each content token; its
        length is q_pos - 2 ([CLS]/[SEP] at both ends of the map) or q_pos (content only)
    domains : (name, start, end) residue ranges or ``Domain`` records (default: the spike's);
        domains that contain others (S1, S2) go on a thin separate band
    title : figure title (default "attention")
    norm : "log" (default; weights below 1e-4 of the maximum share the lowest colour), "power"
        (``x**gamma``) or "linear", so that sparse attention stays visible
    gamma : exponent of the "power" norm
    tick_every : residue spacing of the ticks on both axes

    Returns
    -------
    matplotlib Figure
    """
    if norm not in _NORMS:
        raise ConfigError(f"norm must be one of {_NORMS}, got {norm!r}")
    values = np.asarray(matrix, dtype=np.float64)
    if values.ndim != 2 or values.shape[0] != values.shape[1]:
        raise ConfigError(f"matrix must be square (q_pos, k_pos), got shape {values.shape}")
    n = values.shape[0]
    offset, res = _positions(token_residues, n)
    subunits, leaves = _split_levels(_domain_tuples(domains))

    plt = pyplot()
    fig = plt.figure(figsize=(7.6, 7.4), layout="constrained")
    gs = fig.add_gridspec(
        3, 4, width_ratios=(0.12, 0.22, 6.0, 0.18), height_ratios=(0.12, 0.22, 6.0)
    )
    ax = fig.add_subplot(gs[2, 2])
    image = ax.imshow(
        masked(values),
        cmap=colour_map(SEQUENTIAL),
        norm=_norm(values, norm, gamma),
        aspect="auto",
        interpolation="nearest",
    )
    ticks, labels = _residue_ticks(res, offset, tick_every)
    if offset:  # [CLS] and [SEP] are the first and last row and column
        ticks, labels = [0.0, *ticks, n - 1.0], ["CLS", *labels, "SEP"]
    ax.set_xticks(ticks, labels, fontsize=8)
    ax.set_yticks(ticks, labels, fontsize=8)
    for spine in ax.spines.values():  # a spine would hide the [CLS]/[SEP] columns
        spine.set_visible(False)
    ax.set_xlabel("key (residue)")
    ax.set_ylabel("query (residue)")
    bands = [
        (fig.add_subplot(gs[0, 2], sharex=ax), subunits, False),
        (fig.add_subplot(gs[1, 2], sharex=ax), leaves, False),
        (fig.add_subplot(gs[2, 0], sharey=ax), subunits, True),
        (fig.add_subplot(gs[2, 1], sharey=ax), leaves, True),
    ]
    for band, items, vertical in bands:
        _draw_band(band, items, res, offset, vertical)
    cbar = fig.colorbar(image, cax=fig.add_subplot(gs[2, 3]))
    cbar.set_label(
        {"log": "attention (log scale)", "power": f"attention (power {gamma:g})"}.get(
            norm, "attention"
        )
    )
    _domain_legend(fig, subunits + leaves, res, offset)
    fig.suptitle(title or "attention")
    return fig


def _domain_legend(fig: Any, domains: list[tuple[str, int, int]], res: Any, offset: int) -> None:
    from matplotlib.patches import Patch

    shown = [d for d in domains if _span(res, offset, d[1], d[2]) is not None]
    handles = [
        Patch(color=DOMAIN_COLOURS.get(name, "#CCCCCC"), label=f"{name} {start}-{end}")
        for name, start, end in shown
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=5, fontsize=7, frameon=False)


def domain_share_heatmap(domains: pd.DataFrame, class_name: str, layer: int | None = None) -> Any:
    """Enrichment of attention in each spike domain: log2(attention share / token share).

    Rows are heads ("L{layer}H{head}"), columns domains; blue = less attention than the
    domain's share of tokens, red = more. A dot marks cells significant after Bonferroni.

    Parameters
    ----------
    domains : tidy table with columns layer, head, class, domain, attention_share,
        token_share, significant
    class_name : the class to draw ("all" for all genomes, when the table has it)
    layer : draw only this layer (default: every layer)

    Returns
    -------
    matplotlib Figure
    """
    cols = ("layer", "head", "class", "domain", "attention_share", "token_share", "significant")
    table = select_class(require(domains, cols, "domains"), class_name, "domains")
    if layer is not None:
        table = table[table["layer"] == layer]
        if table.empty:
            have = sorted(select_class(domains, class_name, "domains")["layer"].unique())
            raise ConfigError(f"no rows for layer {layer} in the domains table; layers: {have}")
    order = [d.name for d in protein_domains()]
    names = list(table["domain"].unique())
    names = [d for d in order if d in names] + [d for d in names if d not in order]
    table = table.assign(
        ratio=np.log2(
            table["attention_share"].astype(float).where(table["attention_share"] > 0)
            / table["token_share"].astype(float).where(table["token_share"] > 0)
        ),
        row=list(zip(table["layer"], table["head"], strict=True)),
    )
    heads = sorted(table["row"].unique())
    ratio = table.pivot_table(index="row", columns="domain", values="ratio", aggfunc="mean")
    ratio = ratio.reindex(index=heads, columns=names).to_numpy(dtype=np.float64)
    sig = table.pivot_table(index="row", columns="domain", values="significant", aggfunc="max")
    sig = sig.reindex(index=heads, columns=names).fillna(False).to_numpy(dtype=bool)

    plt = pyplot()
    height = 1.6 + 0.16 * len(heads)
    fig, ax = plt.subplots(figsize=(2.2 + 0.55 * len(names), height), layout="constrained")
    limit = min(symmetric_limit(ratio, floor=0.5), _MAX_LOG2)
    image = ax.imshow(
        masked(ratio),
        cmap=colour_map(DIVERGING),
        vmin=-limit,
        vmax=limit,
        aspect="auto",
        interpolation="nearest",
    )
    rows, cols_ = np.nonzero(sig)
    ax.scatter(
        cols_,
        rows,
        s=18,
        marker="o",
        facecolor="black",
        edgecolor="white",
        lw=0.5,
        label="significant (Bonferroni)",
    )
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(heads)), [f"L{la}H{h}" for la, h in heads], fontsize=7)
    for k in range(1, len(heads)):
        if heads[k][0] != heads[k - 1][0]:
            ax.axhline(k - 0.5, color="white", lw=1.2)
    ax.set_xlabel("domain")
    ax.set_ylabel("head")
    beyond = np.abs(ratio[np.isfinite(ratio)]) > limit
    extend = "both" if beyond.any() else "neither"
    cbar = fig.colorbar(image, ax=ax, shrink=min(1.0, 6.0 / height), aspect=30, extend=extend)
    cbar.set_label("log2(attention share / token share)")
    if rows.size:
        fig.legend(loc="outside lower center", fontsize=8, frameon=False)
    where = "all genomes" if class_name == "all" else class_name
    ax.set_title(
        f"attention to spike domains, {where}" + ("" if layer is None else f", layer {layer}")
    )
    return fig
