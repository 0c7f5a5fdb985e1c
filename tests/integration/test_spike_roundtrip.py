"""Round trips through the spike pipeline: known edits in, the same calls out.

The expected calls are those of :func:`call_mutations` on the true alignment (which the test
knows, because it made the edits) after :func:`normalize_indels`: what a perfect aligner gives.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from bertgeom.genome.mutations import SpikeCalls, call_mutations
from bertgeom.genome.process import SpikeProcessor, SpikeResult
from bertgeom.genome.sequence import reverse_complement
from bertgeom.genome.simulate import NOISELESS, simulate_dataset, simulate_genome
from bertgeom.genome.spike import normalize_indels
from bertgeom.resources import (
    CLASSES,
    genetic_code,
    reference_genome,
    spike_coordinates,
    spike_reference,
)
from bertgeom.resources.variants import parse_mutation

REF = reference_genome()
SPIKE = spike_reference()
START = spike_coordinates().start
S0, S1 = START - 1, START - 1 + len(SPIKE)  # 0-based half-open genome span of the spike
MARGIN = 30  # nt at each spike end that no edit touches
SPACING = 15  # nt between two edits
QUIET = NOISELESS

_SETTINGS = settings(max_examples=60, deadline=None)


@pytest.fixture(scope="module")
def processor() -> SpikeProcessor:
    """One processor for the module: building minimap2's indexes is the slow part."""
    return SpikeProcessor()


@dataclass(frozen=True)
class Edit:
    """One edit of the reference: ``position`` is 0-based on the genome; a deletion removes
    ``length`` bases from there, an insertion adds ``bases`` after it."""

    kind: str  # 'sub', 'del' or 'ins'
    position: int
    bases: str = ""
    length: int = 1


@dataclass(frozen=True)
class Truth:
    genome: str
    aligned: str  # normalised true spike columns
    insertions: list[tuple[int, str]]  # normalised (spike column after which, bases)
    calls: SpikeCalls


def _apply(edits: list[Edit], reverse: bool = False) -> Truth:
    base, ins = list(REF), [""] * len(REF)
    for e in edits:
        if e.kind == "sub":
            base[e.position] = e.bases
        elif e.kind == "del":
            base[e.position : e.position + e.length] = [""] * e.length
        else:
            ins[e.position] += e.bases
    genome = "".join(map(operator.add, base, ins))
    aligned = "".join(b or "-" for b in base[S0:S1])
    insertions = [(p - S0, ins[p]) for p in range(S0, S1 - 1) if ins[p]]
    aligned, insertions = normalize_indels(aligned, insertions, SPIKE)
    calls = call_mutations(aligned, insertions, SPIKE, genetic_code(), spike_start=START)
    return Truth(reverse_complement(genome) if reverse else genome, aligned, insertions, calls)


@st.composite
def spike_edits(draw: st.DrawFn, frameshift: bool = False) -> list[Edit]:
    """Substitutions and indels in the spike interior, SPACING nt apart (all equivalent
    placements of an indel included); indel lengths are multiples of 3 (or, with
    ``frameshift``, one indel is not), at any codon phase."""
    edits: list[Edit] = []
    floor = S0 + MARGIN  # where the next edit's placements may start
    pos = floor + draw(st.integers(0, 300))
    n_edits = draw(st.integers(1 if frameshift else 0, 6))
    shifted = draw(st.integers(0, n_edits - 1)) if frameshift else -1
    for i in range(n_edits):
        if i == shifted:
            kind = draw(st.sampled_from(["del", "ins"]))
        else:
            kind = draw(st.sampled_from(["sub", "del", "ins"]))
        if kind == "sub":
            alt = draw(st.sampled_from([b for b in "ACGT" if b != REF[pos]]))
            edit, end = Edit("sub", pos, alt), pos + 1
        else:
            if i == shifted:
                length = draw(st.sampled_from([1, 2, 4, 5, 7, 8]))
            else:
                length = 3 * draw(st.integers(1, 4))
            phase = draw(st.integers(0, 2))  # 0: a deletion starts / an insertion follows a codon
            offset = (pos - S0 + (1 if kind == "ins" else 0)) % 3
            pos += (phase - offset) % 3
            if kind == "del":
                edit, end = Edit("del", pos, length=length), pos + length
            else:
                if draw(st.booleans()):  # a tandem duplication: many equivalent placements
                    bases = REF[pos + 1 : pos + 1 + length]
                else:
                    bases = draw(st.text(alphabet="ACGT", min_size=length, max_size=length))
                edit, end = Edit("ins", pos, bases, length), pos + 1
        lo, hi = _span(edit)
        if hi > S1 - MARGIN:
            break
        if lo >= floor:  # else an equivalent placement comes too close to the previous edit
            edits.append(edit)
            floor = hi + SPACING
        pos = max(end, hi) + SPACING + draw(st.integers(0, 600))
    return edits


def _span(edit: Edit) -> tuple[int, int]:
    """Genome span of all the placements equivalent to ``edit``: indels slide in repeats."""
    p, n = edit.position, edit.length
    if edit.kind == "sub":
        return p, p + 1
    if edit.kind == "del":
        lo, hi = p, p
        while REF[lo - 1] == REF[lo - 1 + n]:
            lo -= 1
        while REF[hi + n] == REF[hi]:
            hi += 1
        return lo, hi + n
    lo, bases = p, edit.bases  # anchors: the insertion follows base lo .. hi
    while bases[-1] == REF[lo]:
        lo, bases = lo - 1, REF[lo] + bases[:-1]
    hi, bases = p, edit.bases
    while bases[0] == REF[hi + 1]:
        hi, bases = hi + 1, bases[1:] + REF[hi + 1]
    return lo, hi + 1


