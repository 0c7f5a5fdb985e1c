"""Per-genome spike QC: good / mediocre / bad, with reasons.

Rules (thresholds in :class:`QcThresholds`, documented in docs/formats.md):

bad
    no alignment to the reference; the alignment does not reach a spike end (partial genome;
    columns unreached inside the spike count as N); spike N fraction (N bases plus unreached
    columns) above ``max_n_mediocre``; an uncompensated frameshift; a premature stop codon.
mediocre
    spike N fraction above ``max_n_good``; more than ``max_ambiguous_good`` ambiguous IUPAC
    bases (not N); a compensated frameshift (out-of-frame indels adding up to a multiple of 3).
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
    """Configurable QC thresholds (fractions are of the 3,822 spike columns)."""

    max_n_good: float = 0.01
    max_n_mediocre: float = 0.05
    max_ambiguous_good: int = 3


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


def assess(spike: SpikeAlignment, calls: SpikeCalls, thresholds: QcThresholds) -> QcResult:
    """QC of one spike from its extraction and its calls."""
    n_cols = len(spike.aligned)
    n_count = spike.aligned.count("N")
    n_frac = n_count / n_cols if n_cols else 1.0
    ambiguous = len(spike.aligned.translate(_ACGT_GAP_N))
    coverage = 1.0 - spike.n_uncovered / n_cols if n_cols else 0.0
    bad: list[str] = []
    mediocre: list[str] = []
    if spike.method == "none" or coverage == 0.0:
        bad.append("no alignment to the reference spike")
    else:
        first, last = spike.start, spike.start + n_cols - 1
        ends = [(a, b) for a, b in spike.uncovered_ranges if a == first or b == last]
        if ends:  # the genome stops inside the spike; inner gaps are counted as N
            ranges = ", ".join(f"{a}-{b}" for a, b in ends)
            bad.append(f"partial genome: spike not covered at {ranges}")
    if n_frac > thresholds.max_n_mediocre and coverage > 0.0:
        bad.append(f"spike N fraction {n_frac:.3f} > {thresholds.max_n_mediocre}")
    elif n_frac > thresholds.max_n_good:
        mediocre.append(f"spike N fraction {n_frac:.3f} > {thresholds.max_n_good}")
    frameshift = bool(calls.frameshifts)
    if frameshift and not calls.compensated:
        bad.append("frameshift: " + ", ".join(calls.frameshifts))
    elif frameshift:
        mediocre.append("compensated frameshift: " + ", ".join(calls.frameshifts))
    if calls.premature_stop is not None:
        bad.append(f"premature stop codon at residue {calls.premature_stop}")
    if ambiguous > thresholds.max_ambiguous_good:
        mediocre.append(f"{ambiguous} ambiguous bases > {thresholds.max_ambiguous_good}")
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
    )
