"""The embedded variant simulator: determinism, ground truth and noise bookkeeping."""

from __future__ import annotations

import re
from dataclasses import replace
from functools import cache

import numpy as np
import pytest

from bertgeom.errors import ConfigError, InputError
from bertgeom.genome.sequence import reverse_complement
from bertgeom.genome.simulate import (
    NOISELESS,
    OTHER_DEFINING,
    SPIKE_MARGIN,
    NoiseProfile,
    SimulatedGenome,
    align_global,
    simulate_dataset,
    simulate_genome,
)
from bertgeom.resources import (
    CLASSES,
    genetic_code,
    reference_genome,
    spike_coordinates,
    spike_reference,
)
from bertgeom.resources.variants import defining_mutations, parse_mutation

QUIET = NOISELESS
#: Much more noise than the default, to exercise every kind of edit.
NOISY = NoiseProfile(
    extra_substitutions=(5, 10),
    n_runs=(1, 4),
    p_spike_indel=1.0,
    p_outside_indel=1.0,
    p_reverse_complement=0.5,
    p_drop_defining=0.2,
)


@cache
def _dataset(per_class: int, seed: int, profile: NoiseProfile) -> tuple[SimulatedGenome, ...]:
    return tuple(simulate_dataset(per_class, seed, profile))


@cache
def _ref_protein() -> str:
    spike, code = spike_reference(), genetic_code()
    return "".join(code[spike[i : i + 3]] for i in range(0, len(spike), 3))


def _protein_after(mutations: tuple[str, ...] | list[str]) -> str:
    """The reference spike protein with mutations applied, gaps removed."""
    residues = list(_ref_protein())
    parsed = sorted((parse_mutation(t) for t in mutations), key=lambda m: m.kind == "ins")
    for m in parsed:
        if m.kind == "ins":
            residues[m.position - 1] += m.alt
        else:
            residues[m.position - 1] = "" if m.kind == "del" else m.alt
    return "".join(residues)


def _table(label: str) -> tuple[str, ...]:
    return OTHER_DEFINING if label == "other" else defining_mutations()[label]


def _residue(text: str) -> int:
    return parse_mutation(text).position


def test_same_seed_gives_identical_genomes():
    first = list(simulate_dataset(3, seed=11))
    second = list(simulate_dataset(3, seed=11))
    assert first == second
    assert len(first) == 3 * len(CLASSES)


def test_different_seeds_give_different_genomes():
    a = _dataset(2, 1, NoiseProfile())
    b = _dataset(2, 2, NoiseProfile())
    assert [g.id for g in a] == [g.id for g in b]
    assert all(x.sequence != y.sequence for x, y in zip(a, b, strict=True))


def test_a_genome_does_not_depend_on_what_else_is_simulated():
    everything = {g.id: g for g in _dataset(3, 5, NoiseProfile())}
    only_delta = list(simulate_dataset({"delta": 3}, seed=5))
    assert [g.id for g in only_delta] == ["sim-delta-00000", "sim-delta-00001", "sim-delta-00002"]
    assert all(g == everything[g.id] for g in only_delta)
    index = CLASSES.index("delta")
    again = simulate_genome("delta", np.random.default_rng([5, index, 2]), 2)
    assert again == everything["sim-delta-00002"]


def test_ids_are_unique_and_well_formed():
    genomes = _dataset(4, 3, NOISY)
    assert len({g.id for g in genomes}) == len(genomes)
    for g in genomes:
        assert re.fullmatch(rf"sim-{g.label}-\d{{5}}", g.id)
    assert [g.label for g in genomes] == [c for c in CLASSES for _ in range(4)]


@pytest.mark.parametrize("label", CLASSES)
def test_without_noise_every_defining_mutation_is_planted(label):
    (g,) = simulate_dataset({label: 1}, seed=0, profile=QUIET)
    assert g.dropped == ()
    assert g.background == ()
    assert g.planted == g.defining
    assert g.masked_residues == ()
    # the notation of combined changes may differ from the table's, the protein may not
    assert _protein_after(g.defining) == _protein_after(_table(label))
    # every edit is a defining one, in the spike, away from its ends
    coords = spike_coordinates()
    for edit in g.nucleotide_edits:
        first = int(re.search(r"\d+", edit).group())
        assert coords.start + SPIKE_MARGIN <= first <= coords.end - SPIKE_MARGIN, edit


@pytest.mark.parametrize("label", CLASSES)
def test_defining_mutations_survive_noise_unless_dropped(label):
    genomes = [g for g in _dataset(6, 21, NOISY) if g.label == label]
    table = _table(label)
    indel_residues = {_residue(t) for t in table if parse_mutation(t).kind != "sub"}
    for g in genomes:
        assert set(g.dropped) <= set(table)
        carried = [t for t in table if t not in g.dropped]
        assert _protein_after(g.defining) == _protein_after(carried), g.id
        for text in carried:  # substitutions far from any indel keep the table's notation
            if all(abs(_residue(text) - r) > 5 for r in indel_residues):
                assert parse_mutation(text).kind != "sub" or text in g.defining, (g.id, text)


def test_other_carries_d614g():
    for g in _dataset(4, 3, NoiseProfile()):
        if g.label == "other":
            assert "S:D614G" in g.defining or "S:D614G" in g.dropped
    (g,) = simulate_dataset({"other": 1}, seed=9, profile=QUIET)
    assert g.planted == g.defining == ("S:D614G",)
    assert g.nucleotide_edits == ("A23403G",)
    assert g.sequence == reference_genome()[:23402] + "G" + reference_genome()[23403:]


