"""Plain nucleotide sequence helpers (IUPAC aware)."""

from __future__ import annotations

from functools import cache
from itertools import product

#: IUPAC nucleotide codes -> the bases they stand for.
IUPAC: dict[str, str] = {
    "A": "A",
    "C": "C",
    "G": "G",
    "T": "T",
    "U": "T",
    "R": "AG",
    "Y": "CT",
    "S": "CG",
    "W": "AT",
    "K": "GT",
    "M": "AC",
    "B": "CGT",
    "D": "AGT",
    "H": "ACT",
    "V": "ACG",
    "N": "ACGT",
}

_COMPLEMENT = str.maketrans(
    "ACGTURYSWKMBDHVNacgturyswkmbdhvn-", "TGCAAYRSWMKVHDBNtgcaayrswmkvhdbn-"
)


def reverse_complement(seq: str) -> str:
    """Reverse complement of an IUPAC nucleotide sequence (``-`` kept)."""
    return seq.translate(_COMPLEMENT)[::-1]


@cache
def translate_codon(codon: str, code: tuple[tuple[str, str], ...]) -> str:
    """One-letter amino acid of a codon, resolving IUPAC codes.

    Returns the amino acid when every base combination the codon allows gives the same one,
    and ``X`` otherwise (also for gaps or unknown letters).
    """
    table = dict(code)
    if codon in table:
        return table[codon]
    try:
        options = [IUPAC[b] for b in codon]
    except KeyError:
        return "X"
    aas = {table["".join(p)] for p in product(*options)}
    return aas.pop() if len(aas) == 1 else "X"
