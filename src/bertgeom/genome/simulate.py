"""Embedded variant simulator: genomes of every variant class with known spike mutations.

A simulated genome starts from the reference, receives its class's defining spike mutations at
the nucleotide level, then realistic noise (background substitutions, indels, N runs, trimmed
ends, now and then a reverse-complemented record). The simulator edits the genome and, in
parallel, its true alignment to the reference, so the ground truth is known: ``planted`` is what
:func:`~bertgeom.genome.mutations.call_mutations` gives on the true spike alignment after
:func:`~bertgeom.genome.spike.normalize_indels`, i.e. what a perfect aligner would call.

How the defining mutations are written into the genome:

- a substitution takes a codon of the new amino acid at the fewest nucleotide changes from the
  reference codon (ties drawn at random);
- a run of deleted residues deletes their 3 m codon bases; an insertion adds random codons of the
  inserted amino acids after the residue's codon;
- nearby changes (within :data:`MIN_SPACING` nt) that include an indel are then realigned
  together to the reference with minimap2's ``asm20`` scores (match 1, mismatch 4, gap
  ``min(6 + 2 L, 26 + L)``), because a codon change beside a deletion often has a cheaper
  equivalent that every aligner prefers: Delta's R158G (AGA -> GGA) beside the deletion of
  codons 156-157 leaves GGA where the reference has GAGTTCAGA, which is the single 6-nt
  deletion 22029-22034 without any substitution.

``defining`` holds the calls of the defining changes in the notation of ``call_mutations``,
which may differ from the table's for such combined changes.

Noise never lands within :data:`MIN_SPACING` nt of another edit in the spike (so the alignment
is unambiguous), never within :data:`SPIKE_MARGIN` nt of either spike end, and never creates a
stop codon in the spike. N runs in the spike may cover substitutions (those residues are
then listed in ``masked_residues``) but keep :data:`MIN_SPACING` nt from uncovered edits and
:data:`N_RUN_INDEL_CLEARANCE` nt from indels, so that a local aligner reaches them.
"""

from __future__ import annotations

import operator
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache, lru_cache
from itertools import compress

import numpy as np

from bertgeom.errors import ConfigError, InputError
from bertgeom.genome.mutations import SpikeCalls, call_mutations
from bertgeom.genome.realign import align_global
from bertgeom.genome.sequence import reverse_complement
from bertgeom.genome.spike import normalize_indels
from bertgeom.resources import (
    CLASSES,
    genetic_code,
    reference_genome,
    spike_coordinates,
    spike_reference,
)
from bertgeom.resources.variants import defining_mutations, parse_mutation

#: Nucleotides kept free of other edits on each side of an edit in the spike.
MIN_SPACING = 15
#: Nucleotides at each end of the spike (and just outside it) that no edit touches.
SPIKE_MARGIN = 30
#: Nucleotides between an N run and an indel in the spike: a local aligner clips the bases
#: between them when they score less than the gap costs (47 for a 21-nt deletion in asm20).
N_RUN_INDEL_CLEARANCE = 60
#: The defining mutations of the class 'other', which the table leaves empty.
OTHER_DEFINING: tuple[str, ...] = ("S:D614G",)

_BASES = "ACGT"
_MAX_TRIES = 200  # placement attempts per noise edit before it is given up
_MAX_TRIM = 3000  # far from both spike ends (21,562 and 4,519 nt from the genome's ends)


