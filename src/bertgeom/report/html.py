"""HTML building blocks of the report and the page template (inline CSS, no script).

Every string that comes from data goes through :func:`esc`; figures are embedded as base64
``data:`` URIs, so the page is one self-contained file that opens from disk with no network
access. A Content-Security-Policy ``<meta>`` forbids scripts and any non-``data:`` resource, so
even a mistake in escaping could not make the page run code or fetch anything.
"""

from __future__ import annotations

import base64
import html
import math
import re
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pandas as pd

#: The first eight bytes of every PNG file.
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: Rows shown in an HTML table before it is cut (the full table is in the tables folder).
MAX_ROWS = 60


@dataclass(frozen=True)
class TableFile:
    """A machine-readable table written beside the report.

    Attributes
    ----------
    name : file name inside the tables folder (``analyze_gates.tsv``)
    description : what one row is
    frame : the table to write as TSV, or None when ``source`` is copied as it is
    source : a file of the run directory to copy, or None
    """

    name: str
    description: str
    frame: pd.DataFrame | None = None
    source: Path | None = None


@dataclass(frozen=True)
class Section:
    """One section of the report: a title, its HTML body and the tables it refers to."""

    title: str
    html: str
    tables: tuple[TableFile, ...] = field(default_factory=tuple)

    @property
    def anchor(self) -> str:
        """The id of the section's heading (lower-case words joined by ``-``)."""
        return re.sub(r"[^a-z0-9]+", "-", self.title.lower()).strip("-") or "section"


def esc(value: Any) -> str:
    """HTML-escape any value's text (quotes included)."""
    return html.escape(str(value), quote=True)


def fmt(value: Any, digits: int = 4) -> str:
    """A number or text for a table cell: floats to ``digits`` significant digits, NaN "–"."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        if value == int(value) and abs(value) < 1e15:
            return f"{int(value):,}"
        return f"{value:.{digits}g}"
    if hasattr(value, "item"):  # numpy scalars
        return fmt(value.item(), digits)
    return str(value)


def column_format(values: pd.Series) -> Callable[[Any], str]:
    """One format for a numeric column, so that its decimals line up.

    Integers (and integral floats above 1, e.g. counts with gaps) get thousands separators;
    p-values and columns of tiny values scientific notation; shares and scores in [-1, 1] four
    decimals; other floats the decimals that give the largest value four significant digits.
    """
    if pd.api.types.is_bool_dtype(values) or pd.api.types.is_integer_dtype(values):
        return fmt
    finite = pd.to_numeric(values, errors="coerce").astype("float64")
    finite = finite[np.isfinite(finite)]
    if finite.empty:
        return fmt
    biggest = float(finite.abs().max())
    if biggest > 1 and (finite == finite.round()).all():
        return fmt
    name = str(values.name or "")
    if name.startswith("p_value") or 0 < biggest < 1e-3:
        return lambda v: _number(v, ".2e")
    decimals = 4 if biggest <= 1 else int(min(6, max(0, 3 - math.floor(math.log10(biggest)))))
    return lambda v: _number(v, f",.{decimals}f")


def _number(value: Any, spec: str) -> str:
    if value is None or isinstance(value, str):
        return fmt(value)
    value = float(value)
    return "–" if math.isnan(value) else format(value, spec)


def pct(value: float, digits: int = 1) -> str:
    """A share as a percentage (``0.9712`` -> ``97.1 %``)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{100 * value:.{digits}f}\u00a0%"


def para(*sentences: str) -> str:
    """A paragraph of already-escaped sentences."""
    return f"<p>{' '.join(s for s in sentences if s)}</p>\n"


def bullets(items: Iterable[str]) -> str:
    """A bulleted list of already-escaped items."""
    body = "".join(f"<li>{item}</li>" for item in items)
    return f"<ul>{body}</ul>\n" if body else ""


def note(text: str) -> str:
    """A highlighted note (already-escaped text), e.g. a stage that has not been run."""
    return f'<p class="note">{text}</p>\n'


