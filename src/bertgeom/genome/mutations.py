"""Amino-acid mutation calling on a spike in reference coordinates (Nextclade notation).

Substitutions ``S:N501Y``, deletions one residue at a time ``S:H69-``, insertions after a residue
``S:214:EPE`` (Nextclade's ``aaInsertions`` notation: gene, the residue the inserted amino acids
follow, the inserted amino acids). The spike is translated codon by codon in reference
coordinates, so a frameshift only blurs the codons it touches; it is reported separately.

In-frame deletions that do not start on a codon boundary (after normalisation) are translated
as Nextclade does: the codons the gap starts in are deleted, and the last codon it touches takes
the bases left before the gap plus its own remaining bases. Delta's 6-nt deletion at
22029-22034 thus reads ``S:E156-``, ``S:F157-``, ``S:R158G``, and Lambda's 21-nt deletion
``S:R246-`` .. ``S:G252-``, ``S:D253N``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bertgeom.genome.sequence import translate_codon

_GAPS = re.compile(r"-+")


@dataclass(frozen=True)
class SpikeCalls:
    """What the translation of one spike found.

    ``protein`` has one character per reference residue (1,274 including the stop): the
    genome's amino acid, ``-`` deleted, ``X`` unknown (N, ambiguity, or a frameshift boundary).
    Frameshifts are described as ``del22030-22031`` / ``ins22204:GA`` (1-based genome
    coordinates); ``compensated`` is True when the out-of-frame indels add up to a multiple of 3.
    """

    mutations: tuple[str, ...]
    protein: str
    frameshifts: tuple[str, ...]
    compensated: bool
    premature_stop: int | None  # 1-based residue of the first stop codon before the last codon
    n_unknown_aa: int


def call_mutations(
    aligned: str,
    insertions: Sequence[tuple[int, str]],
    ref_spike: str,
    code: dict[str, str],
    spike_start: int = 21563,
    gene: str = "S",
) -> SpikeCalls:
    """Call amino-acid mutations of a spike in reference coordinates.

    Parameters
    ----------
    aligned
        Spike columns (same length as ``ref_spike``, a multiple of 3), normalised indels.
    insertions
        (0-based spike column after which, bases), sorted.
    ref_spike
        Reference spike.
    code
        Genetic code, codon -> amino acid.
    spike_start
        1-based genome position of the spike's first base (for frameshift descriptions).
    gene
        Gene prefix of the notation.
    """
    n = len(ref_spike)
    code_key = _code_key(code)
    frameshifts: list[str] = []
    net = 0
    cols: list[str] | None = None
    for m in _GAPS.finditer(aligned):
        s, e = m.start(), m.end()
        length = e - s
        if length % 3:
            frameshifts.append(f"del{s + spike_start}-{e - 1 + spike_start}")
            net += length
        elif s % 3 and e + 3 - s % 3 <= n:
            cols = cols if cols is not None else list(aligned)
            _place_codon_gap(cols, aligned, s, e, ref_spike, code_key)
    for c, bases in insertions:
        if len(bases) % 3:
            frameshifts.append(f"ins{c + spike_start}:{bases}")
            net -= len(bases)
    q = "".join(cols) if cols is not None else aligned
    ref_protein = _translate_ref(ref_spike, code_key)
    protein = _left_align_deletions(_translate(q, ref_spike, code_key), ref_protein)
    inserted: list[tuple[int, str]] = []  # (residue after which, inserted amino acids)
    for c, bases in insertions:
        if len(bases) % 3 == 0:
            k, first, aas = _translate_insertion(q, c, bases, code_key)
            if first is not None:  # the insertion splits codon k: its residue is the merged one
                protein = protein[:k] + first + protein[k + 1 :]
            inserted.append((k + 1 if first is not None else k, aas))
    muts: list[tuple[int, int, str]] = []  # (residue, order, text)
    for i in np.flatnonzero(
        np.frombuffer(protein.encode(), "S1") != np.frombuffer(ref_protein.encode(), "S1")
    ):
        aa = protein[i]
        if aa != "X":
            muts.append((i + 1, 0, f"{gene}:{ref_protein[i]}{i + 1}{aa}"))
    muts.extend((pos, 1, f"{gene}:{pos}:{aas}") for pos, aas in inserted)
    muts.sort()
    stops = [pos for pos, aas in inserted if "*" in aas]
    stop = protein.find("*")
    if 0 <= stop < len(protein) - 1:
        stops.append(stop + 1)
    premature = min(stops) if stops else None
    return SpikeCalls(
        mutations=tuple(t for _, _, t in muts),
        protein=protein,
        frameshifts=tuple(frameshifts),
        compensated=bool(frameshifts) and net % 3 == 0,
        premature_stop=premature,
        n_unknown_aa=protein.count("X"),
    )


def _place_codon_gap(
    cols: list[str],
    aligned: str,
    s: int,
    e: int,
    ref: str,
    code_key: tuple[tuple[str, str], ...],
) -> None:
    """Translate an in-frame deletion ``[s, e)`` that starts inside a codon, in place.

    The bases left over from the codons the gap cuts form one merged codon, placed either at
    the first residue (the rest deleted) or at the last (the rest before it deleted). As
    Nextclade's protein alignment does, the placement where the merged codon keeps the
    reference amino acid wins (Alpha: ``S:H69-``, ``S:V70-``); otherwise the gap goes first
    (Delta: ``S:E156-``, ``S:F157-``, ``S:R158G``).
    """
    length = e - s
    b = s - s % 3  # first codon boundary before the gap
    shift = 3 - s % 3
    first = aligned[b:s] + aligned[e : e + shift]  # merged codon at the first residue
    if translate_codon(first, code_key) == translate_codon(ref[b : b + 3], code_key):
        cols[s : s + shift] = aligned[e : e + shift]
        cols[s + shift : e + shift] = ["-"] * length
    else:
        cols[b + length : e] = aligned[b:s]
        cols[b : b + length] = ["-"] * length


def _left_align_deletions(protein: str, ref_protein: str) -> str:
    """Shift each run of deleted residues left over repeated residues (``YY`` -> ``Y144-``).

    A run ``[s, e)`` moves one residue left while the residue before it is unchanged and equals
    the run's last reference residue: the protein is the same, only the notation moves, as in
    Nextclade's protein alignment (Alpha's deletion in Y144 Y145 is written ``S:Y144-``).
    """
    if "-" not in protein:
        return protein
    p = list(protein)
    for m in _GAPS.finditer(protein):
        s, e = m.start(), m.end()
        while s > 0 and p[s - 1] == ref_protein[s - 1] == ref_protein[e - 1]:
            p[e - 1], p[s - 1] = p[s - 1], "-"
            s, e = s - 1, e - 1
    return "".join(p)


def _translate(q: str, ref: str, code_key: tuple[tuple[str, str], ...]) -> str:
    """Translate in reference codons; only codons that differ from the reference are looked up."""
    ref_protein = _translate_ref(ref, code_key)
    qa = np.frombuffer(q.encode("ascii"), dtype="S1").reshape(-1, 3)
    ra = np.frombuffer(ref.encode("ascii"), dtype="S1").reshape(-1, 3)
    diff = np.flatnonzero((qa != ra).any(axis=1))
    out = bytearray(ref_protein.encode("ascii"))
    for i in diff:
        codon = q[3 * i : 3 * i + 3]
        out[i] = ord("-") if codon == "---" else ord(translate_codon(codon, code_key))
    return out.decode("ascii")


_REF_CACHE: dict[tuple[str, int], str] = {}
_CODE_KEYS: dict[int, tuple[tuple[str, str], ...]] = {}


def _code_key(code: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """Hashable form of a genetic code (cached per dict object)."""
    key = _CODE_KEYS.get(id(code))
    if key is None or dict(key) != code:
        key = _CODE_KEYS[id(code)] = tuple(sorted(code.items()))
    return key


def _translate_ref(ref: str, code_key: tuple[tuple[str, str], ...]) -> str:
    key = (ref, hash(code_key))
    if key not in _REF_CACHE:
        _REF_CACHE[key] = "".join(
            translate_codon(ref[i : i + 3], code_key) for i in range(0, len(ref) - 2, 3)
        )
    return _REF_CACHE[key]


def _translate_insertion(
    q: str, c: int, bases: str, code_key: tuple[tuple[str, str], ...]
) -> tuple[int, str | None, str]:
    """An in-frame insertion after column ``c``.

    Returns (k, first, aas): at a codon boundary, ``k`` is the residue it follows (1-based),
    ``first`` None and ``aas`` the inserted residues; inside codon ``k`` (0-based), ``first`` is
    the residue that codon now codes (its bases before the insertion plus the first inserted
    ones) and ``aas`` the residues that follow it, written as inserted after residue k + 1.
    """
    if (c + 1) % 3 == 0:
        aas = "".join(translate_codon(bases[i : i + 3], code_key) for i in range(0, len(bases), 3))
        return (c + 1) // 3, None, aas
    k = c // 3  # codon that the insertion splits
    merged = q[3 * k : c + 1] + bases + q[c + 1 : 3 * k + 3]
    aas = "".join(translate_codon(merged[i : i + 3], code_key) for i in range(0, len(merged), 3))
    return k, aas[0], aas[1:]
