"""Spike extraction in reference coordinates from alignment hits, and indel normalisation.

The spike of a genome is represented as

- ``aligned``: one character per reference column of the spike (3,822): the genome's base (upper
  case, IUPAC codes kept), ``-`` where the genome deletes the reference base, ``N`` where the
  genome has N or the alignment does not reach;
- ``insertions``: bases the genome has between two reference columns, as (reference position
  after which, bases);
- ``raw``: the spike as read: the genome's bases from the first to the last spike column the
  alignment reaches, insertions included, deletions removed (unreached inner columns stay ``N``).

Indels are normalised so that equivalent placements of the same event (in repeats) give the
same columns in every genome: among the placements that keep every moved base matching the
reference, an in-frame indel goes to the leftmost codon boundary when one is reachable, any
other indel to the leftmost placement (as VCF normalisation does).
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

from bertgeom.genome.align import CIGAR_INS, CIGAR_MATCH, GenomeAlignment
from bertgeom.genome.sequence import reverse_complement

_GAPS = re.compile(r"-+")


@dataclass(frozen=True)
class Insertion:
    """Bases inserted after reference ``position`` (1-based, whole-genome coordinates)."""

    position: int
    bases: str

    def __str__(self) -> str:  # Nextclade's `insertions` notation: 22204:GAGCCAGAA
        return f"{self.position}:{self.bases}"


@dataclass(frozen=True)
class SpikeAlignment:
    """A genome's spike in reference coordinates (see the module docstring)."""

    aligned: str
    insertions: tuple[Insertion, ...]
    raw: str
    n_uncovered: int  # spike columns the alignment does not reach
    uncovered_ranges: tuple[tuple[int, int], ...]  # 1-based inclusive genome coordinates
    strand: int  # +1 / -1 of the hit covering most of the spike; 0 when none
    method: str  # "window", "genome" or "none"
    start: int = 21563  # 1-based genome position of the first spike column
    #: 1-based inclusive reference ranges of spike columns filled by hits on the strand
    #: opposite to ``strand``: a segment inverted relative to the rest of the spike
    inverted_ranges: tuple[tuple[int, int], ...] = ()


def extract_spike(
    genome: str, alignment: GenomeAlignment, ref_spike: str, spike_start: int
) -> SpikeAlignment:
    """Project a genome's alignment hits onto the spike columns of the reference.

    Parameters
    ----------
    genome
        The genome, upper case.
    alignment
        Its hits on the whole reference (earlier hits win columns covered twice).
    ref_spike
        The reference spike (3,822 nt).
    spike_start
        1-based reference position of the spike's first base (21563).
    """
    n = len(ref_spike)
    s0, s1 = spike_start - 1, spike_start - 1 + n
    cols = bytearray(b"N" * n)
    owner = bytearray(n)  # 1 + index of the hit that filled each column, 0 = unreached
    insertions: list[tuple[int, str]] = []  # (spike column after which, bases)
    strand_cover: dict[int, int] = {}
    rc: str | None = None
    for idx, hit in enumerate(alignment.hits, start=1):
        if hit.strand == 1:
            q, qi = genome, hit.q_st
        else:
            rc = rc if rc is not None else reverse_complement(genome)
            q, qi = rc, len(genome) - hit.q_en
        r = hit.r_st
        for length, op in hit.cigar:
            if op == CIGAR_INS:
                c = r - 1 - s0
                if 0 <= c < n - 1 and owner[c] == idx:
                    insertions.append((c, q[qi : qi + length]))
                qi += length
                continue
            a, b = max(r, s0), min(r + length, s1)
            if a < b:
                if op == CIGAR_MATCH:
                    seg = q[qi + a - r : qi + b - r].encode("ascii")
                else:
                    seg = b"-" * (b - a)
                _fill(cols, owner, a - s0, seg, idx)
                strand_cover[hit.strand] = strand_cover.get(hit.strand, 0) + (b - a)
            r += length
            if op == CIGAR_MATCH:
                qi += length
    if len(alignment.hits) > 1:
        _fill_between_hits(cols, owner, genome, alignment, s0)
    aligned = cols.decode("ascii")
    aligned, insertions = normalize_indels(aligned, insertions, ref_spike)
    uncovered = _unreached(owner)
    strand = max(strand_cover, key=strand_cover.__getitem__) if strand_cover else 0
    inverted = _inverted(owner, [h.strand for h in alignment.hits], strand)
    return SpikeAlignment(
        aligned=aligned,
        insertions=tuple(Insertion(c + spike_start, b) for c, b in insertions),
        raw=_raw(aligned, insertions, owner),
        n_uncovered=owner.count(0),
        uncovered_ranges=tuple((a + spike_start, b + spike_start - 1) for a, b in uncovered),
        strand=strand,
        method=alignment.method,
        start=spike_start,
        inverted_ranges=tuple((a + spike_start, b + spike_start - 1) for a, b in inverted),
    )


def _inverted(owner: bytearray, strands: list[int], strand: int) -> list[tuple[int, int]]:
    """Half-open column ranges filled by hits on the strand opposite to ``strand`` (``owner``
    holds 1 + the index of the hit that filled each column)."""
    if len(set(strands)) < 2:
        return []
    other = bytes(i + 1 for i, s in enumerate(strands) if s != strand)
    marks = owner.translate(bytes(int(b in other) for b in range(256)))
    return [m.span() for m in re.finditer(rb"\x01+", marks)]


