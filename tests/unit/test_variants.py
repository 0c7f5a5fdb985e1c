"""The lineage -> class table and the defining spike mutations, checked against the shared data.

The shared data (labels and cov-lineages constellations, CC BY-NC) is read here only, never
copied into the package. These tests fail, not skip, when it is missing.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest

from bertgeom.errors import InputError
from bertgeom.resources import CLASSES, _tsv_rows, genetic_code, spike_reference
from bertgeom.resources.variants import (
    Mutation,
    defining_mutations,
    lineage_to_class,
    parse_mutation,
)

#: ../shared/data beside the repository (here /work/shared/data).
DATA = Path(__file__).resolve().parents[3] / "shared/data"
LABELS = DATA / "labels.tsv"
CONSTELLATIONS = DATA / "lineage_definitions/constellations"

#: Each class's main constellation.
MAIN_CONSTELLATION = {
    "alpha": "cB.1.1.7",
    "beta": "cB.1.351",
    "gamma": "cP.1",
    "delta": "cB.1.617.2",
    "omicron": "cB.1.1.529",
    "lambda": "cC.37",
    "mu": "cB.1.621",
}

#: Constellation spike sites that are written differently in our (Nextclade) notation, as
#: (class, site) -> reason. Empty today: every spike site of the main constellations is in our
#: table as written (Beta's 242-244 deletion and Delta's 156-158 change are listed there only as
#: nucleotide deletions or not at all, so they need no entry).
ALLOWED_MISSING: dict[tuple[str, str], str] = {}

_SITE = re.compile(r"(?P<ref>[A-Z*]+)(?P<pos>\d+)(?P<alt>[A-Z*]|-)")


def _labels() -> list[dict[str, str]]:
    assert LABELS.is_file(), f"shared labels missing: {LABELS} (expected ../shared/data)"
    with LABELS.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def _protein() -> str:
    code = genetic_code()
    dna = spike_reference()
    return "".join(code[dna[i : i + 3]] for i in range(0, len(dna) - 2, 3))


def _spike_sites(constellation: str) -> list[str]:
    """The constellation's spike sites in our notation, multi-residue deletions expanded."""
    path = CONSTELLATIONS / f"{constellation}.json"
    assert path.is_file(), f"constellation missing: {path}"
    sites = json.loads(path.read_text(encoding="utf-8"))["sites"]
    out = []
    for site in sites:
        gene, _, body = site.partition(":")
        if gene.lower() not in ("s", "spike"):
            continue
        if body.startswith("ins"):
            out.append(f"S:{body}")
            continue
        match = _SITE.fullmatch(body)
        assert match is not None, f"{constellation}: unreadable spike site {site!r}"
        ref, pos, alt = match["ref"], int(match["pos"]), match["alt"]
        if alt == "-":  # HV69- -> H69-, V70-
            out.extend(f"S:{aa}{pos + i}-" for i, aa in enumerate(ref))
        else:
            assert len(ref) == 1, f"{constellation}: multi-residue substitution {site!r}"
            out.append(f"S:{ref}{pos}{alt}")
    return out


# --- labels.tsv ---------------------------------------------------------------------------------


def test_shared_data_location():
    assert DATA.name == "data"
    assert DATA.parent.name == "shared"
    assert LABELS.is_file(), f"{LABELS} is missing: these tests need ../shared/data"


@pytest.mark.parametrize("column", ["pango_nearest", "nextstrain_clade", "who_name"])
def test_every_label_maps_to_its_class(column):
    rows = _labels()
    assert len(rows) > 6000
    checked = 0
    wrong: dict[tuple[str, str], str | None] = {}
    for row in rows:
        name = row[column]
        if not name:
            assert column == "who_name", f"{row['seq_id']}: empty {column}"
            continue
        checked += 1
        got = lineage_to_class(name)
        if got != row["class"]:
            wrong[(name, row["class"])] = got
    assert not wrong, f"{column}: {len(wrong)} names map to the wrong class: {wrong}"
    expected = sum(1 for row in rows if row[column])
    assert checked == expected > 0
    if column != "who_name":
        assert checked == len(rows)


# --- constellations -----------------------------------------------------------------------------


@pytest.mark.parametrize(("cls", "constellation"), sorted(MAIN_CONSTELLATION.items()))
def test_constellation_spike_sites_are_in_table(cls, constellation):
    ours = set(defining_mutations()[cls])
    sites = _spike_sites(constellation)
    assert sites, f"{constellation}: no spike sites"
    missing = [s for s in sites if s not in ours and (cls, s) not in ALLOWED_MISSING]
    assert not missing, f"{cls}: constellation {constellation} spike sites not in table: {missing}"


def test_allow_list_entries_are_still_needed():
    for (cls, site), reason in ALLOWED_MISSING.items():
        assert reason
        assert site in _spike_sites(MAIN_CONSTELLATION[cls])
        assert site not in defining_mutations()[cls]