@dataclass(frozen=True)
class SimulatedGenome:
    """One simulated genome and its ground truth.

    Attributes
    ----------
    id
        ``sim-{label}-{index:05d}``.
    label
        Its class, one of :data:`bertgeom.resources.CLASSES`.
    sequence
        The genome as a FASTA record would hold it (trimmed, maybe reverse-complemented).
    planted
        Spike amino-acid mutations the simulator put there, in the notation and order of
        :func:`~bertgeom.genome.mutations.call_mutations`, including those under N.
    defining
        The calls of the class-defining changes (a subset of ``planted``).
    background
        ``planted`` minus ``defining``.
    nucleotide_edits
        Every edit in reference coordinates (1-based): ``C23063T``, ``del21765-21770``,
        ``ins22204:GAGCCAGAA`` (after 22204), ``Nrun100-350`` (reference positions covered),
        then ``trim5:0-57`` / ``trim3:29850-29903`` (0-based half-open ranges of the untrimmed
        genome) and ``revcomp``.
    reverse_complemented
        True when ``sequence`` is the reverse complement of the simulated genome.
    masked_residues
        1-based spike residues whose codon has an N in ``sequence``: the truth there is unknown.
    dropped
        Defining mutations of the class (table notation) that this genome does not carry.
    """

    id: str
    label: str
    sequence: str
    planted: tuple[str, ...]
    defining: tuple[str, ...]
    background: tuple[str, ...]
    nucleotide_edits: tuple[str, ...]
    reverse_complemented: bool
    masked_residues: tuple[int, ...]
    dropped: tuple[str, ...] = ()


_PROBABILITIES = ("p_spike_indel", "p_outside_indel", "p_reverse_complement", "p_drop_defining",
                  "p_noncore")  # fmt: skip
_RANGES = ("extra_substitutions", "n_runs", "n_run_length", "trim5", "trim3",
           "spike_indel_codons", "outside_indel_length")  # fmt: skip


@dataclass(frozen=True)
class NoiseProfile:
    """How much noise :func:`simulate_genome` adds on top of the defining mutations.

    Ranges are ``(low, high)``, both ends included, drawn uniformly.

    Attributes
    ----------
    substitution_rate
        Background substitutions per nucleotide over the whole genome (Poisson; 1e-4 gives
        about 3 per genome) ...
    extra_substitutions
        ... plus this many more per genome.
    n_runs
        Number of N runs per genome (amplicon dropouts), placed anywhere, the spike included.
    n_run_length
        Length of each N run in nucleotides.
    trim5, trim3
        Bases cut from the 5' and 3' ends (amplicon genomes lack their ends; never the spike).
    p_spike_indel
        Probability of one extra in-frame indel (deletion or insertion of 3, 6, ... nt) in the
        spike, at a codon boundary or inside a codon.
    spike_indel_codons
        Its length in codons.
    p_outside_indel
        Probability of one extra indel outside the spike (any length, frameshifts included).
    outside_indel_length
        Its length in nucleotides.
    p_reverse_complement
        Probability that the record is reverse-complemented.
    p_drop_defining
        Probability that a defining mutation (a whole deletion run counts as one) is missing
        (reversion or dropout); dropped ones are not planted.
    p_noncore
        Probability that each defining mutation flagged non-core in the table is carried.
    """

    substitution_rate: float = 1e-4
    extra_substitutions: tuple[int, int] = (0, 3)
    n_runs: tuple[int, int] = (0, 3)
    n_run_length: tuple[int, int] = (1, 300)
    trim5: tuple[int, int] = (0, 150)
    trim3: tuple[int, int] = (0, 150)
    p_spike_indel: float = 0.05
    spike_indel_codons: tuple[int, int] = (1, 4)
    p_outside_indel: float = 0.2
    outside_indel_length: tuple[int, int] = (1, 12)
    p_reverse_complement: float = 0.01
    p_drop_defining: float = 0.02
    p_noncore: float = 0.8

    def __post_init__(self) -> None:
        for name in _PROBABILITIES:
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(
                    f"NoiseProfile.{name} = {value}: expected a probability in [0, 1]"
                )
        if self.substitution_rate < 0:
            raise ConfigError(f"NoiseProfile.substitution_rate = {self.substitution_rate} < 0")
        for name in _RANGES:
            low, high = getattr(self, name)
            if not 0 <= low <= high:
                raise ConfigError(f"NoiseProfile.{name} = {(low, high)}: expected 0 <= low <= high")
        if min(self.n_run_length[0], self.spike_indel_codons[0], self.outside_indel_length[0]) < 1:
            raise ConfigError("NoiseProfile: N run and indel lengths start at 1")
        if max(self.trim5[1], self.trim3[1]) > _MAX_TRIM:
            raise ConfigError(f"NoiseProfile: trimming is limited to {_MAX_TRIM} nt per end")