def _fill_between_hits(
    cols: bytearray, owner: bytearray, genome: str, alignment: GenomeAlignment, s0: int
) -> None:
    """Fill the reference gap between two consecutive hits on one strand when the genome has
    exactly as many bases there (a colinear gap: typically a long N run, which ends minimap2's
    alignment, with a short island of sequence inside it)."""
    hits = sorted(alignment.hits, key=lambda h: h.r_st)
    rc: str | None = None
    for h1, h2 in itertools.pairwise(hits):
        if h1.strand != h2.strand or h2.r_st <= h1.r_en:
            continue
        if h1.strand == 1:
            q, qe1, qs2 = genome, h1.q_en, h2.q_st
        else:
            rc = rc if rc is not None else reverse_complement(genome)
            q, qe1, qs2 = rc, len(genome) - h1.q_st, len(genome) - h2.q_en
        if qs2 - qe1 != h2.r_st - h1.r_en:
            continue
        a, b = max(h1.r_en, s0), min(h2.r_st, s0 + len(cols))
        if a < b:
            _fill(cols, owner, a - s0, q[qe1 + a - h1.r_en : qe1 + b - h1.r_en].encode(), 255)


def _fill(cols: bytearray, owner: bytearray, start: int, seg: bytes, idx: int) -> None:
    end = start + len(seg)
    if owner.count(0, start, end) == end - start:
        cols[start:end] = seg
        owner[start:end] = bytes([idx]) * len(seg)
        return
    for i, ch in enumerate(seg, start=start):  # overlapping hits: rare, keep the first
        if owner[i] == 0:
            cols[i] = ch
            owner[i] = idx


_UNREACHED = re.compile(rb"\x00+")
_REACHED = re.compile(rb"[^\x00]")


def _unreached(owner: bytearray) -> list[tuple[int, int]]:
    """Half-open column ranges that no hit reaches."""
    if owner.find(0) < 0:
        return []
    return [m.span() for m in _UNREACHED.finditer(owner)]


def _raw(aligned: str, insertions: list[tuple[int, str]], owner: bytearray) -> str:
    if owner[0] and owner[-1]:
        first, last = 0, len(owner) - 1
    else:
        m = _REACHED.search(owner)
        if m is None:
            return ""
        first = m.start()
        last = len(owner) - 1 - _REACHED.search(owner[::-1]).start()
    pieces: list[str] = []
    prev = first
    for c, bases in sorted(insertions):
        if first <= c < last:
            pieces.append(aligned[prev : c + 1])
            pieces.append(bases)
            prev = c + 1
    pieces.append(aligned[prev : last + 1])
    return "".join(pieces).replace("-", "")


def normalize_indels(
    aligned: str, insertions: list[tuple[int, str]], ref: str
) -> tuple[str, list[tuple[int, str]]]:
    """Move each indel to its canonical placement among equivalent ones.

    A placement is equivalent when the query's bases are unchanged and every base that moves
    matches the reference at both its old and new column. In-frame indels (length a multiple of
    3) go to the leftmost reachable codon boundary, if any; all others to the leftmost placement.

    Parameters
    ----------
    aligned
        Spike columns (``-`` for deletions).
    insertions
        (spike column after which, bases), 0-based columns.
    ref
        Reference spike, same length as ``aligned``.
    """
    if "-" in aligned:
        for m in list(_GAPS.finditer(aligned)):
            aligned = _place_deletion(aligned, m.start(), m.end(), ref)
    out = [_place_insertion(aligned, c, b, ref) for c, b in insertions]
    return aligned, sorted(out)


def _place_deletion(aligned: str, s: int, e: int, ref: str) -> str:
    n, length = len(aligned), e - s
    if s == 0 or e == n:  # touches the spike's end: no anchor on one side
        return aligned
    lo = s
    while lo > 0 and aligned[lo - 1] == ref[lo - 1] == ref[lo - 1 + length]:
        lo -= 1
    hi = s
    while hi + length < n and aligned[hi + length] == ref[hi + length] == ref[hi]:
        hi += 1
    if lo == hi:
        return aligned
    target = lo
    if length % 3 == 0:
        target = next((p for p in range(lo, hi + 1) if p % 3 == 0), lo)
    if target == s:
        return aligned
    bases = aligned[lo : hi + length].replace("-", "")
    k = target - lo
    return aligned[:lo] + bases[:k] + "-" * length + bases[k:] + aligned[hi + length :]


def _place_insertion(aligned: str, c: int, bases: str, ref: str) -> tuple[int, str]:
    """Canonical anchor column for bases inserted after column ``c``."""
    n, length = len(aligned), len(bases)
    seq = bases
    # shift left while the last inserted base matches the anchor column (both reference bases)
    lo_c, lo_seq = c, seq
    while lo_c > 0 and lo_seq[-1] == aligned[lo_c] == ref[lo_c]:
        lo_seq = aligned[lo_c] + lo_seq[:-1]
        lo_c -= 1
    candidates = [(lo_c, lo_seq)]
    cur_c, cur_seq = lo_c, lo_seq
    while cur_c + 1 < n - 1 and cur_seq[0] == aligned[cur_c + 1] == ref[cur_c + 1]:
        cur_seq = cur_seq[1:] + aligned[cur_c + 1]
        cur_c += 1
        candidates.append((cur_c, cur_seq))
    if length % 3 == 0:
        for cand in candidates:
            if (cand[0] + 1) % 3 == 0:
                return cand
    return candidates[0]
