"""Per-genome spike QC: good / mediocre / bad, with reasons.

Rules (thresholds in :class:`QcThresholds`, documented in docs/formats.md). Each reason cites the
limit that decided it: a spike N fraction above both limits is reported against
``max_n_mediocre`` (bad), not ``max_n_good``.

bad
    no alignment to the reference at all (``no alignment to the reference genome``), or an
    alignment that misses the spike (``spike not aligned``: the genome aligns to the reference
    only outside the spike, e.g. when its spike is all N); no spike (``no spike``: the
    alignment jumps over most of the spike, i.e. more than half of its columns are deleted:
    the genome lacks the S gene; no mutations are called); a segment of the spike aligned on
    the opposite strand to the rest (``inverted segment``: an inversion or a misassembly,
    whose bases would otherwise be read as the reference's); the alignment does not reach a spike
    end (partial genome; columns unreached inside the spike count as N); spike N fraction (N
    bases plus unreached columns) above ``max_n_mediocre``; more than ``max_ambiguous_mediocre``
    mixed sites (ambiguous IUPAC codes other than N) in the spike; the spike as read (3,822
    reference columns, minus deleted, plus inserted bases) shorter than ``min_spike_length`` or
    longer than ``max_spike_length``; a genome longer than ``max_genome_length_mediocre``; an
    uncompensated frameshift; a premature stop codon.
mediocre
    spike N fraction above ``max_n_good``; more than ``max_ambiguous_good`` mixed sites; more
    than ``max_indel_good`` bases inserted into the spike in total (``large insertion``), or
    deleted from it (``large deletion``); a genome longer than ``max_genome_length_good``; a
    compensated frameshift (out-of-frame indels adding up to a multiple of 3).
good
    everything else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from bertgeom.genome.mutations import SpikeCalls
from bertgeom.genome.spike import SpikeAlignment

QcStatus = Literal["good", "mediocre", "bad"]

_ACGT_GAP_N = str.maketrans("", "", "ACGT-N")


@dataclass(frozen=True)
class QcThresholds:
    """Configurable QC thresholds (fractions are of the 3,822 spike columns).

    ``max_*_good`` is the largest value still good (above: mediocre), ``max_*_mediocre`` the
    largest still mediocre (above: bad). Real spikes carry indels of at most ~40 nt in total
    (Lambda's 21-nt deletion, BA.1's 9-nt ins214EPE, BA.2.86's 12-nt insertion and 27 nt of
    deletions); the reference genome (Wuhan-Hu-1) is 29,903 nt long.
    """

    max_n_good: float = 0.01
    max_n_mediocre: float = 0.05
    max_ambiguous_good: int = 3
    max_ambiguous_mediocre: int = 10  # Nextclade's mixed-sites threshold, here on the spike
    max_indel_good: int = 60  # nt inserted, and nt deleted, in the spike in total
    min_spike_length: int = 3700
    max_spike_length: int = 3900
    max_genome_length_good: int = 31000
    max_genome_length_mediocre: int = 45000  # ~1.5x the reference


@dataclass(frozen=True)
class QcResult:
    """QC outcome and the counts it was based on."""

    status: QcStatus
    reasons: tuple[str, ...]
    n_count: int  # N in the spike columns, unreached columns included
    n_fraction: float
    ambiguous_count: int  # IUPAC codes other than N
    coverage: float  # fraction of spike columns reached by the alignment
    frameshift: bool
    premature_stop: int | None
    inserted: int = 0  # bases inserted into the spike, in total
    deleted: int = 0  # spike columns deleted
    spike_length: int = 0  # 3,822 - deleted + inserted


def assess(
    spike: SpikeAlignment,
    calls: SpikeCalls,
    thresholds: QcThresholds,
    genome_length: int | None = None,
) -> QcResult:
    """QC of one spike from its extraction and its calls.

    Parameters
    ----------
    spike, calls
        The genome's spike (:func:`~bertgeom.genome.spike.extract_spike`) and its mutation calls.
    thresholds
        The limits of the rules (see the module docstring).
    genome_length
        Length of the whole genome (gaps removed); ``None`` skips the genome-length rule.
    """
    t = thresholds
    n_cols = len(spike.aligned)
    n_count = spike.aligned.count("N")
    n_frac = n_count / n_cols if n_cols else 1.0
    ambiguous = len(spike.aligned.translate(_ACGT_GAP_N))
    coverage = 1.0 - spike.n_uncovered / n_cols if n_cols else 0.0
    deleted = spike.aligned.count("-")
    inserted = sum(len(i.bases) for i in spike.insertions)
    bad: list[str] = []
    mediocre: list[str] = []
    if spike_missing(spike):
        bad.append(
            f"no spike: {deleted} of {n_cols} spike columns deleted (the genome lacks the S "
            f"gene, reference {spike.start}-{spike.start + n_cols - 1})"
        )
        return QcResult(
            "bad", tuple(bad), n_count, n_frac, ambiguous, coverage, False, None, inserted,
            deleted, n_cols - deleted + inserted,
        )  # fmt: skip
    if spike.inverted_ranges:
        ranges = ", ".join(f"{a}-{b}" for a, b in spike.inverted_ranges)
        bad.append(
            f"inverted segment in the spike: reference {ranges} aligns to the opposite strand "
            "(an inversion or a misassembly)"
        )
    complete = _check_coverage(spike, coverage, bad)
    _grade(f"spike N fraction {n_frac:.3f}", n_frac, t.max_n_good, t.max_n_mediocre, bad, mediocre)
    _grade(
        f"{ambiguous} ambiguous bases",
        ambiguous,
        t.max_ambiguous_good,
        t.max_ambiguous_mediocre,
        bad,
        mediocre,
    )
    spike_length = n_cols - deleted + inserted
    if complete and not t.min_spike_length <= spike_length <= t.max_spike_length:
        bad.append(
            f"spike length {spike_length} nt outside {t.min_spike_length}-{t.max_spike_length}"
        )
    if inserted > t.max_indel_good:
        mediocre.append(
            f"large insertion: {inserted} nt inserted in the spike > {t.max_indel_good}"
        )
    if deleted > t.max_indel_good:
        mediocre.append(f"large deletion: {deleted} nt deleted from the spike > {t.max_indel_good}")
    if genome_length is not None:
        _grade(
            f"genome length {genome_length} nt",
            genome_length,
            t.max_genome_length_good,
            t.max_genome_length_mediocre,
            bad,
            mediocre,
        )
    frameshift = bool(calls.frameshifts)
    if frameshift and not calls.compensated:
        bad.append("frameshift: " + ", ".join(calls.frameshifts))
    elif frameshift:
        mediocre.append("compensated frameshift: " + ", ".join(calls.frameshifts))
    if calls.premature_stop is not None:
        bad.append(f"premature stop codon at residue {calls.premature_stop}")
    status: QcStatus = "bad" if bad else "mediocre" if mediocre else "good"
    return QcResult(
        status=status,
        reasons=tuple(bad + mediocre),
        n_count=n_count,
        n_fraction=n_frac,
        ambiguous_count=ambiguous,
        coverage=coverage,
        frameshift=frameshift,
        premature_stop=calls.premature_stop,
        inserted=inserted,
        deleted=deleted,
        spike_length=spike_length,
    )


def spike_missing(spike: SpikeAlignment) -> bool:
    """Whether the alignment jumps over most of the spike (more than half of its columns
    deleted): the genome has no S gene, and its "mutations" would be one giant deletion."""
    return spike.aligned.count("-") > len(spike.aligned) // 2


def _check_coverage(spike: SpikeAlignment, coverage: float, bad: list[str]) -> bool:
    """Add the reason when the alignment misses the spike or a spike end; True when it reaches
    both ends (the spike is complete, though inner columns may be unreached)."""
    if spike.method == "none":
        bad.append("no alignment to the reference genome")
        return False
    if coverage == 0.0:
        bad.append(
            f"spike not aligned: the genome aligns to the reference only outside the spike "
            f"(align_method {spike.method})"
        )
        return False
    first, last = spike.start, spike.start + len(spike.aligned) - 1
    ends = [(a, b) for a, b in spike.uncovered_ranges if a == first or b == last]
    if ends:  # the genome stops inside the spike; inner gaps are counted as N
        ranges = ", ".join(f"{a}-{b}" for a, b in ends)
        bad.append(f"partial genome: spike not covered at {ranges}")
        return False
    return True


def _grade(
    what: str,
    value: float,
    max_good: float,
    max_mediocre: float,
    bad: list[str],
    mediocre: list[str],
) -> None:
    """Add ``what > limit`` to ``bad`` above ``max_mediocre``, else to ``mediocre`` above
    ``max_good``: the reason cites the limit that decided the status."""
    if value > max_mediocre:
        bad.append(f"{what} > {max_mediocre}")
    elif value > max_good:
        mediocre.append(f"{what} > {max_good}")