def png_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of PNG bytes, or None when they are not a PNG."""
    if len(data) < 24 or not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


def figure(data: bytes | None, caption: str, alt: str, source: str = "") -> str:
    """An embedded PNG figure with its caption; a note when the bytes are missing or no PNG.

    Parameters
    ----------
    data : PNG bytes (None = figure missing)
    caption : already-escaped caption HTML
    alt : plain alternative text (escaped here)
    source : plain name of the file the figure came from, for the notes (escaped here)
    """
    if data is None:
        return note(f"Figure {esc(source or alt)} was not found in the run directory.")
    size = png_size(data)
    if size is None:
        return note(f"Figure {esc(source or alt)} is not a PNG file and was left out.")
    uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    return (
        f'<figure><img src="{uri}" alt="{esc(alt)}" width="{size[0]}" height="{size[1]}">'
        f"<figcaption>{caption}</figcaption></figure>\n"
    )


def details(summary: str, content: str, opened: bool = False) -> str:
    """A block the reader opens with a click (no script): ``summary`` and ``content`` are HTML."""
    return f"<details{' open' if opened else ''}><summary>{summary}</summary>{content}</details>\n"


def gallery(figures: Sequence[str]) -> str:
    """Figures side by side on wide screens, stacked on narrow ones."""
    return f'<div class="gallery">{"".join(figures)}</div>\n' if figures else ""


def table(
    frame: pd.DataFrame,
    caption: str = "",
    formats: Mapping[str, Callable[[Any], str]] | None = None,
    max_rows: int = MAX_ROWS,
    index: bool = False,
) -> str:
    """An HTML table of ``frame`` (every cell escaped), cut after ``max_rows`` rows.

    Parameters
    ----------
    frame : the table
    caption : already-escaped caption
    formats : column -> function from a cell value to plain text (default :func:`fmt`)
    max_rows : rows shown; a last line says how many were left out
    index : show the index as the first column
    """
    shown = frame.reset_index() if index else frame
    numeric = [
        pd.api.types.is_numeric_dtype(shown[c]) and not pd.api.types.is_bool_dtype(shown[c])
        for c in shown.columns
    ]
    num_class = ' class="num"'
    head = "".join(
        f"<th{num_class if num else ''}>{esc(c)}</th>"
        for c, num in zip(shown.columns, numeric, strict=True)
    )
    formats = {
        c: column_format(shown[c]) for c, num in zip(shown.columns, numeric, strict=True) if num
    } | dict(formats or {})
    rows = []
    for values in shown.head(max_rows).itertuples(index=False, name=None):
        cells = []
        for col, value, num in zip(shown.columns, values, numeric, strict=True):
            text = formats.get(col, fmt)(value)
            cells.append(f"<td{num_class if num else ''}>{esc(text)}</td>")
        rows.append(f"<tr>{''.join(cells)}</tr>")
    more = ""
    if len(shown) > max_rows:
        more = (
            f'<p class="more">Showing {max_rows:,} of {len(shown):,} rows; the full table is '
            "in the tables folder.</p>"
        )
    cap = f"<caption>{caption}</caption>" if caption else ""
    return (
        f'<div class="table-wrap"><table>{cap}<thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>{more}\n"
    )


def json_block(text: str) -> str:
    """Pretty-printed JSON (or any preformatted text), escaped."""
    return f'<pre class="json">{esc(text)}</pre>\n'


def _table_links(tables: Sequence[TableFile], tables_href: str) -> str:
    if not tables:
        return ""
    items = "".join(
        f'<li><a href="{esc(tables_href)}/{esc(quote(t.name))}">{esc(t.name)}</a>: '
        f"{esc(t.description)}</li>"
        for t in tables
    )
    return f'<div class="tables"><h3>Tables</h3><ul>{items}</ul></div>\n'


def page(title: str, subtitle: str, sections: Sequence[Section], tables_dir: str) -> str:
    """The complete HTML document: header, table of contents, the sections.

    Parameters
    ----------
    title, subtitle : plain text (escaped here)
    sections : in order
    tables_dir : name of the tables folder beside the HTML file (links are relative to it)
    """
    href = quote(tables_dir)
    toc = "".join(f'<li><a href="#{s.anchor}">{esc(s.title)}</a></li>' for s in sections)
    body = "".join(
        f'<section id="{s.anchor}"><h2>{esc(s.title)}</h2>\n{s.html}'
        f"{_table_links(s.tables, href)}</section>\n"
        for s in sections
    )
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<title>{esc(title)}</title>
<style>{CSS}</style>
</head>
<body>
<header><h1>{esc(title)}</h1><p class="subtitle">{esc(subtitle)}</p></header>
<nav class="toc" aria-label="Contents"><h2>Contents</h2><ol>{toc}</ol></nav>
<main>
{body}</main>
</body>
</html>
"""


#: No scripts, no fetches: images only from data: URIs, styles only inline.
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

