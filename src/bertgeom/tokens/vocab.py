"""k-mer vocabulary: built from training-split counts, vectorised encoding, HF-compatible files.

Ids: ``[PAD]`` 0, ``[UNK]`` 1, ``[CLS]`` 2, ``[SEP]`` 3, ``[MASK]`` 4, then k-mers by decreasing
training count (ties by k-mer). Rule for unknown bases: a k-mer containing N or an IUPAC
ambiguity code is never in the vocabulary and encodes as ``[UNK]``; so does any k-mer seen fewer
than ``min_count`` times in training. Deletions (``-``) are ordinary symbols: a k-mer spanning a
deletion is its own token.

Saved as ``vocab.txt`` (one token per line, the line number is the id: the format of HF
``BertTokenizer``) plus ``bertgeom_tokens.json`` (k, stride, mode, length, min_count), and the
transformers tokenizer files: ``tokenizer_config.json`` naming
:class:`bertgeom.model.hf_tokenizer.BertgeomKmerTokenizer` (which k-merizes raw sequences the
way the model expects and rejects other text), ``special_tokens_map.json`` and
``tokenization_bertgeom.py`` (for ``trust_remote_code=True``). No ``tokenizer.json`` is written:
a generic tokenizer loaded from it would turn a raw sequence into ``[CLS] [UNK] [SEP]`` without
a word.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bertgeom.errors import ArtifactError
from bertgeom.tokens.kmers import KmerSpec, decode_kmer, encode_kmer, kmer_codes_and_unknown

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID = range(5)
SPIKE_COLUMNS = 3822
TOKENS_FILE = "bertgeom_tokens.json"
HF_TOKENIZER_CLASS = "BertgeomKmerTokenizer"
HF_SHIM = "tokenization_bertgeom.py"
#: Every file :meth:`Vocabulary.save` writes (listed in the manifests of model folders).
TOKENIZER_FILES = (
    "vocab.txt",
    TOKENS_FILE,
    "tokenizer_config.json",
    "special_tokens_map.json",
    HF_SHIM,
)


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing multiplier (2^64 / golden ratio)


class CodeTable:
    """Open-addressing hash table from k-mer codes (non-negative int64) to ids, looked up for
    whole arrays at once: one multiply-shift hash, one gather and one compare per code, then a
    few linear-probing rounds for the codes whose home slot holds another code. At most a
    quarter full, so nearly every lookup ends at its home slot.
    """

    def __init__(self, codes: np.ndarray, ids: np.ndarray) -> None:
        bits = max(4, int(np.ceil(np.log2(max(len(codes), 1) * 4))))
        self._shift = np.uint64(64 - bits)
        self._mask = (1 << bits) - 1
        self._keys = np.full(1 << bits, -1, dtype=np.int64)
        self._vals = np.zeros(1 << bits, dtype=np.int64)
        self.max_probe = 0
        home = self._home(np.asarray(codes, dtype=np.int64))
        for code, ident, slot in zip(codes.tolist(), ids.tolist(), home.tolist(), strict=True):
            probe = 0
            while self._keys[(slot + probe) & self._mask] not in (-1, code):
                probe += 1
            if self._keys[(slot + probe) & self._mask] == code:
                continue  # a repeated code keeps its first id
            self._keys[(slot + probe) & self._mask] = code
            self._vals[(slot + probe) & self._mask] = ident
            self.max_probe = max(self.max_probe, probe)

    def _home(self, codes: np.ndarray) -> np.ndarray:
        return ((codes.view(np.uint64) * _GOLDEN) >> self._shift).view(np.int64)

    def lookup(self, codes: np.ndarray, default: int) -> np.ndarray:
        """Ids of ``codes`` (any shape, non-negative int64); ``default`` where a code is
        absent."""
        codes = np.ascontiguousarray(codes, dtype=np.int64)
        slot = self._home(codes)
        key = self._keys[slot]
        hit = key == codes
        out = np.where(hit, self._vals[slot], default)
        if self.max_probe == 0:
            return out
        # codes whose home slot holds another code: probe on along the run
        idx = np.flatnonzero(~hit & (key != -1))
        flat, want, pos = out.reshape(-1), codes.reshape(-1)[idx], slot.reshape(-1)[idx]
        for _ in range(self.max_probe):
            if len(idx) == 0:
                break
            pos = (pos + 1) & self._mask
            key = self._keys[pos]
            hit = key == want
            flat[idx[hit]] = self._vals[pos[hit]]
            go_on = ~hit & (key != -1)
            idx, want, pos = idx[go_on], want[go_on], pos[go_on]
        return out


@dataclass(frozen=True)
class Vocabulary:
    """A k-mer vocabulary and the tokenization it belongs to.

    Attributes
    ----------
    spec
        k, stride and mode.
    length
        Sequence length before k-mer padding (3,822 in aligned mode; 0 = per batch, raw mode).
    min_count
        Training count a k-mer needed to get an id.
    kmers
        k-mer strings in id order (ids start after the special tokens).
    """

    spec: KmerSpec
    length: int
    min_count: int
    kmers: tuple[str, ...]

    def __post_init__(self) -> None:
        codes = np.array([encode_kmer(k) for k in self.kmers], dtype=np.int64)
        ids = np.arange(len(codes), dtype=np.int64) + len(SPECIAL_TOKENS)
        object.__setattr__(self, "_table", CodeTable(codes, ids))

    @property
    def size(self) -> int:
        """Number of ids, special tokens included."""
        return len(SPECIAL_TOKENS) + len(self.kmers)

    @property
    def tokens(self) -> tuple[str, ...]:
        """Token strings in id order."""
        return SPECIAL_TOKENS + self.kmers

    def n_positions(self) -> int:
        """[CLS] + k-mer tokens + [SEP] for a full-length sequence."""
        return self.spec.n_tokens(self.length or SPIKE_COLUMNS) + 2

    def encode_codes(self, codes: np.ndarray, unknown: np.ndarray) -> np.ndarray:
        """k-mer codes (batch, T) -> ids (batch, T); ``unknown`` and rare k-mers -> [UNK]."""
        ids = self._table.lookup(codes, UNK_ID)  # type: ignore[attr-defined]
        ids[unknown] = UNK_ID
        return ids

    def encode(self, seqs: Sequence[str], block: int = 128) -> np.ndarray:
        """Sequences -> (batch, T + 2) int64 ids with [CLS] first and [SEP] last.

        In raw mode sequences of different lengths get different numbers of k-mers; shorter
        rows are right-padded with [PAD] after their [SEP]. Works in blocks of ``block``
        sequences so the temporaries stay in cache.
        """
        if self.spec.mode == "aligned":
            length: int | None = self.length or SPIKE_COLUMNS
            n = np.full(len(seqs), self.spec.n_tokens(length))
        else:
            length = max((len(x) for x in seqs), default=0)
            n = np.array([self.spec.n_tokens(len(x)) for x in seqs], dtype=np.int64)
        n_tok = self.spec.n_tokens(length or 0)
        out = np.full((len(seqs), n_tok + 2), PAD_ID, dtype=np.int64)
        out[:, 0] = CLS_ID
        for a in range(0, len(seqs), block):
            codes, unknown = kmer_codes_and_unknown(seqs[a : a + block], self.spec, length)
            out[a : a + block, 1:-1] = self.encode_codes(codes, unknown)
        if self.spec.mode == "raw":
            body = out[:, 1:-1]
            body[np.arange(n_tok)[None, :] >= n[:, None]] = PAD_ID  # past each row's k-mers
        out[np.arange(len(seqs)), n + 1] = SEP_ID
        return out

    def save(self, directory: str | os.PathLike) -> None:
        """Write ``vocab.txt`` and ``bertgeom_tokens.json`` into ``directory``."""
        from bertgeom.io.files import write_json, write_text

        d = Path(directory)
        write_text(d / "vocab.txt", "\n".join(self.tokens) + "\n")
        write_json(
            d / TOKENS_FILE,
            {
                "k": self.spec.k,
                "stride": self.spec.stride,
                "mode": self.spec.mode,
                "length": self.length,
                "min_count": self.min_count,
                "unknown_rule": "k-mers with N or an ambiguity code, or seen fewer than "
                "min_count times in training, encode as [UNK]",
                "special_tokens": list(SPECIAL_TOKENS),
            },
        )
        # HF tokenizer files: bertgeom's tokenizer class (k-mer words or a raw sequence in, the
        # same ids as encode() out), found once bertgeom.model.hf_tokenizer is imported or
        # through the shim module with trust_remote_code=True.
        write_json(
            d / "tokenizer_config.json",
            {
                "tokenizer_class": HF_TOKENIZER_CLASS,
                "auto_map": {"AutoTokenizer": [None, f"{HF_SHIM[:-3]}.{HF_TOKENIZER_CLASS}"]},
                "kmer_k": self.spec.k,
                "kmer_stride": self.spec.stride,
                "kmer_mode": self.spec.mode,
                "model_max_length": self.n_positions(),
                "unk_token": "[UNK]",
                "sep_token": "[SEP]",
                "pad_token": "[PAD]",
                "cls_token": "[CLS]",
                "mask_token": "[MASK]",
            },
        )
        write_text(d / HF_SHIM, _SHIM_SOURCE)
        (d / "tokenizer.json").unlink(missing_ok=True)  # an older version's generic tokenizer
        write_json(
            d / "special_tokens_map.json",
            {
                "unk_token": "[UNK]",
                "sep_token": "[SEP]",
                "pad_token": "[PAD]",
                "cls_token": "[CLS]",
                "mask_token": "[MASK]",
            },
        )


_SHIM_SOURCE = '''"""bertgeom's k-mer tokenizer for AutoTokenizer (trust_remote_code=True).