def test_reference_amino_acids_match_reference_spike():
    protein = _protein()
    assert len(protein) == 1274 and protein.endswith("*")
    wrong = []
    for cls, mutations in defining_mutations().items():
        for text in mutations:
            mutation = parse_mutation(text)
            assert mutation.gene == "S"
            assert 1 <= mutation.position <= 1273
            if mutation.kind != "ins" and protein[mutation.position - 1] != mutation.ref:
                wrong.append((cls, text, protein[mutation.position - 1]))
    assert not wrong, f"reference amino acid differs: {wrong}"


# --- defining_mutations -------------------------------------------------------------------------


def test_defining_mutations_shape():
    everything = defining_mutations()
    core = defining_mutations(core_only=True)
    assert tuple(everything) == CLASSES == tuple(core)
    assert everything["other"] == () == core["other"]
    for cls in CLASSES[:-1]:
        assert len(set(everything[cls])) == len(everything[cls]), cls
        assert set(core[cls]) <= set(everything[cls])
        assert len(core[cls]) >= 5, cls
        assert "S:N501Y" in everything[cls] or cls in ("delta", "lambda")


def test_core_mutations_examples():
    core = defining_mutations(core_only=True)
    assert "S:H69-" in core["alpha"]
    assert "S:L241-" not in core["beta"]  # aligner-dependent placement
    assert "S:E484A" not in core["omicron"]  # E484K in BA.2.86/JN.1
    assert "S:Q954H" in core["omicron"]


# --- lineage_to_class ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("B.1.1.7", "alpha"),
        ("Q.3", "alpha"),
        ("AY.4.2", "delta"),
        ("B.1.617.1", "other"),
        ("P.1.17", "gamma"),
        ("P.10", "other"),
        ("P.2", "other"),
        ("BA.5.2.1", "omicron"),
        ("B.1.1.529.2.86.1", "omicron"),
        ("XBB.1.5", "omicron"),
        ("XEC", "omicron"),
        ("XD", "other"),
        ("XDV.1.11", "omicron"),
        ("HW.1", "other"),
        ("JN.1", "omicron"),
        ("BB.2", "mu"),
        ("C.37.1", "lambda"),
        ("B.1.177", "other"),
        ("A", "other"),
        ("  ba.2 ", "omicron"),
        ("MU.2", "omicron"),
        ("21K (Omicron)", "omicron"),
        ("20I (Alpha, V1)", "alpha"),
        ("20B/501Y.V1", "alpha"),
        ("20A.EU1", "other"),
        ("21K", "omicron"),
        ("Delta", "delta"),
        ("Kappa", "other"),
        ("alpha", "alpha"),
        ("Other", "other"),
        ("mu", "mu"),
        ("gibberish words", None),
        ("gibberish", None),
        ("recombinant", None),
        ("26A", None),
        ("", None),
    ],
)
def test_lineage_to_class(name, expected):
    assert lineage_to_class(name) == expected


def test_lineage_table_rows_are_well_formed():
    rows = _tsv_rows("lineage_classes.tsv")
    pango = re.compile(r"[A-Z]{1,3}(\.\d+)*")
    seen = set()
    for kind, pattern, cls, _note in rows:
        assert kind in ("pango", "clade", "who")
        assert cls in CLASSES
        assert (kind, pattern) not in seen, pattern
        seen.add((kind, pattern))
        if kind == "pango":
            assert pango.fullmatch(pattern), pattern
            assert not set(pattern.split(".")[0]) & set("IO"), pattern
    assert {cls for kind, _, cls, _ in rows if kind == "who"} == set(CLASSES)


# --- parse_mutation -----------------------------------------------------------------------------


def test_parse_mutation_reads_the_older_insertion_form_and_writes_nextclades():
    mutation = parse_mutation("S:ins214EPE")
    assert mutation == Mutation("S", "ins", 214, "", "EPE")
    assert str(mutation) == "S:214:EPE"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("S:N501Y", Mutation("S", "sub", 501, "N", "Y")),
        ("S:H69-", Mutation("S", "del", 69, "H", "-")),
        ("S:214:EPE", Mutation("S", "ins", 214, "", "EPE")),
        ("ORF1a:T3255I", Mutation("ORF1a", "sub", 3255, "T", "I")),
        ("ORF8:Q27*", Mutation("ORF8", "sub", 27, "Q", "*")),
    ],
)
def test_parse_mutation_round_trip(text, expected):
    mutation = parse_mutation(text)
    assert mutation == expected
    assert str(mutation) == text
    assert parse_mutation(f"  {text}\n") == mutation


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("N501Y", "expected GENE:REF POS ALT"),
        ("S:N501", "expected GENE:REF POS ALT"),
        ("S:501Y", "expected GENE:REF POS ALT"),
        ("S:n501y", "expected GENE:REF POS ALT"),
        ("S:ins214", "expected GENE:REF POS ALT"),
        ("", "expected GENE:REF POS ALT"),
        ("S:HV69-", "one residue at a time"),
        ("S:N501N", "reference and alternative are both 'N'"),
        ("S:N0Y", "positions start at 1"),
    ],
)
def test_parse_mutation_errors(text, message):
    with pytest.raises(InputError, match=re.escape(message)):
        parse_mutation(text)
