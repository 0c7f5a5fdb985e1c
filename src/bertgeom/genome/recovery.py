"""How often each class's defining spike mutations are called where the genome has data."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from bertgeom.resources.variants import parse_mutation


@dataclass(frozen=True)
class RecoveryRow:
    """Recovery of one defining mutation in the genomes of one class."""

    label: str
    mutation: str
    n_checked: int  # genomes of the class without N at the mutation's codons
    n_called: int  # of those, genomes where the mutation was called

    @property
    def rate(self) -> float:
        """n_called / n_checked (1.0 when nothing could be checked)."""
        return self.n_called / self.n_checked if self.n_checked else 1.0


def mutation_codons(text: str) -> tuple[int, ...]:
    """0-based codon indices a mutation's call depends on (an insertion: both neighbours)."""
    m = parse_mutation(text)
    if m.kind == "ins":
        return (m.position - 1, m.position)
    return (m.position - 1,)


def defining_recovery(
    genomes: Iterable[tuple[str | None, str, Sequence[str]]],
    defining: Mapping[str, Sequence[str]],
) -> list[RecoveryRow]:
    """Recovery rate of each defining mutation per class.

    Parameters
    ----------
    genomes
        (class, spike in reference columns, called mutations) per genome.
    defining
        class -> defining mutations (Nextclade notation).
    """
    codons = {m: mutation_codons(m) for muts in defining.values() for m in muts}
    checked: dict[tuple[str, str], int] = {}
    called: dict[tuple[str, str], int] = {}
    for label, spike, mutations in genomes:
        if label is None:
            continue
        present = set(mutations)
        for m in defining.get(label, ()):
            if any("N" in spike[3 * c : 3 * c + 3] for c in codons[m]):
                continue
            key = (label, m)
            checked[key] = checked.get(key, 0) + 1
            called[key] = called.get(key, 0) + (m in present)
    return [
        RecoveryRow(
            label=c, mutation=m, n_checked=checked.get((c, m), 0), n_called=called.get((c, m), 0)
        )
        for c, muts in defining.items()
        for m in muts
    ]