#: No noise at all: only the defining mutations, every one of them (core or not) carried.
NOISELESS = NoiseProfile(
    substitution_rate=0.0,
    extra_substitutions=(0, 0),
    n_runs=(0, 0),
    trim5=(0, 0),
    trim3=(0, 0),
    p_spike_indel=0.0,
    p_outside_indel=0.0,
    p_reverse_complement=0.0,
    p_drop_defining=0.0,
    p_noncore=1.0,
)


# --------------------------------------------------------------------------- static data


@dataclass(frozen=True)
class _Context:
    genome: str
    spike: str
    s0: int  # 0-based genome index of the first spike base
    code: dict[str, str]
    codons: dict[str, tuple[str, ...]]  # amino acid -> its codons
    protein: str  # reference spike protein, stop included


@dataclass(frozen=True)
class _Event:
    """A defining change: a substitution, a run of deleted residues or an insertion."""

    kind: str  # 'sub', 'del' or 'ins'
    first: int  # 1-based residue (after which, for 'ins')
    last: int
    alt: str
    mutations: tuple[str, ...]  # table notation
    core: bool


@cache
def _context() -> _Context:
    code = genetic_code()
    spike = spike_reference()
    codons: dict[str, list[str]] = {}
    for codon, aa in sorted(code.items()):
        codons.setdefault(aa, []).append(codon)
    return _Context(
        genome=reference_genome(),
        spike=spike,
        s0=spike_coordinates().start - 1,
        code=code,
        codons={aa: tuple(c) for aa, c in codons.items()},
        protein="".join(code[spike[i : i + 3]] for i in range(0, len(spike), 3)),
    )


@cache
def _class_events(label: str) -> tuple[_Event, ...]:
    """The class's defining mutations as events; consecutive deleted residues form one run."""
    ctx = _context()
    table = defining_mutations() if label != "other" else {label: OTHER_DEFINING}
    core = set(defining_mutations(core_only=True)[label] if label != "other" else OTHER_DEFINING)
    events: list[_Event] = []
    for text in table[label]:
        m = parse_mutation(text)
        if m.gene != "S" or (m.kind != "ins" and ctx.protein[m.position - 1] != m.ref):
            raise ValueError(f"defining mutation {text} does not fit the reference spike")
        prev = events[-1] if events else None
        if m.kind == "del" and prev and prev.kind == "del" and prev.last + 1 == m.position:
            run_core = prev.core and text in core
            events[-1] = _Event(
                "del", prev.first, m.position, "-", (*prev.mutations, text), run_core
            )
        else:
            events.append(_Event(m.kind, m.position, m.position, m.alt, (text,), text in core))
    return tuple(events)


# --------------------------------------------------------------------------- the draft genome


@dataclass
class _Draft:
    """The genome being built, as one token per reference base: ``base[p]`` is what the genome
    has at reference position p (``''`` deleted) and ``ins[p]`` the bases inserted after it."""

    base: list[str]
    ins: list[str]
    busy: list[tuple[int, int]] = field(default_factory=list)  # edited spans, half-open
    indels: list[tuple[int, int]] = field(default_factory=list)

    def is_free(self, a: int, b: int) -> bool:
        """True when [a, b) is at least MIN_SPACING nt away from every edited span."""
        return all(a >= d + MIN_SPACING or b + MIN_SPACING <= c for c, d in self.busy)

    def sequence(self) -> str:
        return "".join(map(operator.add, self.base, self.ins))


def _spike_truth(draft: _Draft, ctx: _Context) -> tuple[str, list[tuple[int, str]]]:
    """True spike alignment: aligned columns and (column after which, bases)."""
    n = len(ctx.spike)
    aligned = "".join([b or "-" for b in draft.base[ctx.s0 : ctx.s0 + n]])
    ins = draft.ins[ctx.s0 : ctx.s0 + n - 1]
    return aligned, [(c, ins[c]) for c in compress(range(n - 1), ins)]


