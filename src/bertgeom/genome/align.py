"""Alignment of genomes to the reference with minimap2 (through ``mappy``).

This is the only module that imports ``mappy``. Its hits become our own :class:`AlignmentHit`,
in coordinates of the whole reference genome, so nothing downstream knows about mappy.

Strategy (fast path first):

1. *Window*: the reference is indexed only around the spike (``pad`` nt each side) and only the
   part of the genome where the spike is expected (``query_margin`` nt around the reference
   coordinates) is aligned. This covers nearly every genome and is 5-10x faster than a
   whole-genome alignment.
2. *Genome*: when the window hit is not clean (no hit, several hits, reverse strand, or the hit
   does not span the spike, e.g. after a long N run near the spike start or a 5' truncation that
   moves the spike), the whole genome is aligned to the whole reference, both strands.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

#: CIGAR operations used by minimap2 (BAM codes).
CIGAR_MATCH, CIGAR_INS, CIGAR_DEL = 0, 1, 2

AlignMethod = Literal["window", "genome", "none"]

#: The presets minimap2 2.31 (mappy) knows (``mm_set_opt`` in its options.c). mappy ignores an
#: unknown preset silently (it keeps minimap2's defaults), so configs are checked against this.
#: Genome-to-reference alignment wants an ``asm`` preset; ``asm20`` is the default.
MINIMAP2_PRESETS: tuple[str, ...] = (
    "asm5",
    "asm10",
    "asm20",
    "map-ont",
    "map-pb",
    "map-hifi",
    "map-ccs",
    "map10k",
    "map-iclr",
    "map-iclr-prerender",
    "lr:hq",
    "lr:hqae",
    "ava-ont",
    "ava-pb",
    "sr",
    "short",
    "splice",
    "splice:hq",
    "splice:sr",
    "cdna",
)


@dataclass(frozen=True)
class AlignmentHit:
    """One local alignment of a genome to the reference.

    Coordinates are 0-based, half-open. ``r_st``/``r_en`` are on the whole reference genome;
    ``q_st``/``q_en`` are on the genome as given (forward strand, even when ``strand`` is -1).
    The CIGAR walks the reference forward; on strand -1 it pairs with the reverse complement of
    ``genome[q_st:q_en]``.
    """

    r_st: int
    r_en: int
    q_st: int
    q_en: int
    strand: int
    cigar: tuple[tuple[int, int], ...]  # (length, op) with op in {0: M, 1: I, 2: D}
    mapq: int
    is_primary: bool


@dataclass(frozen=True)
class GenomeAlignment:
    """All hits of one genome and how they were obtained."""

    hits: tuple[AlignmentHit, ...]
    method: AlignMethod


class SpikeAligner:
    """Aligns genomes to the reference, window around a region first, whole genome as fallback.

    Parameters
    ----------
    reference
        The reference genome (upper case).
    start, end
        The region of interest, 1-based inclusive (the spike: 21563-25384).
    pad
        Reference bases indexed on each side of the region for the window alignment.
    query_margin
        Genome bases taken on each side of the region's reference coordinates for the window
        alignment; genomes whose spike lies farther away fall back to the whole-genome path.
    preset
        minimap2 preset (``asm20`` tolerates the ~2 % divergence of Omicron spikes).

    Notes
    -----
    mappy index objects cannot be pickled: build one ``SpikeAligner`` per process.
    """

    def __init__(
        self,
        reference: str,
        start: int,
        end: int,
        pad: int = 100,
        query_margin: int = 600,
        preset: str = "asm20",
    ) -> None:
        import mappy  # heavy, and the only place it is imported

        self._mappy = mappy
        self.reference = reference
        self.start, self.end = start, end
        self.pad, self.query_margin = pad, query_margin
        self._w0 = max(0, start - 1 - pad)
        self._w1 = min(len(reference), end + pad)
        self._window = mappy.Aligner(seq=reference[self._w0 : self._w1], preset=preset, best_n=1)
        self._whole = mappy.Aligner(seq=reference, preset=preset)
        if not self._window or not self._whole:  # pragma: no cover - mappy failure
            raise RuntimeError("minimap2 could not index the reference")

    def align(self, genome: str, method: AlignMethod | None = None) -> GenomeAlignment:
        """Align one genome (upper case); ``method`` forces ``window`` or ``genome``."""
        if method != "genome":
            hits = self._align_window(genome)
            if method == "window" or self._is_clean(hits):
                return GenomeAlignment(hits=hits, method="window")
        hits = self._align_whole(genome)
        return GenomeAlignment(hits=hits, method="genome" if hits else "none")

    def _is_clean(self, hits: tuple[AlignmentHit, ...]) -> bool:
        if len(hits) != 1:
            return False
        h = hits[0]
        return h.strand == 1 and h.r_st <= self.start - 1 and h.r_en >= self.end

    def _align_window(self, genome: str) -> tuple[AlignmentHit, ...]:
        q0 = max(0, self.start - 1 - self.query_margin)
        q1 = min(len(genome), self.end + self.query_margin)
        if q1 - q0 < 50:
            return ()
        return tuple(
            AlignmentHit(
                r_st=h.r_st + self._w0,
                r_en=h.r_en + self._w0,
                q_st=h.q_st + q0,
                q_en=h.q_en + q0,
                strand=h.strand,
                cigar=tuple((int(n), int(op)) for n, op in h.cigar),
                mapq=h.mapq,
                is_primary=bool(h.is_primary),
            )
            for h in self._window.map(genome[q0:q1])
        )

    def _align_whole(self, genome: str) -> tuple[AlignmentHit, ...]:
        hits = [
            AlignmentHit(
                r_st=h.r_st,
                r_en=h.r_en,
                q_st=h.q_st,
                q_en=h.q_en,
                strand=h.strand,
                cigar=tuple((int(n), int(op)) for n, op in h.cigar),
                mapq=h.mapq,
                is_primary=bool(h.is_primary),
            )
            for h in self._whole.map(genome)
        ]
        # primary first, then by alignment span: earlier hits win overlapping columns downstream
        hits.sort(key=lambda h: (not h.is_primary, -(h.r_en - h.r_st)))
        return tuple(hits)
