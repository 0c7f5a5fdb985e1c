"""Package data: the reference genome, spike coordinates, protein domains, genetic code, the
lineage -> class table, each variant's defining spike mutations, and English sentences for
``bertgeom analyze-encoder``.

Every loader is cached: resources are read once per process.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import cache
from importlib import resources as _res
from pathlib import Path

#: The eight variant classes, in the fixed order used for label ids everywhere.
CLASSES: tuple[str, ...] = ("alpha", "beta", "gamma", "delta", "omicron", "lambda", "mu", "other")


@dataclass(frozen=True)
class Domain:
    """A spike protein domain in amino acids (1-based, both ends inclusive)."""

    name: str
    description: str
    start: int
    end: int


@dataclass(frozen=True)
class SpikeCoordinates:
    """The spike gene on the reference genome (1-based, both ends inclusive)."""

    start: int
    end: int
    reference: str

    @property
    def length(self) -> int:
        """Number of nucleotides (3,822)."""
        return self.end - self.start + 1

    @property
    def n_codons(self) -> int:
        """Number of codons including the stop codon (1,274)."""
        return self.length // 3


def english_sentences() -> Path:
    """The shipped English sentences (``sentences_en.tsv``: 300 lines ``sentence<TAB>topic``
    in four topics, written for this project, MIT licence; see the file's header), an input of
    ``bertgeom analyze-encoder``."""
    return Path(str(_res.files(__package__) / "sentences_en.tsv"))


def _text(name: str) -> str:
    return (_res.files(__package__) / name).read_text(encoding="utf-8")


@cache
def _spike_toml() -> dict:
    return tomllib.loads(_text("spike.toml"))


@cache
def reference_genome() -> str:
    """The Wuhan-Hu-1 genome (MN908947.3, 29,903 nt), upper case."""
    lines = _text("reference.fasta").splitlines()
    return "".join(line.strip() for line in lines[1:]).upper()


@cache
def spike_coordinates() -> SpikeCoordinates:
    """Spike gene coordinates on the reference (21563-25384)."""
    s = _spike_toml()["spike"]
    return SpikeCoordinates(start=int(s["start"]), end=int(s["end"]), reference=str(s["reference"]))


@cache
def spike_reference() -> str:
    """The reference spike gene, 3,822 nt, in reference coordinates."""
    c = spike_coordinates()
    return reference_genome()[c.start - 1 : c.end]


@cache
def protein_domains() -> tuple[Domain, ...]:
    """Spike protein domains (science.md §1), in file order."""
    return tuple(
        Domain(name=d["name"], description=d["description"], start=d["start"], end=d["end"])
        for d in _spike_toml()["domain"]
    )


def _tsv_rows(name: str) -> list[list[str]]:
    rows = [line.split("\t") for line in _text(name).splitlines() if line and line[0] != "#"]
    return rows[1:]  # drop the header


@cache
def genetic_code() -> dict[str, str]:
    """Codon -> one-letter amino acid (standard code, ``*`` = stop)."""
    return {codon: aa for codon, aa in _tsv_rows("genetic_code.tsv")}
