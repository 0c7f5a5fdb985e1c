"""Constellation support of a call: a class's defining spike mutations in one genome.

As pangolin's scorpio does for its constellations, a call of class ``c`` is checked against
``c``'s defining spike mutations (the ``core`` rows of ``resources/defining_mutations.tsv``,
the project's own table): among the defining sites the genome covers (codons without N or an
ambiguity code), ``support`` counts those where it carries the defining allele and
``conflict`` those where it carries the reference or another allele. ``other`` has no defining
mutations; for it, :func:`best_constellation` says which named class's constellation a genome
carries best.

The same sites give the training's hard negatives (:func:`defining_events`,
:func:`transplant`): an ``other`` spike that receives one to three defining changes of a class,
copied column for column from a real genome of that class, stays ``other``.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from functools import cache

from bertgeom.resources.variants import Mutation, defining_mutations, parse_mutation

_COVERED = frozenset("ACGT-")
#: Carried by nearly every genome since mid-2020, "other" included: never a sign of a class.
UBIQUITOUS = frozenset({"S:D614G"})


@dataclass(frozen=True)
class Support:
    """Defining sites of one class in one genome.

    ``total`` sites define the class; ``covered`` of them are readable in the genome;
    ``support`` carry the defining allele, ``conflict`` another one (``support + conflict ==
    covered``).
    """

    support: int
    conflict: int
    covered: int
    total: int

    @property
    def fraction(self) -> float:
        """``support / covered`` (0.0 when no site is covered)."""
        return self.support / self.covered if self.covered else 0.0


@cache
def class_sites(cls: str) -> tuple[Mutation, ...]:
    """The core defining spike mutations of ``cls`` (``()`` for ``other``)."""
    return tuple(parse_mutation(m) for m in defining_mutations(core_only=True).get(cls, ()))


def codon_covered(spike: str, residue: int) -> bool:
    """True when the codon of 1-based ``residue`` in an aligned spike has no N or ambiguity."""
    codon = spike[3 * (residue - 1) : 3 * residue]
    return len(codon) == 3 and set(codon) <= _COVERED


def site_covered(spike: str, mutation: Mutation) -> bool:
    """A substitution or deletion: its codon is covered; an insertion after residue p: the
    codons of p and p + 1 are."""
    if mutation.kind == "ins":
        return codon_covered(spike, mutation.position) and codon_covered(
            spike, mutation.position + 1
        )
    return codon_covered(spike, mutation.position)


def constellation_support(mutations: Collection[str], spike: str, cls: str) -> Support:
    """Support and conflict of class ``cls`` in a genome.

    Parameters
    ----------
    mutations
        The genome's spike mutations in Nextclade notation (``prepare``'s ``mutations``).
    spike
        Its aligned spike (3,822 reference columns, ``N`` missing).
    cls
        The class whose core defining mutations are checked.
    """
    sites = class_sites(cls)
    carried = set(mutations)
    support = conflict = 0
    for m in sites:
        if not site_covered(spike, m):
            continue
        if str(m) in carried:
            support += 1
        else:
            conflict += 1
    return Support(support, conflict, support + conflict, len(sites))


def best_constellation(
    mutations: Collection[str], spike: str, classes: Sequence[str]
) -> tuple[str, Support] | None:
    """The named class (not ``other``) whose constellation ``mutations`` support best: highest
    fraction, then most sites carried; None when ``classes`` has no named class."""
    scored = [(c, constellation_support(mutations, spike, c)) for c in classes if class_sites(c)]
    if not scored:
        return None
    return max(scored, key=lambda cs: (cs[1].fraction, cs[1].support))


@cache
def defining_events(cls: str) -> tuple[tuple[Mutation, ...], ...]:
    """``cls``'s core defining substitutions and deletions grouped into events: mutations at
    consecutive residues form one (Delta's ``E156-, F157-, R158G``, Alpha's ``H69-, V70-``);
    insertions (not columns of the aligned spike) and :data:`UBIQUITOUS` ones are left out."""
    sites = sorted(
        (m for m in class_sites(cls) if m.kind != "ins" and str(m) not in UBIQUITOUS),
        key=lambda m: m.position,
    )
    events: list[list[Mutation]] = []
    for m in sites:
        if events and m.position <= events[-1][-1].position + 1:
            events[-1].append(m)
        else:
            events.append([m])
    return tuple(tuple(e) for e in events)


def event_columns(event: Sequence[Mutation]) -> tuple[int, int]:
    """The aligned-spike columns ``[start, end)`` of an event's codons and one codon on either
    side: a deletion that does not start on a codon boundary (Alpha's 21765-21770, columns
    202-207) reaches into the codon before."""
    first = min(m.position for m in event)
    last = max(m.position for m in event)
    return 3 * max(first - 2, 0), 3 * (last + 1)


def carries_event(mutations: Collection[str], spike: str, event: Sequence[Mutation]) -> bool:
    """The genome carries every mutation of ``event`` and its columns
    (:func:`event_columns`) hold no N or ambiguity code."""
    carried = set(mutations)
    a, b = event_columns(event)
    return all(str(m) in carried for m in event) and set(spike[a:b]) <= _COVERED


def transplant(background: str, donor: str, event: Sequence[Mutation]) -> str:
    """``background`` with the columns of ``event`` (:func:`event_columns`) copied from
    ``donor`` (two aligned spikes of equal length): the donor's exact bases, deletions
    included."""
    a, b = event_columns(event)
    return background[:a] + donor[a:b] + background[b:]