def _spike_calls(draft: _Draft, ctx: _Context) -> SpikeCalls:
    aligned, insertions = _spike_truth(draft, ctx)
    aligned, insertions = normalize_indels(aligned, insertions, ctx.spike)
    return call_mutations(aligned, insertions, ctx.spike, ctx.code, spike_start=ctx.s0 + 1)


def _in_bounds(ctx: _Context, a: int, b: int) -> bool:
    """[a, b) lies inside the spike's interior or wholly outside the spike and its margins."""
    s1 = ctx.s0 + len(ctx.spike)
    inside = ctx.s0 + SPIKE_MARGIN <= a and b <= s1 - SPIKE_MARGIN
    return inside or b <= ctx.s0 - SPIKE_MARGIN or a >= s1 + SPIKE_MARGIN


def _pick(rng: np.random.Generator, options: tuple[str, ...] | list[str] | str) -> str:
    return options[int(rng.integers(len(options)))]


def _draw(rng: np.random.Generator, bounds: tuple[int, int]) -> int:
    return int(rng.integers(bounds[0], bounds[1] + 1))


# --------------------------------------------------------------------------- defining mutations


def _plant_defining(
    draft: _Draft, events: list[_Event], rng: np.random.Generator, ctx: _Context
) -> None:
    spans: list[tuple[int, int, bool]] = []  # (start, end, has an indel)
    for ev in events:
        a = ctx.s0 + 3 * (ev.first - 1)
        if ev.kind == "sub":
            ref_codon = ctx.genome[a : a + 3]
            dist = [
                sum(x != y for x, y in zip(c, ref_codon, strict=True)) for c in ctx.codons[ev.alt]
            ]
            best = [c for c, d in zip(ctx.codons[ev.alt], dist, strict=True) if d == min(dist)]
            draft.base[a : a + 3] = list(_pick(rng, best))
            spans.append((a, a + 3, False))
        elif ev.kind == "del":
            b = ctx.s0 + 3 * ev.last
            draft.base[a:b] = [""] * (b - a)
            spans.append((a, b, True))
        else:
            p = a + 2
            draft.ins[p] += "".join(_pick(rng, ctx.codons[aa]) for aa in ev.alt)
            spans.append((p, p + 1, True))
    spans.sort()
    merged: list[list] = []
    for a, b, indel in spans:
        if merged and a < merged[-1][1] + MIN_SPACING:
            merged[-1][1] = max(merged[-1][1], b)
            merged[-1][2] = merged[-1][2] or indel
        else:
            merged.append([a, b, indel])
    for a, b, indel in merged:
        if indel:
            a, b = _realign(draft, ctx, a - MIN_SPACING + 3, b + MIN_SPACING - 3)
            a, b = _slide_span(draft, ctx, a, b)
            draft.indels.append((a, b))
        draft.busy.append((a, b))


def _realign(draft: _Draft, ctx: _Context, ws: int, we: int) -> tuple[int, int]:
    """Replace the draft's alignment of reference [ws, we) by an optimal one; return the span
    of the edits it holds."""
    query = "".join(draft.base[p] + draft.ins[p] for p in range(ws, we))
    columns = _align_cached(ctx.genome[ws:we], query)
    draft.base[ws:we] = [""] * (we - ws)
    draft.ins[ws:we] = [""] * (we - ws)
    r = ws
    for ref_char, query_char in columns:
        if ref_char:
            draft.base[r] = query_char
            r += 1
        else:
            draft.ins[r - 1] += query_char
    edited = [p for p in range(ws - 1, we) if draft.ins[p] or draft.base[p] != ctx.genome[p]]
    return edited[0], edited[-1] + 1


#: minimap2 asm20 scores: match, mismatch, and (open, extend) of its two-piece gap cost.
@lru_cache(maxsize=1024)
def _align_cached(ref: str, query: str) -> tuple[tuple[str, str], ...]:
    return tuple(align_global(ref, query))  # the same defining changes recur in every genome


# --------------------------------------------------------------------------- noise