def test_planted_splits_into_defining_and_background():
    for g in _dataset(4, 3, NOISY):
        assert set(g.defining).isdisjoint(g.background)
        assert sorted(g.defining + g.background, key=g.planted.index) == list(g.planted)
        assert not any("*" in m for m in g.planted), g.id  # no stop codon in the spike
        order = [(_residue(m), "ins" in m) for m in g.planted]
        assert order == sorted(order)


def test_noise_is_recorded_in_the_edits():
    genomes = _dataset(4, 3, NOISY)
    for g in genomes:
        assert set(g.sequence) <= set("ACGTN")
        assert g.reverse_complemented == ("revcomp" in g.nucleotide_edits)
        n_runs = [e for e in g.nucleotide_edits if e.startswith("Nrun")]
        assert ("N" in g.sequence) == bool(n_runs)
        if g.masked_residues:
            assert n_runs
            assert list(g.masked_residues) == sorted(set(g.masked_residues))
    assert any(g.reverse_complemented for g in genomes)
    assert any(g.masked_residues for g in genomes)
    assert any(g.background for g in genomes)


def _replay(edits: tuple[str, ...]) -> str:
    """The genome that ``nucleotide_edits`` describe, rebuilt from the reference."""
    ref = reference_genome()
    base, ins = list(ref), [""] * len(ref)
    trim5 = trim3 = 0
    for edit in edits:
        if m := re.fullmatch(r"([ACGT])(\d+)([ACGT])", edit):
            assert ref[int(m[2]) - 1] == m[1], edit
            base[int(m[2]) - 1] = m[3]
        elif m := re.fullmatch(r"del(\d+)-(\d+)", edit):
            a, b = int(m[1]) - 1, int(m[2])
            base[a:b] = [""] * (b - a)
        elif m := re.fullmatch(r"ins(\d+):([ACGT]+)", edit):
            ins[int(m[1]) - 1] += m[2]
        elif m := re.fullmatch(r"Nrun(\d+)-(\d+)", edit):
            a, b = int(m[1]) - 1, int(m[2])
            base[a:b] = ["N" if x else "" for x in base[a:b]]
            ins[a:b] = ["N" * len(x) for x in ins[a:b]]
        elif m := re.fullmatch(r"trim5:0-(\d+)", edit):
            trim5 = int(m[1])
        elif m := re.fullmatch(r"trim3:(\d+)-(\d+)", edit):
            trim3 = int(m[2]) - int(m[1])
        else:
            assert edit == "revcomp", edit
    genome = "".join(b + i for b, i in zip(base, ins, strict=True))
    genome = genome[trim5 : len(genome) - trim3]
    return reverse_complement(genome) if "revcomp" in edits else genome


def test_nucleotide_edits_rebuild_the_sequence():
    for g in _dataset(4, 3, NOISY):
        assert _replay(g.nucleotide_edits) == g.sequence, g.id


def test_masked_residues_are_the_codons_under_n():
    # no indels, so the spike sits at reference coordinates minus the 5' trim
    profile = replace(NOISY, n_runs=(3, 6), p_spike_indel=0.0, p_outside_indel=0.0)
    genomes = list(simulate_dataset({"gamma": 8, "omicron": 8, "other": 8}, 4, profile))
    start, n = spike_coordinates().start, len(spike_reference())
    assert any(g.masked_residues for g in genomes)
    for g in genomes:
        assert not any(e.startswith(("ins", "del")) for e in g.nucleotide_edits)
        seq = reverse_complement(g.sequence) if g.reverse_complemented else g.sequence
        trim = next((int(e.split("-")[1]) for e in g.nucleotide_edits if e.startswith("trim5")), 0)
        spike = seq[start - 1 - trim : start - 1 - trim + n]
        codons = np.frombuffer(spike.encode(), dtype="S1").reshape(-1, 3)
        under_n = tuple(int(r) + 1 for r in np.flatnonzero((codons == b"N").any(axis=1)))
        assert under_n == g.masked_residues, g.id


def test_unknown_class_and_bad_profiles_are_refused():
    with pytest.raises(InputError, match="unknown class 'kappa'"):
        simulate_genome("kappa", np.random.default_rng(0), 0)
    with pytest.raises(InputError, match="unknown classes"):
        simulate_dataset({"kappa": 1}, seed=0)  # checked at the call, not at the first genome
    with pytest.raises(InputError, match="must not be negative"):
        simulate_dataset(2, seed=-1)
    with pytest.raises(ConfigError, match="p_drop_defining"):
        replace(NoiseProfile(), p_drop_defining=1.5)
    with pytest.raises(ConfigError, match="n_run_length"):
        NoiseProfile(n_run_length=(10, 5))
    with pytest.raises(ConfigError, match="trimming"):
        NoiseProfile(trim5=(0, 20_000))


def test_align_global_prefers_the_gap_without_mismatches():
    # Delta: R158G (AGA -> GGA) beside the deletion of codons 156-157 is one 6-nt deletion
    ref = "TCAAGTGAGTTCAGAGTTTATTC"
    query = "TCAAGTGGAGTTTATTC"
    cols = align_global(ref, query)
    assert "".join(r for r, _ in cols) == ref
    assert "".join(q for _, q in cols) == query
    assert not any(r and q and r != q for r, q in cols)
    assert sum(1 for _, q in cols if not q) == 6