@st.composite
def outside_substitutions(draw: st.DrawFn) -> list[Edit]:
    """Up to 3 substitutions outside the spike and its margins, SPACING nt apart."""
    edits: list[Edit] = []
    for p in sorted(draw(st.lists(st.integers(0, len(REF) - 1), max_size=3, unique=True))):
        if S0 - MARGIN <= p < S1 + MARGIN or (edits and p < edits[-1].position + SPACING):
            continue
        edits.append(Edit("sub", p, draw(st.sampled_from([b for b in "ACGT" if b != REF[p]]))))
    return edits


def _masked_out(mutations: tuple[str, ...], residues: set[int]) -> set[str]:
    return {m for m in mutations if parse_mutation(m).position not in residues}


def _assert_matches(result: SpikeResult, truth: Truth) -> None:
    assert result.calls.mutations == truth.calls.mutations
    assert result.spike.aligned == truth.aligned
    assert [(i.position - START, i.bases) for i in result.spike.insertions] == truth.insertions
    assert result.calls.frameshifts == truth.calls.frameshifts


def test_the_reference_has_no_mutations(processor):
    result = processor.process("ref", REF)
    assert result.calls.mutations == ()
    assert result.calls.frameshifts == ()
    assert result.spike.aligned == SPIKE
    assert result.spike.raw == SPIKE
    assert result.spike.insertions == ()
    assert result.spike.strand == 1
    assert result.qc.status == "good"
    assert result.qc.reasons == ()


@_SETTINGS
@given(edits=spike_edits(), outside=outside_substitutions(), reverse=st.booleans())
def test_in_frame_edits_are_called_as_a_perfect_aligner_would(processor, edits, outside, reverse):
    truth = _apply(edits + outside, reverse)
    result = processor.process("edited", truth.genome)
    _assert_matches(result, truth)
    assert result.spike.strand == (-1 if reverse else 1)
    assert result.spike.n_uncovered == 0


@settings(_SETTINGS, max_examples=25)
@given(edits=spike_edits(frameshift=True), reverse=st.booleans())
def test_out_of_frame_indels_are_frameshifts(processor, edits, reverse):
    truth = _apply(edits, reverse)
    assume(truth.calls.frameshifts)  # the strategy drops edits too close to the previous one
    result = processor.process("shifted", truth.genome)
    _assert_matches(result, truth)
    assert result.calls.frameshifts
    assert not result.calls.compensated  # one out-of-frame indel, the others in frame
    assert result.qc.status == "bad"
    assert any(r.startswith("frameshift") for r in result.qc.reasons)


def test_simulated_genomes_get_their_planted_mutations(processor):
    genomes = list(simulate_dataset(5, seed=2024))
    assert {g.label for g in genomes} == set(CLASSES)
    failures = []
    for g in genomes:
        result = processor.process(g.id, g.sequence)
        masked = set(g.masked_residues)
        expected = _masked_out(g.planted, masked)
        called = _masked_out(result.calls.mutations, masked)
        if called != expected or (result.spike.strand == -1) != g.reverse_complemented:
            failures.append((g.id, sorted(expected - called), sorted(called - expected)))
    assert failures == []


def test_a_long_n_run_over_the_spike_start_falls_back_to_the_genome(processor):
    delta = simulate_genome("delta", np.random.default_rng(7), 0, QUIET)
    a, b = 21300, 21570  # 1-based, inclusive: 271 N, the first 8 spike bases among them
    genome = delta.sequence[: a - 1] + "N" * (b - a + 1) + delta.sequence[b:]
    result = processor.process("n-run", genome)
    assert result.spike.method == "genome"
    assert result.spike.aligned[: b - S0] == "N" * (b - S0)
    masked = {1, 2, 3}  # residues with a base under N
    assert _masked_out(result.calls.mutations, masked) == _masked_out(delta.planted, masked)
    assert "S:T19R" in result.calls.mutations


def test_a_long_n_run_just_before_the_spike_leaves_it_whole(processor):
    a, b = 21300, START - 2  # 1-based, inclusive: ends one base before the spike
    genome = REF[: a - 1] + "N" * (b - a + 1) + REF[b:]
    result = processor.process("n-run", genome)
    assert result.spike.aligned == SPIKE
    assert result.calls.mutations == ()


def test_a_genome_ending_inside_the_spike_is_partial(processor):
    result = processor.process("truncated", REF[:23000])
    assert result.qc.status == "bad"
    assert result.qc.reasons[0].startswith("partial genome")
    assert result.spike.n_uncovered == S1 - 23000
    assert result.spike.aligned[: 23000 - S0] == SPIKE[: 23000 - S0]


def test_island_between_long_n_runs_is_recovered(processor):
    g = list(reference_genome())
    g[23402] = "G"  # S:D614G
    g[23099:23370] = "N" * 271
    g[23430:23700] = "N" * 270
    result = processor.process("island", "".join(g))
    assert result.calls.mutations == ("S:D614G",)
    assert not any(r.startswith("partial genome") for r in result.qc.reasons)
    assert result.qc.reasons == ("spike N fraction 0.142 > 0.05",)