def _plant_substitutions(
    draft: _Draft, rng: np.random.Generator, ctx: _Context, profile: NoiseProfile
) -> None:
    count = int(rng.poisson(profile.substitution_rate * len(ctx.genome)))
    count += _draw(rng, profile.extra_substitutions)
    s0, s1 = ctx.s0, ctx.s0 + len(ctx.spike)
    for _ in range(count):
        for _try in range(_MAX_TRIES):
            p = int(rng.integers(len(ctx.genome)))
            if not (_in_bounds(ctx, p, p + 1) and draft.is_free(p, p + 1)):
                continue
            ref = ctx.genome[p]
            alt = _pick(rng, [b for b in _BASES if b != ref])
            if s0 <= p < s1:  # the codon is unedited (spacing): no stop codon allowed
                c = s0 + (p - s0) // 3 * 3
                codon = ctx.genome[c:p] + alt + ctx.genome[p + 1 : c + 3]
                if ctx.code[codon] == "*":
                    continue
            draft.base[p] = alt
            draft.busy.append((p, p + 1))
            break


def _random_bases(rng: np.random.Generator, length: int) -> str:
    return "".join(_BASES[i] for i in rng.integers(4, size=length))


def _plant_indel(
    draft: _Draft, rng: np.random.Generator, ctx: _Context, length: int, in_spike: bool
) -> None:
    """One deletion or insertion of ``length`` nt, inside the spike or outside it."""
    s1 = ctx.s0 + len(ctx.spike)
    for _try in range(_MAX_TRIES):
        if in_spike:
            a = int(rng.integers(ctx.s0 + SPIKE_MARGIN, s1 - SPIKE_MARGIN - length))
        else:
            a = int(rng.integers(SPIKE_MARGIN, len(ctx.genome) - SPIKE_MARGIN - length))
        deletion = bool(rng.random() < 0.5)
        b = a + length if deletion else a + 1
        if not in_spike and a < s1 + SPIKE_MARGIN and b > ctx.s0 - SPIKE_MARGIN:
            continue  # "outside" means outside the spike: a frameshift there is another story
        if not (_in_bounds(ctx, a, b) and draft.is_free(a, b)):
            continue
        saved = draft.base[a:b], draft.ins[a]
        if deletion:
            draft.base[a:b] = [""] * length
        else:
            draft.ins[a] = _random_bases(rng, length)
        lo, hi = _slide_span(draft, ctx, a, b)
        fits = _in_bounds(ctx, lo, hi) and draft.is_free(lo, hi)
        if not fits or (in_spike and any("*" in m for m in _spike_calls(draft, ctx).mutations)):
            draft.base[a:b], draft.ins[a] = saved
            continue
        draft.busy.append((lo, hi))
        draft.indels.append((lo, hi))
        return


def _slide_span(draft: _Draft, ctx: _Context, a: int, b: int) -> tuple[int, int]:
    """[a, b) widened to every equivalent placement of the indels in it (as normalize_indels
    finds them: moved bases match the reference), so that spacing holds for all of them."""
    ref, base, ins = ctx.genome, draft.base, draft.ins
    lo, hi = a, b
    p = a
    while p < b:
        if base[p] == "":  # a deletion run [p, q)
            q = p
            while q < len(base) and base[q] == "":
                q += 1
            s, e = p, q
            while base[s - 1] == ref[s - 1] == ref[e - 1]:
                s, e = s - 1, e - 1
            lo = min(lo, s)
            s, e = p, q
            while base[e] == ref[e] == ref[s]:
                s, e = s + 1, e + 1
            hi, p = max(hi, e), q
            continue
        if ins[p]:
            c, bases = p, ins[p]
            while bases[-1] == base[c] == ref[c]:
                c, bases = c - 1, ref[c] + bases[:-1]
            lo = min(lo, c)
            c, bases = p, ins[p]
            while bases[0] == base[c + 1] == ref[c + 1]:
                c, bases = c + 1, bases[1:] + ref[c + 1]
            hi = max(hi, c + 2)
        p += 1
    return lo, hi


