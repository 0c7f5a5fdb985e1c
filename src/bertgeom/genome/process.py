"""One genome in, its spike in reference coordinates, mutation calls and QC out."""

from __future__ import annotations

from dataclasses import dataclass, replace

from bertgeom.genome.align import GenomeAlignment, SpikeAligner
from bertgeom.genome.mutations import SpikeCalls, call_mutations
from bertgeom.genome.qc import QcResult, QcThresholds, assess, spike_missing
from bertgeom.genome.spike import SpikeAlignment, extract_spike
from bertgeom.resources import genetic_code, reference_genome, spike_coordinates, spike_reference


@dataclass(frozen=True)
class SpikeResult:
    """Everything ``prepare`` records about one genome."""

    id: str
    genome_length: int
    spike: SpikeAlignment
    calls: SpikeCalls
    qc: QcResult


class SpikeProcessor:
    """Aligns genomes and extracts, calls and QCs their spike (one instance per process).

    Parameters
    ----------
    thresholds
        QC thresholds.
    pad, query_margin, preset
        Passed to :class:`~bertgeom.genome.align.SpikeAligner`.
    """

    def __init__(
        self,
        thresholds: QcThresholds | None = None,
        pad: int = 100,
        query_margin: int = 600,
        preset: str = "asm20",
    ) -> None:
        coords = spike_coordinates()
        self.start = coords.start
        self.ref_spike = spike_reference()
        self.code = genetic_code()
        self.thresholds = thresholds or QcThresholds()
        self.aligner = SpikeAligner(
            reference_genome(),
            coords.start,
            coords.end,
            pad=pad,
            query_margin=query_margin,
            preset=preset,
        )

    def process(self, genome_id: str, sequence: str, method: str | None = None) -> SpikeResult:
        """Process one genome (upper-case sequence; ``method`` forces the alignment path)."""
        if len(sequence) < 50:
            alignment = GenomeAlignment(hits=(), method="none")
        else:
            alignment = self.aligner.align(sequence, method=method)  # type: ignore[arg-type]
        spike = extract_spike(sequence, alignment, self.ref_spike, self.start)
        calls = call_mutations(
            spike.aligned,
            [(i.position - self.start, i.bases) for i in spike.insertions],
            self.ref_spike,
            self.code,
            spike_start=self.start,
        )
        if spike_missing(spike):  # no S gene: no mutation calls, no frameshift
            calls = replace(
                calls, mutations=(), frameshifts=(), compensated=False, premature_stop=None
            )
        return SpikeResult(
            id=genome_id,
            genome_length=len(sequence),
            spike=spike,
            calls=calls,
            qc=assess(spike, calls, self.thresholds, genome_length=len(sequence)),
        )
