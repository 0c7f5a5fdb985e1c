"""Column names of the tables bertgeom writes: one vocabulary, defined here once.

The same thing has the same name in every table (``predict``'s predictions, ``evaluate``'s
``predictions.tsv`` and ``per_class.tsv``, ``prepare``'s ``counts.tsv``): the first word of a
FASTA header is ``seq_id``, the true class ``class``, the model's class ``predicted_class``,
spike amino-acid mutations ``mutations``, QC reasons ``qc_reasons``, and yes/no cells are
``true``/``false``. Columns shared with Nextclade's TSV (``index``, ``seqName``,
``aaSubstitutions``, ``aaDeletions``, ``aaInsertions``, ``insertions``) keep Nextclade's names
and notation, so the two tables join on ``seqName`` or ``index``. ``docs/formats.md`` lists
them; a test checks that it lists every column defined here.

``spikes.parquet`` (``prepare``'s per-genome table, read by every later stage) still names the
FASTA id ``id`` and the class ``label``: see docs/formats.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["str", "int", "float", "bool"]


@dataclass(frozen=True)
class Column:
    """One column: its name, the type of its values, the decimals it is written with (floats)
    and what it means."""

    name: str
    kind: Kind
    meaning: str
    digits: int = 4


_ALL = (
    Column(
        "index",
        "int",
        "0-based number of the record over all inputs, in input order (Nextclade's `index`)",
    ),
    Column("seqName", "str", "the whole FASTA header line after `>` (Nextclade's `seqName`)"),
    Column("seq_id", "str", "the first word of the FASTA header (the record id)"),
    Column("class", "str", "true class (`alpha` ... `other`)"),
    Column("lineage", "str", "Pango lineage from the labels (`pango_nearest`; empty if none)"),
    Column(
        "held_out",
        "bool",
        "the genome's lineage was held out of training (`prepare --split-by lineage`)",
    ),
    Column(
        "predicted_class",
        "str",
        "the model's class; `Unassigned` when QC is bad (no classification, as pangolin writes it)",
    ),
    Column("probability", "float", "calibrated probability of `predicted_class`"),
    Column("runner_up", "str", "second most probable class"),
    Column("runner_up_probability", "float", "its calibrated probability"),
    Column("margin", "float", "`probability` minus `runner_up_probability`"),
    Column("correct", "bool", "`predicted_class` equals `class`"),
    Column(
        "ood",
        "bool",
        "out of distribution: Mahalanobis distance of the [CLS] embedding to "
        "the nearest class centroid above the training threshold, or calibrated confidence "
        "below the minimum (empty without an OOD detector)",
    ),
    Column(
        "ood_distance",
        "float",
        "the open-set score of the model's default detector (per-class Mahalanobis distance by "
        "default; higher = farther from the training data)",
        digits=2,
    ),
    Column(
        "support",
        "int",
        "defining spike mutations of `predicted_class` the genome carries, among the sites it "
        "covers (empty for `other` and unassigned rows)",
    ),
    Column(
        "conflict",
        "int",
        "defining sites of `predicted_class` where the genome has the reference or another allele",
    ),
    Column(
        "model_class",
        "str",
        "the model's own call; differs from `predicted_class` when the constellation check "
        "replaced an unsupported call (see `note`)",
    ),
    Column(
        "note",
        "str",
        "constellation check: low support, a replaced call, or the named class an `other` "
        "genome resembles (empty when the call is supported)",
    ),
    Column("qc_status", "str", "`good`, `mediocre` or `bad`"),
    Column("qc_reasons", "str", "QC reasons, `; `-separated (empty when good)"),
    Column(
        "mutations",
        "str",
        "spike amino-acid mutations, comma-separated, sorted by "
        "residue: `S:N501Y`, `S:H69-`, `S:214:EPE`",
    ),
    Column(
        "aaSubstitutions",
        "str",
        "the substitutions of `mutations` (Nextclade's `aaSubstitutions`: `S:N501Y`)",
    ),
    Column(
        "aaDeletions",
        "str",
        "the deletions of `mutations`, one residue each (Nextclade's `aaDeletions`: `S:H69-`)",
    ),
    Column(
        "aaInsertions",
        "str",
        "the insertions of `mutations` (Nextclade's `aaInsertions`: "
        "`S:214:EPE`, the residue the inserted amino acids follow)",
    ),
    Column(
        "insertions",
        "str",
        "inserted spike nucleotides (Nextclade's `insertions`: "
        "`22204:GAGCCAGAA`, the 1-based reference position they follow)",
    ),
    Column("n_mutations", "int", "number of `mutations`"),
    Column("n_fraction", "float", "fraction of the 3,822 spike columns that are `N`"),
    Column("align_method", "str", "`window`, `genome` or `none` (see `prepare`)"),
    Column(
        "model_name",
        "str",
        "the model's name (`sc2-spike-small`; a model directory without one: the directory's name)",
    ),
    Column(
        "model_version",
        "str",
        "the model's version (`2026-12`; `unversioned` for a model directory without one)",
    ),
    Column("model_id", "str", "first 12 hex digits of the sha256 of the model's weights"),
    Column("bertgeom_version", "str", "version of the bertgeom package that wrote the row"),
)

#: Every column by name.
COLUMNS: dict[str, Column] = {c.name: c for c in _ALL}

#: ``predict``'s columns, in order.
PREDICT = (
    "index", "seqName", "seq_id", "predicted_class", "probability", "runner_up",
    "runner_up_probability", "margin", "ood", "ood_distance", "support", "conflict",
    "model_class", "note", "qc_status", "qc_reasons",
    "mutations", "aaSubstitutions", "aaDeletions", "aaInsertions", "insertions", "n_mutations",
    "n_fraction", "align_method", "model_name", "model_version", "model_id", "bertgeom_version",
)  # fmt: skip

#: ``evaluate``'s ``predictions.tsv``.
EVALUATE_PREDICTIONS = (
    "seq_id", "class", "lineage", "held_out", "predicted_class", "model_class", "probability",
    "correct", "support", "conflict", "note", "mutations",
)  # fmt: skip

#: What ``predict`` writes for a genome it does not classify (QC bad), as pangolin does.
UNASSIGNED = "Unassigned"


def cell(name: str, value: Any) -> str:
    """``value`` as written in a TSV/CSV cell of column ``name``: empty for None, ``true`` /
    ``false``, floats with the column's decimals."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.{COLUMNS[name].digits}f}"
    return str(value)