def _place_n_runs(
    draft: _Draft, rng: np.random.Generator, ctx: _Context, profile: NoiseProfile
) -> list[tuple[int, int]]:
    """N runs as half-open reference spans; in the spike they keep clear of indels and either
    cover an edit or stay MIN_SPACING away from it."""
    s0, s1 = ctx.s0, ctx.s0 + len(ctx.spike)
    runs = []
    for _ in range(_draw(rng, profile.n_runs)):
        length = _draw(rng, profile.n_run_length)
        for _try in range(_MAX_TRIES):
            a = int(rng.integers(0, len(ctx.genome) - length + 1))
            b = a + length
            near = b + N_RUN_INDEL_CLEARANCE > s0 and a < s1 + N_RUN_INDEL_CLEARANCE
            if near and not _clear_of_edits(draft, a, b):
                continue
            runs.append((a, b))
            break
    return sorted(runs)


def _clear_of_edits(draft: _Draft, a: int, b: int) -> bool:
    far = [c >= b + MIN_SPACING or d + MIN_SPACING <= a for c, d in draft.busy]
    covered = [a <= c and d <= b for c, d in draft.busy]
    gap = N_RUN_INDEL_CLEARANCE
    indel_far = all(c >= b + gap or d + gap <= a for c, d in draft.indels)
    return indel_far and all(f or c for f, c in zip(far, covered, strict=True))


def _nucleotide_edits(draft: _Draft, ctx: _Context) -> list[str]:
    """The draft's edits in reference coordinates, read from its edited spans."""
    edits: list[str] = []
    ref = ctx.genome
    spans: list[list[int]] = []
    for a, b in sorted(draft.busy):  # merged, so that no position is read twice
        if spans and a - 1 <= spans[-1][1]:
            spans[-1][1] = max(spans[-1][1], b + 1)
        else:
            spans.append([max(a - 1, 0), min(b + 1, len(ref))])
    for a, b in spans:
        deleted_from = None
        for p in range(a, min(b, len(ref))):
            base, extra = draft.base[p], draft.ins[p]
            if base == "" and deleted_from is None:
                deleted_from = p
            elif base != "" and deleted_from is not None:
                edits.append(f"del{deleted_from + 1}-{p}")
                deleted_from = None
            if base not in ("", ref[p]):
                edits.append(f"{ref[p]}{p + 1}{base}")
            if extra:
                if deleted_from is not None:  # an insertion right after a deletion
                    edits.append(f"del{deleted_from + 1}-{p + 1}")
                    deleted_from = None
                edits.append(f"ins{p + 1}:{extra}")
        if deleted_from is not None:
            edits.append(f"del{deleted_from + 1}-{min(b, len(ref))}")
    return edits


def _mask_n_runs(
    draft: _Draft, rng: np.random.Generator, ctx: _Context, profile: NoiseProfile, edits: list[str]
) -> tuple[int, ...]:
    """Write N runs into the draft; return the spike residues they touch."""
    for a, b in _place_n_runs(draft, rng, ctx, profile):
        draft.base[a:b] = ["N" if x else "" for x in draft.base[a:b]]
        draft.ins[a:b] = ["N" * len(x) for x in draft.ins[a:b]]
        edits.append(f"Nrun{a + 1}-{b}")
    cols = np.frombuffer(_spike_truth(draft, ctx)[0].encode("ascii"), dtype=np.uint8)
    return tuple(int(r) + 1 for r in np.flatnonzero((cols == ord("N")).reshape(-1, 3).any(axis=1)))


def _trim_and_orient(
    sequence: str, rng: np.random.Generator, profile: NoiseProfile, edits: list[str]
) -> tuple[str, bool]:
    """Trim both ends, then maybe reverse-complement."""
    trim5, trim3 = _draw(rng, profile.trim5), _draw(rng, profile.trim3)
    if trim5:
        edits.append(f"trim5:0-{trim5}")
    if trim3:
        edits.append(f"trim3:{len(sequence) - trim3}-{len(sequence)}")
    sequence = sequence[trim5 : len(sequence) - trim3]
    revcomp = bool(rng.random() < profile.p_reverse_complement)
    if revcomp:
        sequence = reverse_complement(sequence)
        edits.append("revcomp")
    return sequence, revcomp


