"""Mutation calling in Nextclade notation on spikes built by hand in reference columns."""

from __future__ import annotations

import pytest

from bertgeom.genome.mutations import call_mutations
from bertgeom.genome.sequence import reverse_complement, translate_codon
from bertgeom.genome.spike import normalize_indels
from bertgeom.resources import genetic_code, spike_coordinates, spike_reference

REF = spike_reference()
START = spike_coordinates().start
CODE = genetic_code()
CODE_KEY = tuple(sorted(CODE.items()))


def col(genome_pos: int) -> int:
    """0-based spike column of a 1-based genome position."""
    return genome_pos - START


def delete(seq: str, first: int, last: int) -> str:
    """Reference columns first..last (1-based genome positions) deleted."""
    a, b = col(first), col(last) + 1
    return seq[:a] + "-" * (b - a) + seq[b:]


def substitute(seq: str, pos: int, base: str) -> str:
    c = col(pos)
    return seq[:c] + base + seq[c + 1 :]


def calls(aligned: str, insertions: list[tuple[int, str]] | None = None):
    aligned, ins = normalize_indels(aligned, insertions or [], REF)
    return call_mutations(aligned, ins, REF, CODE, spike_start=START)


def test_reference_has_no_mutations():
    c = calls(REF)
    assert c.mutations == ()
    assert c.frameshifts == ()
    assert c.premature_stop is None
    assert len(c.protein) == 1274 and c.protein.endswith("*") and c.protein.startswith("MFVFL")


def test_substitution_n501y():
    # N501Y is A23063T
    assert calls(substitute(REF, 23063, "T")).mutations == ("S:N501Y",)


def test_alpha_deletion_69_70_is_written_as_nextclade_does():
    assert calls(delete(REF, 21765, 21770)).mutations == ("S:H69-", "S:V70-")


def test_delta_deletion_156_158_is_written_as_nextclade_does():
    assert calls(delete(REF, 22029, 22034)).mutations == ("S:E156-", "S:F157-", "S:R158G")


def test_lambda_deletion_is_written_as_nextclade_does():
    muts = calls(delete(REF, 22299, 22319)).mutations
    assert muts == (
        *(f"S:{aa}{p}-" for aa, p in zip("RSYLTPG", range(246, 253), strict=True)),
        "S:D253N",
    )


def test_deletion_in_repeated_residues_is_left_aligned():
    # Y144 Y145: deleting either codon gives the same protein, written S:Y144-
    y145 = col(21563 + 144 * 3)
    aligned = REF[:y145] + "---" + REF[y145 + 3 :]
    assert calls(aligned).mutations == ("S:Y144-",)


def test_equivalent_nucleotide_placements_give_identical_columns():
    # the same 3-nt deletion placed at every equivalent offset normalises to one string
    a = normalize_indels(delete(REF, 21991, 21993), [], REF)[0]
    b = normalize_indels(delete(REF, 21992, 21994), [], REF)[0]
    assert a == b


def test_codon_aligned_insertion_omicron_214():
    muts = calls(REF, [(col(22204), "GAGCCAGAA")]).mutations
    assert muts == ("S:214:EPE",)


def test_insertion_in_repeat_moves_to_codon_boundary():
    # inserting a copy of codon 214's last base + next two bases mid-codon is equivalent to a
    # codon-boundary insertion when the bases repeat; the caller writes one notation for both
    c = col(22204)
    left = calls(REF, [(c, REF[c + 1 : c + 4])]).mutations
    right = calls(REF, [(c + 1, REF[c + 2 : c + 4] + REF[c + 1])]).mutations
    assert left == right


def test_out_of_frame_deletion_is_a_frameshift():
    c = calls(delete(REF, 23000, 23001))
    assert c.frameshifts == ("del23000-23001",)
    assert not c.compensated


def test_compensated_frameshift():
    aligned = delete(REF, 23000, 23000)
    c = calls(aligned, [(col(23040), "A")])
    assert len(c.frameshifts) == 2
    assert c.compensated


def test_premature_stop():
    # codon 10 (residue 10, 'S' in MFVFLVLLPLVSS..) -> TAA
    c0 = 9 * 3
    aligned = REF[:c0] + "TAA" + REF[c0 + 3 :]
    c = calls(aligned)
    assert c.premature_stop == 10
    assert any(m.endswith("10*") for m in c.mutations)


def test_n_masks_codon_without_a_call():
    c0 = 500 * 3
    aligned = REF[:c0] + "NNN" + REF[c0 + 3 :]
    c = calls(aligned)
    assert c.mutations == ()
    assert c.protein[500] == "X"
    assert c.n_unknown_aa == 1


@pytest.mark.parametrize(
    ("codon", "aa"),
    [
        ("GCN", "A"),
        ("TTR", "L"),
        ("YTA", "L"),
        ("TAY", "Y"),
        ("NNN", "X"),
        ("GAN", "X"),
        ("ATH", "I"),
        ("G-A", "X"),
    ],
)
def test_iupac_codons_resolve_only_when_unambiguous(codon, aa):
    assert translate_codon(codon, CODE_KEY) == aa


def test_reverse_complement_round_trip_and_iupac():
    assert reverse_complement("ACGTRYN-") == "-NRYACGT"
    assert reverse_complement(reverse_complement(REF)) == REF


def test_insertion_inside_a_changed_codon_gives_one_residue_call():
    # codon 17 (N, AAT at columns 48-50): C at column 48 and GGG inserted after it
    aligned = REF[:48] + "C" + REF[49:]
    c = calls(aligned, [(48, "GGG")])
    assert c.mutations == ("S:N17R", "S:17:D")
    assert c.protein[16] == "R"


def test_stop_codon_inside_an_insertion_is_premature():
    c = calls(REF, [(col(22204), "TAA")])
    assert c.mutations == ("S:214:*",)
    assert c.premature_stop == 214
