"""The k-mer tokenizer as a transformers tokenizer class: raw sequences in, the model's ids out.

A bertgeom model directory's ``tokenizer_config.json`` names :class:`BertgeomKmerTokenizer`,
built from ``vocab.txt`` (there is no ``tokenizer.json``, so no generic tokenizer can load the
directory and silently turn a sequence into ``[CLS] [UNK] [SEP]``). ``AutoTokenizer`` finds the
class once this module is imported (``import bertgeom.model.hf_tokenizer``, which
:func:`bertgeom.encode` does), or through ``trust_remote_code=True`` (the directory's
``tokenization_bertgeom.py`` imports it from the installed package). Without either,
``AutoTokenizer.from_pretrained`` fails with an error.

The tokenizer accepts:

- k-mer words separated by white space (``ACGTACGTACGT CGTACGTACGTA ...``), as before: each is
  looked up, unknown ones are ``[UNK]``;
- one nucleotide sequence (a spike or a whole genome, no white space inside): it is aligned to
  the reference spike (the model reads aligned tokens) or cut as read (``raw`` models), exactly
  as ``bertgeom predict`` does, then k-merized;

and raises ``ValueError`` for anything else (words that are not k-mers, a sequence with no
spike in it).
"""

from __future__ import annotations

import re
from typing import Any

from transformers import AutoTokenizer, PretrainedConfig
from transformers.tokenization_utils_tokenizers import TokenizersBackend

from bertgeom.tokens.kmers import KmerSpec, kmers_reference
from bertgeom.tokens.vocab import CLS_ID, SEP_ID, SPECIAL_TOKENS, SPIKE_COLUMNS

_BASES = "ACGTNRYKMSWBDHV"
_SEQUENCE = re.compile(rf"[{_BASES}UX\-_]+", re.IGNORECASE)


def _backend(vocab_file: str) -> Any:
    """The ``tokenizers`` backend: whole whitespace-separated words, unknown -> [UNK],
    [CLS] ... [SEP] added."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    with open(vocab_file, encoding="utf-8") as fh:
        tokens = fh.read().splitlines()
    tok = Tokenizer(models.WordLevel({t: i for i, t in enumerate(tokens)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", CLS_ID), ("[SEP]", SEP_ID)],
    )
    return tok


class BertgeomKmerTokenizer(TokenizersBackend):
    """k-mer tokens of a spike: k-mer words, or a raw sequence k-merized the way the model
    expects (see the module docstring)."""

    vocab_files_names = {"vocab_file": "vocab.txt"}  # noqa: RUF012 (transformers' interface)
    model_input_names = ["input_ids", "token_type_ids", "attention_mask"]  # noqa: RUF012

    def __init__(
        self,
        vocab_file: str | None = None,
        kmer_k: int = 12,
        kmer_stride: int = 9,
        kmer_mode: str = "aligned",
        **kwargs: Any,
    ) -> None:
        if vocab_file is None:
            raise ValueError("BertgeomKmerTokenizer needs the model directory's vocab.txt")
        self.spec = KmerSpec(k=kmer_k, stride=kmer_stride, mode=kmer_mode)  # type: ignore[arg-type]
        self._processor: Any = None
        self._kmer = re.compile(rf"[{_BASES}\-]{{{kmer_k}}}", re.IGNORECASE)
        kwargs.setdefault("unk_token", "[UNK]")
        kwargs.setdefault("pad_token", "[PAD]")
        kwargs.setdefault("cls_token", "[CLS]")
        kwargs.setdefault("sep_token", "[SEP]")
        kwargs.setdefault("mask_token", "[MASK]")
        super().__init__(
            tokenizer_object=_backend(vocab_file),
            vocab_file=vocab_file,
            kmer_k=kmer_k,
            kmer_stride=kmer_stride,
            kmer_mode=kmer_mode,
            **kwargs,
        )

    def kmerize(self, text: str) -> str:
        """``text`` as whitespace-separated k-mer words (see the module docstring)."""
        words = text.split()
        if not words:
            raise ValueError("BertgeomKmerTokenizer: empty input")
        if all(w in SPECIAL_TOKENS or self._kmer.fullmatch(w) for w in words):
            return " ".join(w if w in SPECIAL_TOKENS else w.upper() for w in words)
        if len(words) == 1 and _SEQUENCE.fullmatch(words[0]) and len(words[0]) > self.spec.k:
            return " ".join(spike_kmers(words[0], self.spec, self._spike_processor()))
        shown = text if len(text) <= 40 else text[:37] + "..."
        raise ValueError(
            f"BertgeomKmerTokenizer: {shown!r} is neither {self.spec.k}-mers separated by "
            "spaces nor one nucleotide sequence (a spike or a genome)"
        )

    def _spike_processor(self) -> Any:
        if self._processor is None:
            from bertgeom.genome.process import SpikeProcessor

            self._processor = SpikeProcessor()
        return self._processor

    def _convert(self, text: Any) -> Any:
        if isinstance(text, str):
            return self.kmerize(text)
        if isinstance(text, list | tuple) and all(isinstance(t, str) for t in text):
            return [self.kmerize(t) for t in text]
        return text

    def _encode_plus(self, text: Any, text_pair: Any = None, *args: Any, **kwargs: Any) -> Any:
        """transformers' encoding entry point, after :meth:`kmerize`."""
        if kwargs.get("is_split_into_words"):
            words = text if isinstance(text[0], str) else [w for t in text for w in t]
            self.kmerize(" ".join(words))  # checks that the words are k-mers
        else:
            text = self._convert(text)
            text_pair = None if text_pair is None else self._convert(text_pair)
        return super()._encode_plus(text, text_pair, *args, **kwargs)

    def tokenize(self, text: str, pair: str | None = None, **kwargs: Any) -> list[str]:
        """k-mer tokens of ``text`` (after :meth:`kmerize`)."""
        return super().tokenize(
            self.kmerize(text), None if pair is None else self.kmerize(pair), **kwargs
        )


def spike_kmers(sequence: str, spec: KmerSpec, processor: Any) -> list[str]:
    """The k-mer words a model of ``spec`` reads for one sequence (a spike or a genome):
    the aligned spike (``aligned`` mode) or the spike as read (``raw``), as ``predict`` does.

    Raises
    ------
    ValueError
        When the sequence has no usable spike: QC ``bad`` (no alignment to the spike, a partial
        spike, too many N, a premature stop, ...), the genomes ``predict`` leaves
        ``Unassigned``.
    """
    result = processor.process("input", sequence.upper().replace("-", "").replace("_", ""))
    if result.qc.status == "bad":
        reasons = "; ".join(result.qc.reasons)
        raise ValueError(f"no usable SARS-CoV-2 spike in the sequence (QC bad: {reasons})")
    if spec.mode == "aligned":
        return kmers_reference(result.spike.aligned, spec, SPIKE_COLUMNS)
    return kmers_reference(result.spike.raw, spec)


class _KmerTokenizerConfig(PretrainedConfig):
    """A placeholder config type under which the tokenizer class is registered (transformers
    registers tokenizer classes by config type); no model uses it."""

    model_type = "bertgeom-kmer-tokenizer"


AutoTokenizer.register(_KmerTokenizerConfig, tokenizer_class=BertgeomKmerTokenizer, exist_ok=True)
