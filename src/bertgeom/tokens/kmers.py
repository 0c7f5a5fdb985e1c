"""Vectorised k-mer extraction: spikes -> integer k-mer codes, no Python loop per token.

Each base is a 3-bit symbol read straight off its ASCII byte, ``(byte >> 1) & 7``: A/a 0,
C/c 1, T/t 2, G/g 3, ``-`` 6 (``_`` too, another gap); N and every other byte (IUPAC
ambiguity codes, non-ASCII) are *unknown*, symbol 7, and decode as N. A k-mer of up to 21
bases is one int64 code, ``code = sum(symbol[p + j] << 3 * j for j < k)``, exact and decodable
with :func:`decode_kmer`.

Codes are built from *units* of ``g = gcd(k, stride)`` symbols (with k=12, stride 9: codons):
each unit's code is computed once, and a k-mer is ``k / g`` consecutive units starting every
``stride / g`` units. Every step is a whole-array numpy operation on a block of spikes.

Two modes:

``aligned`` (default)
    k-mers of the 3,822-column spike in reference coordinates (deletions ``-`` inside), padded
    with N at the end so the last k-mer reaches the last column. Token ``t`` (0-based, [CLS] not
    counted) always covers spike nucleotides ``[t*stride, t*stride + k)`` and amino acids
    ``t*stride//3 + 1 .. (t*stride + k - 1)//3 + 1``: with k=12, stride=9, 425 tokens.
``raw``
    the research code's way: the spike as read (insertions in, deletions out) padded with N to a
    multiple of k, then cut with the same k and stride; positions drift after indels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from math import gcd
from typing import Literal

import numpy as np

TokenMode = Literal["aligned", "raw"]

#: Symbols in code order (3 bits each): code ``c`` decodes as ``SYMBOLS[c]``.
SYMBOLS = "ACTG??-N"
GAP_SYMBOL, UNKNOWN_SYMBOL = 6, 7
_KNOWN = tuple(ord(c) for c in "acgt")  # compared with byte | 0x20 (case-insensitive)
MAX_K = 21  # 21 * 3 = 63 bits
_CHUNK = 128  # spikes per vectorised block: keeps the temporaries in cache


@dataclass(frozen=True)
class KmerSpec:
    """k-mer length, stride and mode (the tokenization of a model)."""

    k: int = 12
    stride: int = 9
    mode: TokenMode = "aligned"

    def __post_init__(self) -> None:
        if not 1 <= self.k <= MAX_K:
            raise ValueError(f"k must be in 1..{MAX_K}, got {self.k}")
        if not self.stride >= 1:
            raise ValueError(f"stride must be >= 1, got {self.stride}")
        if self.mode not in ("aligned", "raw"):
            raise ValueError(f"mode must be aligned or raw, got {self.mode!r}")

    def padded_length(self, length: int) -> int:
        """Length after N padding: a multiple of k (raw) or the last window complete (aligned)."""
        if self.mode == "raw":
            length = -(-length // self.k) * self.k
        if length <= self.k:
            return self.k
        return self.k + -(-(length - self.k) // self.stride) * self.stride

    def n_tokens(self, length: int) -> int:
        """k-mers of a sequence of ``length`` bases (before [CLS]/[SEP])."""
        return (self.padded_length(length) - self.k) // self.stride + 1


def symbols(seqs: Sequence[str], total: int, length: int | None = None) -> np.ndarray:
    """(batch, total) uint8 symbols; rows cut or N-padded to ``length`` (default: the longest
    row), then N-padded to ``total`` columns."""
    base = length if length is not None else max((len(x) for x in seqs), default=0)
    if not all(len(x) == base for x in seqs):
        seqs = [x[:base] + "N" * (base - len(x)) for x in seqs]
    out = np.full((len(seqs), total), UNKNOWN_SYMBOL, dtype=np.uint8)
    if base == 0 or not seqs:
        return out
    raw = np.frombuffer("".join(seqs).encode("ascii", "replace"), dtype=np.uint8)
    raw = raw.reshape(len(seqs), base)
    low = raw | 0x20
    known = raw == ord("-")
    for c in _KNOWN:
        known |= low == c
    sym = (raw >> 1) & 7
    np.copyto(sym, np.uint8(UNKNOWN_SYMBOL), where=~known)
    np.copyto(sym, np.uint8(GAP_SYMBOL), where=raw == ord("_"))  # '_' is a gap too
    out[:, :base] = sym
    return out


def kmer_codes(seqs: Sequence[str], spec: KmerSpec, length: int | None = None) -> np.ndarray:
    """k-mer codes of a batch of sequences: (batch, n_tokens) int64.

    Sequences are N-padded to a common length first: ``length`` if given (aligned mode: the
    3,822 spike columns), else the longest sequence of the batch, then to ``spec``'s padding.
    Symbol ``j`` of a k-mer sits at bits ``3j .. 3j+2`` of its code.
    """
    return kmer_codes_and_unknown(seqs, spec, length)[0]


def kmer_codes_and_unknown(
    seqs: Sequence[str], spec: KmerSpec, length: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """k-mer codes (batch, n_tokens) and whether each k-mer holds N or an ambiguity code."""
    base_len = length if length is not None else max((len(x) for x in seqs), default=0)
    total = spec.padded_length(base_len)
    n_tok = (total - spec.k) // spec.stride + 1
    codes = np.empty((len(seqs), n_tok), dtype=np.int64)
    unknown = np.empty((len(seqs), n_tok), dtype=bool)
    for a in range(0, len(seqs), _CHUNK):
        block = seqs[a : a + _CHUNK]
        c, u = _codes_block(symbols(block, total, base_len), n_tok, spec)
        codes[a : a + len(block)] = c
        unknown[a : a + len(block)] = u
    return codes, unknown


def _codes_block(sym: np.ndarray, n_tok: int, spec: KmerSpec) -> tuple[np.ndarray, np.ndarray]:
    """Codes and unknown flags of a (m, total) symbol block, through units of gcd(k, stride)
    symbols (``total`` is a multiple of the unit by construction of the padding)."""
    m, total = sym.shape
    g = gcd(spec.k, spec.stride)
    bits = 3 * g
    unit_t = np.uint16 if bits <= 16 else np.uint32 if bits <= 32 else np.uint64
    by_unit = sym.reshape(m, total // g, g)
    unit = by_unit[:, :, 0].astype(unit_t)
    for i in range(1, g):
        unit |= by_unit[:, :, i].astype(unit_t) << unit_t(3 * i)
    step = spec.stride // g
    span = step * (n_tok - 1) + 1
    code = unit[:, 0:span:step].astype(np.uint64)
    for r in range(1, spec.k // g):
        code |= unit[:, r : r + span : step].astype(np.uint64) << np.uint64(bits * r)
    return code.view(np.int64), _unknown(code, spec.k)


def _unknown(code: np.ndarray, k: int) -> np.ndarray:
    """Whether any 3-bit symbol of each uint64 code is 7 (all three bits set)."""
    low_bits = np.uint64(int("001" * k, 2))
    both = code & (code >> np.uint64(1))
    both &= code >> np.uint64(2)
    both &= low_bits
    return both != 0


def has_unknown(codes: np.ndarray, k: int) -> np.ndarray:
    """True where a k-mer code contains N or an ambiguity code (same shape as ``codes``)."""
    codes = np.asarray(codes, dtype=np.int64)
    flat = np.ascontiguousarray(codes.reshape(-1)).view(np.uint64)
    return _unknown(flat, k).reshape(codes.shape)


def decode_kmer(code: int, k: int) -> str:
    """The k-mer string of a code (N and ambiguity codes both come back as ``N``)."""
    return "".join(SYMBOLS[(code >> (3 * j)) & 7] for j in range(k))


def encode_kmer(kmer: str) -> int:
    """The code of one k-mer string (symbol j at bits 3j..3j+2)."""

    def symbol(ch: str) -> int:
        if ch == "_":
            return GAP_SYMBOL
        return (ord(ch) >> 1) & 7 if ch in "ACGTacgt-" else UNKNOWN_SYMBOL

    return sum(symbol(ch) << (3 * j) for j, ch in enumerate(kmer))


def kmers_reference(seq: str, spec: KmerSpec, length: int | None = None) -> list[str]:
    """Plain per-token implementation (the research code's way), for tests and benchmarks."""
    base = seq[:length] if length is not None else seq
    if length is not None and len(base) < length:
        base = base + "N" * (length - len(base))
    padded = base + "N" * (spec.padded_length(len(base)) - len(base))
    return [padded[i : i + spec.k] for i in range(0, len(padded) - spec.k + 1, spec.stride)]


def token_residues(spec: KmerSpec, n_tokens: int) -> np.ndarray:
    """(n_tokens, 2) first and last amino acid (1-based) each k-mer token covers (aligned mode).

    Token t covers spike nucleotides [t*stride, t*stride + k - 1] (0-based), so residues
    ``t*stride // 3 + 1`` to ``(t*stride + k - 1) // 3 + 1``; the last ones may reach past
    residue 1274 into the N padding.
    """
    start = np.arange(n_tokens) * spec.stride
    return np.stack([start // 3 + 1, (start + spec.k - 1) // 3 + 1], axis=1)
