"""Genome labels for ``prepare``: from a TSV file or from one FASTA file per class."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from bertgeom.errors import InputError
from bertgeom.io.files import read_tsv
from bertgeom.resources import CLASSES
from bertgeom.resources.variants import lineage_to_class

_ID_COLUMNS = ("seq_id", "id", "strain", "name", "taxon")
_CLASS_COLUMNS = ("class", "label", "variant", "lineage", "pango_lineage", "clade")
#: Columns holding a genome's lineage (for ``prepare --split-by lineage``), first found wins.
LINEAGE_COLUMNS = ("pango_nearest", "pango_lineage", "lineage")
_FASTA_SUFFIXES = (".fasta", ".fa", ".fna", ".fas", ".ffn", ".seq")


@dataclass(frozen=True)
class Labels:
    """id -> (class, the label as written); ``source`` says where they came from;
    ``lineage_by_id``: id -> lineage (Pango lineage or clade), from the lineage column."""

    by_id: dict[str, tuple[str, str]]
    source: str
    lineage_by_id: dict[str, str] = field(default_factory=dict)
    lineage_column: str | None = None


def read_labels(path: str | os.PathLike, lineage_column: str = "") -> Labels:
    """Read labels from a TSV file.

    The file may be gzip-compressed and must be UTF-8 text. Accepted layouts: a header with an
    id column (``seq_id``, ``id``, ``strain``, ``name``) and a class column (``class``,
    ``label``, ``variant``, ``lineage``, ...), as in ``shared/data/labels.tsv``; or two columns
    ``id<TAB>class`` without a header. A class may be written as a class name, a Pango
    lineage, a Nextstrain clade or a WHO name.

    The lineage of each genome (used by ``prepare --split-by lineage``) comes from
    ``lineage_column`` when given (an :class:`InputError` when the header lacks it), else from the
    first of :data:`LINEAGE_COLUMNS` in the header; empty cells give no lineage.
    """
    header, rows = read_tsv(path, "labels TSV")
    lower = [h.strip().lower() for h in header]
    id_col = next((lower.index(c) for c in _ID_COLUMNS if c in lower), None)
    cls_col = next((lower.index(c) for c in _CLASS_COLUMNS if c in lower), None)
    first_line = 2
    if id_col is None or cls_col is None:
        if len(header) == 2 and lineage_to_class(header[1]) is not None:
            rows, id_col, cls_col, first_line = [header, *rows], 0, 1, 1
        else:
            raise InputError(
                f"{path}: no id and class columns in the header {header!r}; expected "
                f"'seq_id' (or id) and 'class' (or label, lineage), or two columns "
                f"id<TAB>class without a header"
            )
    lin_col = None
    if lineage_column:
        if lineage_column.lower() not in lower:
            raise InputError(
                f"{path}: no lineage column '{lineage_column}' in the header {header!r}"
            )
        lin_col = lower.index(lineage_column.lower())
    elif first_line == 2:
        lin_col = next((lower.index(c) for c in LINEAGE_COLUMNS if c in lower), None)
    by_id: dict[str, tuple[str, str]] = {}
    lineage_by_id: dict[str, str] = {}
    for lineno, row in enumerate(rows, start=first_line):
        if len(row) <= max(id_col, cls_col):
            raise InputError(f"{path}: line {lineno} has {len(row)} columns, expected more")
        gid, raw = row[id_col].strip(), row[cls_col].strip()
        cls = lineage_to_class(raw)
        if cls is None:
            raise InputError(
                f"{path}: line {lineno}: unknown class '{raw}' for '{gid}' (expected one of "
                f"{', '.join(CLASSES)}, a Pango lineage, a Nextstrain clade or a WHO name)"
            )
        if gid in by_id and by_id[gid][0] != cls:
            raise InputError(
                f"{path}: line {lineno}: '{gid}' is labelled both {by_id[gid][0]} and {cls}"
            )
        by_id[gid] = (cls, raw)
        if lin_col is not None and len(row) > lin_col and row[lin_col].strip():
            lineage_by_id[gid] = row[lin_col].strip()
    return Labels(
        by_id=by_id,
        source=str(path),
        lineage_by_id=lineage_by_id,
        lineage_column=header[lin_col] if lin_col is not None else None,
    )


def class_from_filename(path: str | os.PathLike) -> str | None:
    """The class named by a FASTA file's stem (``alpha.fasta.gz`` -> alpha), if any."""
    name = Path(path).name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    for suffix in _FASTA_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return name if name in CLASSES else None


def classes_from_filenames(paths: list[str]) -> dict[str, str | None] | None:
    """path -> class named by each FASTA file's stem (None for a file whose stem names no
    class); None when no file's stem names a class.

    Labelling is per file: ``prepare gamma.fasta misc.fasta`` labels the genomes of
    ``gamma.fasta`` gamma and leaves those of ``misc.fasta`` unlabelled (counted in the
    summary's ``unlabelled``).
    """
    classes = {p: class_from_filename(p) for p in paths}
    if all(c is None for c in classes.values()):
        return None
    return classes