def json_value(name: str, value: Any) -> Any:
    """``value`` as written in JSON: floats rounded to the column's decimals (so the JSON and
    the TSV cell hold the same number), a missing text ``""`` (as in the TSV), a missing number
    or boolean ``null``, the rest as it is."""
    if value is None and COLUMNS[name].kind == "str":
        return ""
    if isinstance(value, float):
        return round(value, COLUMNS[name].digits)
    return value


def parse_cell(name: str, text: str) -> Any:
    """A TSV/CSV cell of column ``name`` back as a typed value (the inverse of :func:`cell`)."""
    kind = COLUMNS[name].kind
    if text == "" and kind != "str":
        return None
    if kind == "int":
        return int(text)
    if kind == "float":
        return float(text)
    if kind == "bool":
        return text == "true"
    return text


def select(names: str | None, available: tuple[str, ...] = PREDICT) -> tuple[str, ...]:
    """The columns named in a comma-separated list (all of ``available`` for None or ``""``).

    Raises
    ------
    ConfigError
        For a name not in ``available`` (the message lists them) or a list with repeats.
    """
    from bertgeom.errors import ConfigError

    if not names:
        return available
    chosen = tuple(n.strip() for n in names.split(",") if n.strip())
    unknown = [n for n in chosen if n not in available]
    if unknown:
        raise ConfigError(
            f"--output-columns: unknown column(s) {', '.join(unknown)} "
            f"(valid: {', '.join(available)})"
        )
    if len(set(chosen)) != len(chosen):
        raise ConfigError(f"--output-columns: a column is named twice in {names!r}")
    return chosen