# --------------------------------------------------------------------------- public API


def simulate_genome(
    label: str,
    rng: np.random.Generator,
    index: int,
    profile: NoiseProfile = NoiseProfile(),
) -> SimulatedGenome:
    """Simulate one genome of class ``label``.

    Parameters
    ----------
    label
        One of :data:`bertgeom.resources.CLASSES`; ``'other'`` carries only S:D614G
        (:data:`OTHER_DEFINING`) and background noise.
    rng
        Source of every random choice.
    index
        Number used in the id (``sim-{label}-{index:05d}``).
    profile
        Noise amounts.

    Returns
    -------
    SimulatedGenome
        The genome and its ground truth.

    Raises
    ------
    InputError
        When ``label`` is not a class.
    """
    if label not in CLASSES:
        raise InputError(f"unknown class {label!r}: expected one of {', '.join(CLASSES)}")
    ctx = _context()
    draft = _Draft(base=list(ctx.genome), ins=[""] * len(ctx.genome))
    carried, dropped = [], []
    for ev in _class_events(label):
        keep = ev.core or rng.random() < profile.p_noncore
        keep = keep and rng.random() >= profile.p_drop_defining
        (carried if keep else dropped).append(ev)
    _plant_defining(draft, carried, rng, ctx)
    defining_calls = set(_spike_calls(draft, ctx).mutations)
    _plant_substitutions(draft, rng, ctx, profile)
    if rng.random() < profile.p_outside_indel:
        _plant_indel(draft, rng, ctx, _draw(rng, profile.outside_indel_length), in_spike=False)
    if rng.random() < profile.p_spike_indel:
        _plant_indel(draft, rng, ctx, 3 * _draw(rng, profile.spike_indel_codons), in_spike=True)
    planted = _spike_calls(draft, ctx).mutations
    edits = _nucleotide_edits(draft, ctx)

    masked = _mask_n_runs(draft, rng, ctx, profile, edits)
    sequence, revcomp = _trim_and_orient(draft.sequence(), rng, profile, edits)
    defining = tuple(m for m in planted if m in defining_calls)
    return SimulatedGenome(
        id=f"sim-{label}-{index:05d}",
        label=label,
        sequence=sequence,
        planted=planted,
        defining=defining,
        background=tuple(m for m in planted if m not in defining_calls),
        nucleotide_edits=tuple(edits),
        reverse_complemented=revcomp,
        masked_residues=masked,
        dropped=tuple(m for ev in dropped for m in ev.mutations),
    )


def simulate_dataset(
    per_class: int | Mapping[str, int],
    seed: int,
    profile: NoiseProfile = NoiseProfile(),
) -> Iterator[SimulatedGenome]:
    """Simulate genomes of every class, class by class in :data:`CLASSES` order.

    Genome ``i`` of class number ``c`` draws from ``np.random.default_rng([seed, c, i])``, so
    it is the same whatever else is simulated.

    Parameters
    ----------
    per_class
        Genomes per class, or class -> count (missing classes get none).
    seed
        Non-negative seed.
    profile
        Noise amounts.

    Returns
    -------
    Iterator of SimulatedGenome
        Made lazily; the arguments are checked at the call.
    """
    if isinstance(per_class, Mapping):
        unknown = sorted(set(per_class) - set(CLASSES))
        if unknown:
            raise InputError(f"unknown classes {unknown}: expected some of {', '.join(CLASSES)}")
        counts = {cls: int(per_class.get(cls, 0)) for cls in CLASSES}
    else:
        counts = dict.fromkeys(CLASSES, int(per_class))
    if seed < 0 or min(counts.values()) < 0:
        raise InputError(f"seed {seed} and genome counts {counts} must not be negative")
    return _generate(counts, seed, profile)  # arguments checked now, genomes made lazily


def _generate(
    counts: dict[str, int], seed: int, profile: NoiseProfile
) -> Iterator[SimulatedGenome]:
    for c, cls in enumerate(CLASSES):
        for i in range(counts[cls]):
            yield simulate_genome(cls, np.random.default_rng([seed, c, i]), i, profile)
