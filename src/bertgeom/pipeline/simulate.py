"""``bertgeom simulate``: the embedded, labelled default data set.

Outputs in ``out_dir``: ``genomes.fasta.gz``, ``labels.tsv`` (``seq_id<TAB>class``, ready for
``prepare --labels``), ``truth.tsv`` (per genome: the planted spike mutations, the class-defining
ones, the nucleotide edits and the residues masked by N) and ``manifest.json``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from bertgeom.config import SimulateConfig
from bertgeom.io.fasta import write_fasta
from bertgeom.io.files import write_tsv
from bertgeom.io.manifest import write_manifest
from bertgeom.io.outputs import writing

GENOMES_FILE = "genomes.fasta.gz"
LABELS_FILE = "labels.tsv"
TRUTH_FILE = "truth.tsv"


@dataclass(frozen=True)
class SimulateSummary:
    """Genomes written per class."""

    per_class: dict[str, int]


def run(
    out_dir: str | os.PathLike, config: SimulateConfig, progress: bool = True
) -> SimulateSummary:
    """Simulate ``config.per_class`` genomes of every class into ``out_dir``."""
    with writing(out_dir, stage="simulate") as out:
        return _simulate(out, config, progress)


def _simulate(out: Path, config: SimulateConfig, progress: bool) -> SimulateSummary:
    from bertgeom.genome.simulate import simulate_dataset
    from bertgeom.progress import track
    from bertgeom.resources import CLASSES

    genomes = list(
        track(
            simulate_dataset(config.per_class, seed=config.seed),
            total=config.per_class * len(CLASSES),
            desc="simulate",
            unit="genome",
            enabled=progress,
        )
    )
    write_fasta(((g.id, g.sequence) for g in genomes), out / GENOMES_FILE)
    write_tsv(out / LABELS_FILE, ["seq_id", "class"], ((g.id, g.label) for g in genomes))
    write_tsv(
        out / TRUTH_FILE,
        [
            "seq_id",
            "class",
            "planted",
            "defining",
            "background",
            "nucleotide_edits",
            "masked_residues",
            "reverse_complemented",
        ],
        (
            (
                g.id,
                g.label,
                ",".join(g.planted),
                ",".join(g.defining),
                ",".join(g.background),
                ",".join(g.nucleotide_edits),
                ",".join(map(str, g.masked_residues)),
                int(g.reverse_complemented),
            )
            for g in genomes
        ),
    )
    per_class = {c: sum(1 for g in genomes if g.label == c) for c in CLASSES}
    write_manifest(
        out,
        "simulate",
        [],
        config,
        [GENOMES_FILE, LABELS_FILE, TRUTH_FILE],
        summary={"per_class": per_class},
    )
    return SimulateSummary(per_class=per_class)