CSS = """
:root { --ink: #1d2327; --muted: #5b6770; --line: #d8dee3; --zebra: #f3f6f8;
  --accent: #1f5f8b; --note: #fff6df; --note-line: #e0b44c; }
* { box-sizing: border-box; }
html { font-size: 16px; }
body { margin: 0; color: var(--ink); background: #fff; line-height: 1.55;
  font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", sans-serif; }
header, main, nav.toc { max-width: 70rem; margin: 0 auto; padding: 0 1.5rem; }
header { padding-top: 2rem; }
h1 { font-size: 1.9rem; margin: 0 0 .25rem; }
.subtitle { color: var(--muted); margin: 0 0 1rem; }
h2 { font-size: 1.45rem; margin: 2.5rem 0 .75rem; padding-bottom: .3rem;
  border-bottom: 2px solid var(--line); }
h3 { font-size: 1.1rem; margin: 1.6rem 0 .5rem; }
h4 { font-size: 1rem; margin: 1.2rem 0 .4rem; }
p, li { max-width: 52rem; }
a { color: var(--accent); }
code, pre, .formula { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, monospace;
  font-size: .9rem; }
.formula { display: block; background: var(--zebra); border-left: 3px solid var(--accent);
  padding: .4rem .8rem; margin: .4rem 0 .8rem; overflow-x: auto; white-space: pre-wrap; }
nav.toc { background: var(--zebra); border: 1px solid var(--line); border-radius: 6px;
  padding: .6rem 1.5rem .8rem; }
nav.toc h2 { font-size: 1.1rem; margin: .3rem 0; border: 0; }
nav.toc ol { columns: 2 18rem; margin: 0; padding-left: 1.4rem; }
nav.toc li { margin: .1rem 0; }
section { scroll-margin-top: 1rem; }
figure { margin: 1rem 0 1.5rem; }
figure img { display: block; max-width: 100%; height: auto; border: 1px solid var(--line); }
figcaption { color: var(--muted); font-size: .92rem; margin-top: .35rem; max-width: 52rem; }
.gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(26rem, 1fr));
  gap: 0 1.5rem; }
.gallery figure { margin: .75rem 0; }
.table-wrap { overflow-x: auto; margin: .6rem 0 1.2rem; }
table { border-collapse: collapse; font-size: .9rem; }
caption { caption-side: top; text-align: left; color: var(--muted); padding-bottom: .3rem; }
th, td { padding: .3rem .65rem; border-bottom: 1px solid var(--line); text-align: left;
  vertical-align: top; }
th { background: #e6ecf0; font-weight: 600; }
tbody tr:nth-child(even) { background: var(--zebra); }
th.num { text-align: right; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td { overflow-wrap: break-word; }
.more { color: var(--muted); font-size: .88rem; margin-top: -.8rem; }
.note { background: var(--note); border-left: 4px solid var(--note-line); padding: .6rem .9rem;
  border-radius: 3px; }
.findings li { margin: .25rem 0; }
.keynums { display: grid; grid-template-columns: repeat(auto-fill, minmax(11rem, 1fr));
  gap: .75rem; margin: 1rem 0; padding: 0; list-style: none; }
.keynums li { border: 1px solid var(--line); border-radius: 6px; padding: .6rem .8rem; }
.keynums .value { display: block; font-size: 1.35rem; font-weight: 600; }
.keynums .label { display: block; color: var(--muted); font-size: .85rem; }
pre.json { background: var(--zebra); border: 1px solid var(--line); padding: .8rem;
  overflow-x: auto; max-height: 30rem; font-size: .82rem; }
details { margin: .4rem 0; border: 1px solid var(--line); border-radius: 6px;
  padding: .3rem .8rem; }
details > summary { cursor: pointer; font-weight: 600; padding: .2rem 0; }
details[open] > summary { margin-bottom: .3rem; }
.tables { margin-top: 1rem; font-size: .92rem; }
.tables h3 { font-size: 1rem; }
dl.defs dt { font-weight: 600; margin-top: .8rem; }
dl.defs dd { margin: .2rem 0 .4rem 1.2rem; max-width: 52rem; }
@media print { nav.toc { display: none; } figure, table { break-inside: avoid; } }
"""


def key_numbers(items: Sequence[tuple[str, str]]) -> str:
    """A grid of (value, label) boxes; both plain text (escaped here)."""
    body = "".join(
        f'<li><span class="value">{esc(v)}</span><span class="label">{esc(k)}</span></li>'
        for v, k in items
    )
    return f'<ul class="keynums">{body}</ul>\n' if body else ""