It needs the bertgeom package installed (pip install bertgeom); see its README.
"""

from bertgeom.model.hf_tokenizer import BertgeomKmerTokenizer

__all__ = ["BertgeomKmerTokenizer"]
'''


def load_vocabulary(directory: str | os.PathLike) -> Vocabulary:
    """Read a vocabulary saved by :meth:`Vocabulary.save`."""
    d = Path(directory)
    meta_path, vocab_path = d / TOKENS_FILE, d / "vocab.txt"
    for p in (meta_path, vocab_path):
        if not p.is_file():
            raise ArtifactError(f"{p}: no such file (not a bertgeom model directory?)")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    tokens = vocab_path.read_text(encoding="utf-8").splitlines()
    if tuple(tokens[: len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
        raise ArtifactError(f"{vocab_path}: the first lines must be {', '.join(SPECIAL_TOKENS)}")
    return Vocabulary(
        spec=KmerSpec(k=meta["k"], stride=meta["stride"], mode=meta["mode"]),
        length=int(meta["length"]),
        min_count=int(meta["min_count"]),
        kmers=tuple(tokens[len(SPECIAL_TOKENS) :]),
    )


def build_vocabulary(
    batches: Iterable[Sequence[str]], spec: KmerSpec, min_count: int = 1
) -> Vocabulary:
    """Count k-mers over batches of training sequences and keep those seen >= ``min_count``."""
    length = SPIKE_COLUMNS if spec.mode == "aligned" else 0
    counts: dict[int, int] = {}
    for seqs in batches:
        if not seqs:
            continue
        codes, unknown = kmer_codes_and_unknown(seqs, spec, length=length or None)
        codes = codes[~unknown]
        uniq, n = np.unique(codes, return_counts=True)
        for c, m in zip(uniq.tolist(), n.tolist(), strict=True):
            counts[c] = counts.get(c, 0) + m
    kept = [(decode_kmer(c, spec.k), m) for c, m in counts.items() if m >= min_count]
    kept.sort(key=lambda item: (-item[1], item[0]))  # ties by k-mer string
    return Vocabulary(
        spec=spec, length=length, min_count=min_count, kmers=tuple(k for k, _ in kept)
    )
