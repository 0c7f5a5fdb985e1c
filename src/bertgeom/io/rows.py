"""Streaming row tables in TSV, CSV, NDJSON or JSON, to a file (atomically, gzip for ``.gz``)
or to standard output.

Cells are formatted by :mod:`bertgeom.columns`: TSV and CSV write empty cells for missing
values, ``true``/``false`` and floats with the column's decimals; NDJSON and JSON write typed
values (booleans, numbers rounded to the same decimals, ``null`` for a missing number or
boolean, ``""`` for missing text), so every format holds the same rows. TSV is written without
quoting (an id stays exactly as in the FASTA header; tabs and line breaks inside a cell become
spaces); CSV is comma-separated with standard quoting.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from bertgeom.columns import cell, json_value
from bertgeom.errors import ConfigError
from bertgeom.io.files import atomic_path

#: Output formats, each with the file suffix that selects it.
FORMATS = ("tsv", "csv", "ndjson", "json")
_CLEAN = re.compile(r"[\t\r\n]")


def format_for(path: str | os.PathLike, fmt: str | None = None) -> str:
    """The output format: ``fmt`` when given, else by the suffix of ``path`` (``.gz`` aside),
    else ``tsv`` (standard output, or a file with another suffix)."""
    if fmt is not None:
        if fmt not in FORMATS:
            raise ConfigError(f"output format {fmt!r} is not one of: {', '.join(FORMATS)}")
        return fmt
    name = str(path).removesuffix(".gz")
    suffix = Path(name).suffix.lstrip(".").lower()
    return suffix if suffix in FORMATS else "tsv"


class RowWriter:
    """Writes rows (mappings of column name to value) of the given columns in one format."""

    def __init__(self, fh: TextIO, columns: Sequence[str], fmt: str) -> None:
        self.fh, self.columns, self.fmt = fh, tuple(columns), format_for("", fmt)
        self.n = 0
        self._csv = csv.writer(fh, lineterminator="\n") if fmt == "csv" else None
        if fmt == "tsv":
            fh.write("\t".join(self.columns) + "\n")
        elif self._csv is not None:
            self._csv.writerow(self.columns)
        elif fmt == "json":
            fh.write("[")

    def write(self, row: Mapping[str, Any]) -> None:
        """Write one row (columns missing from ``row`` are empty)."""
        if self.fmt == "tsv":
            cells = (_CLEAN.sub(" ", cell(c, row.get(c))) for c in self.columns)
            self.fh.write("\t".join(cells) + "\n")
        elif self._csv is not None:
            self._csv.writerow([cell(c, row.get(c)) for c in self.columns])
        else:
            obj = {c: json_value(c, row.get(c)) for c in self.columns}
            text = json.dumps(obj, ensure_ascii=False, allow_nan=False)
            if self.fmt == "ndjson":
                self.fh.write(text + "\n")
            else:
                self.fh.write(("\n" if self.n == 0 else ",\n") + text)
        self.n += 1

    def close(self) -> None:
        """Finish the table (the closing bracket of JSON)."""
        if self.fmt == "json":
            self.fh.write("\n]\n" if self.n else "]\n")


@contextmanager
def open_rows(
    path: str | os.PathLike, columns: Sequence[str], fmt: str | None = None
) -> Iterator[RowWriter]:
    """A :class:`RowWriter` on ``path`` (``-``: standard output), written atomically, gzip-
    compressed when ``path`` ends in ``.gz``; the format as :func:`format_for` chooses."""
    kind = format_for(path, fmt)
    with _open_text(path) as fh:
        writer = RowWriter(fh, columns, kind)
        yield writer
        writer.close()


@contextmanager
def _open_text(out_path: str | os.PathLike) -> Iterator[TextIO]:
    """Standard output for ``-``; else an atomically written file, gzip for ``.gz``."""
    if str(out_path) == "-":
        yield sys.stdout
        sys.stdout.flush()
        return
    with atomic_path(out_path) as tmp:
        if str(out_path).endswith(".gz"):
            # no file name or time in the header: equal rows give equal bytes
            with (
                open(tmp, "wb") as raw,
                gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as packed,
                io.TextIOWrapper(packed, encoding="utf-8", newline="") as fh,
            ):
                yield fh
        else:
            with open(tmp, "w", encoding="utf-8", newline="") as fh:
                yield fh
