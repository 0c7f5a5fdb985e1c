"""Vectorised k-mer extraction: spikes -> integer k-mer codes, no Python loop per token.

Each base is a 3-bit symbol (``A C G T - N`` and ``?`` for other IUPAC codes), so a k-mer of up
to 21 bases is one int64 code: ``code = sum(symbol[p + j] << 3 * j for j < k)``, exact and
decodable with :func:`decode_kmer`. Codes are computed 8 symbols at a time with 64-bit word
arithmetic on the byte buffer of a block of spikes.

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
from typing import Literal

import numpy as np

TokenMode = Literal["aligned", "raw"]

#: Symbols in code order (3 bits each); any other letter (IUPAC ambiguity codes) is ``?``.
SYMBOLS = "ACGT-N?"
GAP_SYMBOL, N_SYMBOL, OTHER_SYMBOL = 4, 5, 6  # "unknown" = N or ambiguity = symbol >= 5
_TABLE = bytearray([OTHER_SYMBOL] * 256)
for _i, _c in enumerate(SYMBOLS[:6]):
    _TABLE[ord(_c)] = _i
    _TABLE[ord(_c.lower())] = _i
_TABLE[ord("_")] = GAP_SYMBOL
_TABLE[0] = 0  # the slack bytes after the last row
_SYMBOL_TABLE = bytes(_TABLE)
MAX_K = 21  # 21 * 3 = 63 bits
_CHUNK = 256  # spikes per vectorised block: keeps the temporaries in cache

# SWAR constants: pack eight 3-bit symbols held one per byte into 24 contiguous bits.
_U = np.uint64
_M_BYTE = _U(0x0707070707070707)
_M_PAIR = _U(0x003F003F003F003F)
_M_QUAD = _U(0x00000FFF00000FFF)
_M_OCT = _U(0x0000000000FFFFFF)
_ONES = _U(0x0101010101010101)


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


def _symbol_bytes(seqs: Sequence[str], length: int) -> bytes:
    """Rows of ``length`` symbol bytes (N-padded or cut), then 8 slack bytes."""
    if not all(len(x) == length for x in seqs):
        seqs = [x[:length] + "N" * (length - len(x)) for x in seqs]
    return ("".join(seqs) + "\0" * 8).encode("ascii", "replace").translate(_SYMBOL_TABLE)


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
        c, u = _codes_block(_symbol_bytes(block, total), len(block), total, n_tok, spec)
        codes[a : a + len(block)] = c
        unknown[a : a + len(block)] = u
    return codes, unknown


def _codes_block(
    raw: bytes, m: int, total: int, n_tok: int, spec: KmerSpec
) -> tuple[np.ndarray, np.ndarray]:
    """Codes of ``m`` rows of symbol bytes: each k-mer is read as ceil(k/8) unaligned 64-bit
    words (8 symbols each) and packed with shifts and masks (SWAR), no loop per symbol."""
    code = np.zeros((m, n_tok), dtype=_U)
    unknown = np.zeros((m, n_tok), dtype=bool)
    v = np.empty((m, n_tok), dtype=_U)
    tmp = np.empty((m, n_tok), dtype=_U)
    for w in range(-(-spec.k // 8)):
        n_bytes = min(8, spec.k - 8 * w)
        words = np.ndarray(
            shape=(m, n_tok), dtype="<u8", buffer=raw, offset=8 * w, strides=(total, spec.stride)
        )
        if n_bytes < 8:
            np.bitwise_and(words, _U((1 << (8 * n_bytes)) - 1), out=v)
        else:
            v[...] = words
        # unknown symbols are 5 and 6: bit 2 set and bit 0 or bit 1 set
        np.right_shift(v, _U(1), out=tmp)
        np.bitwise_or(tmp, v, out=tmp)
        np.bitwise_and(tmp, np.right_shift(v, _U(2)), out=tmp)
        np.bitwise_and(tmp, _ONES, out=tmp)
        unknown |= tmp != 0
        np.bitwise_and(v, _M_BYTE, out=v)
        for shift, mask in ((5, _M_PAIR), (10, _M_QUAD), (20, _M_OCT)):
            np.right_shift(v, _U(shift), out=tmp)
            np.bitwise_or(v, tmp, out=v)
            np.bitwise_and(v, mask, out=v)
        if w:
            np.left_shift(v, _U(24 * w), out=v)
        code |= v
    return code.view(np.int64), unknown


def has_unknown(codes: np.ndarray, k: int) -> np.ndarray:
    """True where a k-mer code contains N or an ambiguity code (same shape as ``codes``)."""
    out = np.zeros(codes.shape, dtype=bool)
    for j in range(k):
        out |= ((codes >> (3 * j)) & 7) >= N_SYMBOL
    return out


def decode_kmer(code: int, k: int) -> str:
    """The k-mer string of a code (ambiguity codes come back as ``?``)."""
    return "".join(SYMBOLS[(code >> (3 * j)) & 7] for j in range(k))


def encode_kmer(kmer: str) -> int:
    """The code of one k-mer string (symbol j at bits 3j..3j+2)."""
    return sum(_SYMBOL_TABLE[ord(ch)] << (3 * j) for j, ch in enumerate(kmer))


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
