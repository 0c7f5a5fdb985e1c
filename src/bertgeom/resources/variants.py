"""Variant classes of SARS-CoV-2: lineage names -> class, and each class's defining spike mutations.

Two package tables back this module, both written from public knowledge:

- ``lineage_classes.tsv``: Pango lineage prefixes, Nextstrain clades and WHO labels -> class;
- ``defining_mutations.tsv``: each class's defining spike amino-acid mutations in Nextclade
  notation, with a ``core`` flag for those carried by essentially every genome of the class.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from typing import Literal

from bertgeom.errors import InputError
from bertgeom.resources import CLASSES, _tsv_rows

_LINEAGE_TABLE = "lineage_classes.tsv"
_MUTATION_TABLE = "defining_mutations.tsv"

#: A Pango lineage: an alias of one or two letters (never I or O; X starts recombinants, which
#: have two or three letters) followed by numeric components: A, B.1.1.7, AY.4.2, XBB.1.5, XEC.
_PANGO = re.compile(r"(?:X[A-HJ-NP-Z]{1,2}|[A-HJ-NP-WYZ]{1,2})(?:\.\d+)*")
#: The leading token of a Nextstrain clade name: "21K" in "21K (Omicron)" or "20A.EU1".
_CLADE = re.compile(r"(\d{2}[A-Z])(?=$|[\s(./])")

_AMINO = "ACDEFGHIKLMNPQRSTVWY"
_MUTATION = re.compile(
    rf"(?P<gene>[A-Za-z][A-Za-z0-9]*):(?:"
    rf"(?P<ref>[{_AMINO}*])(?P<pos>\d+)(?P<alt>[{_AMINO}*-])"
    rf"|(?P<ins_pos>\d+):(?P<ins>[{_AMINO}*]+)"
    rf"|ins(?P<old_pos>\d+)(?P<old_ins>[{_AMINO}*]+))"
)


@dataclass(frozen=True)
class _LineageTable:
    pango: dict[tuple[str, ...], str]  # upper-case prefix components -> class
    clade: dict[str, str]  # upper-case clade name -> class
    who: dict[str, str]  # lower-case WHO label -> class


@cache
def _lineage_table() -> _LineageTable:
    tables: dict[str, dict] = {"pango": {}, "clade": {}, "who": {}}
    for kind, pattern, cls, *_note in _tsv_rows(_LINEAGE_TABLE):
        if kind not in tables or cls not in CLASSES:
            raise ValueError(f"{_LINEAGE_TABLE}: bad row {kind!r} {pattern!r} {cls!r}")
        if kind == "pango":
            tables[kind][tuple(pattern.upper().split("."))] = cls
        elif kind == "clade":
            tables[kind][pattern.upper()] = cls
        else:
            tables[kind][pattern.lower()] = cls
    return _LineageTable(**tables)


def _pango_class(lineage: str, table: dict[tuple[str, ...], str]) -> str:
    """Class of the longest table prefix of ``lineage`` (whole components), else 'other'."""
    parts = tuple(lineage.split("."))
    for n in range(len(parts), 0, -1):
        cls = table.get(parts[:n])
        if cls is not None:
            return cls
    return "other"


def lineage_to_class(name: str) -> str | None:
    """The variant class of a class name, WHO label, Nextstrain clade or Pango lineage.

    Parameters
    ----------
    name
        Case and surrounding white space are ignored. Tried in this order, first match wins:

        1. a class name itself (``'alpha'``, ``'Other'``);
        2. a WHO label (``'Delta'``, ``'Kappa'`` -> ``'other'``);
        3. a Nextstrain clade, the whole name first (legacy names like ``'20I/501Y.V1'``), then
           its leading token (``'21K'``, ``'21K (Omicron)'``, ``'20I (Alpha, V1)'``);
        4. a Pango lineage: the longest prefix in the table, matched on whole dot-separated
           components (``'P.1'`` covers ``'P.1.17'`` but not ``'P.10'``); a well-formed Pango
           name with no matching prefix (``'B.1.177'``, ``'A.2'``) is ``'other'``.

    Returns
    -------
    str or None
        One of :data:`bertgeom.resources.CLASSES`, or None when the text is none of the above,
        including clade codes missing from the table (a new clade's class cannot be guessed).
    """
    text = name.strip()
    if not text:
        return None
    lower = text.lower()
    if lower in CLASSES:
        return lower
    table = _lineage_table()
    if lower in table.who:
        return table.who[lower]
    upper = text.upper()
    if upper in table.clade:
        return table.clade[upper]
    clade = _CLADE.match(upper)
    if clade is not None:
        return table.clade.get(clade.group(1))
    if _PANGO.fullmatch(upper):
        return _pango_class(upper, table.pango)
    return None


@dataclass(frozen=True)
class Mutation:
    """One amino-acid change in Nextclade notation.

    ``kind`` is ``'sub'`` (``S:N501Y``: ref ``'N'``, alt ``'Y'``), ``'del'`` (``S:H69-``: ref
    ``'H'``, alt ``'-'``) or ``'ins'`` (``S:214:EPE``: ref ``''``, alt ``'EPE'``, inserted after
    residue ``position``; Nextclade's ``aaInsertions`` notation). Positions are 1-based residues
    of the reference protein.
    """

    gene: str
    kind: Literal["sub", "del", "ins"]
    position: int
    ref: str
    alt: str

    def __str__(self) -> str:
        if self.kind == "ins":
            return f"{self.gene}:{self.position}:{self.alt}"
        return f"{self.gene}:{self.ref}{self.position}{self.alt}"


def parse_mutation(text: str) -> Mutation:
    """Parse one mutation in Nextclade notation: ``S:N501Y``, ``S:H69-`` or ``S:214:EPE``.

    The older ``S:ins214EPE`` form of an insertion is read too (as ``S:214:EPE``).

    Raises
    ------
    InputError
        When ``text`` is not one such mutation; multi-residue deletions (``S:HV69-``) must be
        written one residue at a time (``S:H69-``, ``S:V70-``).
    """
    hint = "expected GENE:REF POS ALT like 'S:N501Y', 'S:H69-' or 'S:214:EPE'"
    match = _MUTATION.fullmatch(text.strip())
    if match is None:
        if re.fullmatch(rf"[A-Za-z][A-Za-z0-9]*:[{_AMINO}]{{2,}}\d+-", text.strip()):
            hint = "write a multi-residue deletion one residue at a time ('S:H69-', 'S:V70-')"
        raise InputError(f"invalid mutation {text!r}: {hint}")
    gene = match["gene"]
    if match["ins"] is not None or match["old_ins"] is not None:
        pos, aas = (
            (match["ins_pos"], match["ins"])
            if match["ins"]
            else (match["old_pos"], match["old_ins"])
        )
        return Mutation(gene, "ins", _position(pos, text), "", aas)
    ref, alt = match["ref"], match["alt"]
    if ref == alt:
        raise InputError(f"invalid mutation {text!r}: reference and alternative are both {ref!r}")
    kind: Literal["sub", "del"] = "del" if alt == "-" else "sub"
    return Mutation(gene, kind, _position(match["pos"], text), ref, alt)


def _position(digits: str, text: str) -> int:
    position = int(digits)
    if position < 1:
        raise InputError(f"invalid mutation {text!r}: positions start at 1")
    return position


@cache
def _mutation_rows() -> tuple[tuple[str, Mutation, bool], ...]:
    rows = []
    for cls, mutation, core, *_note in _tsv_rows(_MUTATION_TABLE):
        if cls not in CLASSES or core not in ("0", "1"):
            raise ValueError(f"{_MUTATION_TABLE}: bad row {cls!r} {mutation!r} {core!r}")
        rows.append((cls, parse_mutation(mutation), core == "1"))
    return tuple(rows)


def defining_mutations(core_only: bool = False) -> dict[str, tuple[str, ...]]:
    """Each class's defining spike mutations in Nextclade notation, in table order.

    Parameters
    ----------
    core_only
        Keep only the mutations carried by essentially every genome of the class (``core = 1``).

    Returns
    -------
    dict
        Class -> mutations, with a key for every class in :data:`CLASSES` (``'other'`` -> ``()``).
    """
    out: dict[str, list[str]] = {cls: [] for cls in CLASSES}
    for cls, mutation, core in _mutation_rows():
        if core or not core_only:
            out[cls].append(str(mutation))
    return {cls: tuple(mutations) for cls, mutations in out.items()}
