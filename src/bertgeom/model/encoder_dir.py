"""Any local HF encoder directory with its own tokenizer (``bertgeom analyze-encoder``).

A directory that ``transformers`` loads with ``AutoModel`` and ``AutoTokenizer`` offline
(``config.json``, ``model.safetensors`` or ``pytorch_model.bin``, the tokenizer files): a
sentence-transformers model folder (its ``BertModel`` without a head), a BERT/RoBERTa/ELECTRA
checkpoint, or a bertgeom model directory (its k-mer tokenizer registers itself on import; the
base encoder is loaded, without the classification head). Nothing is downloaded.

DistilBERT keeps its layers as ``transformer.layer[i]`` with ``attention.q_lin`` ... and a
single LayerNorm per sublayer under other names; the stream points are read from BERT's layout
(``encoder.layer[i].attention.self.query`` ...), so it is refused with a one-line error.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bertgeom.errors import InputError
from bertgeom.io.files import read_json, reading
from bertgeom.model.store import WEIGHT_FILES, _quiet_transformers

#: Files one of which a tokenizer is read from (tokenizers' JSON, WordPiece, BPE, SentencePiece).
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model",
                   "sentencepiece.bpe.model")  # fmt: skip
#: model_type values whose layer layout the stream cannot read, with what they have instead.
UNSUPPORTED_LAYOUTS = {
    "distilbert": "transformer.layer[i].attention.q_lin/k_lin/v_lin/out_lin, sa_layer_norm",
}


@dataclass
class EncoderDir:
    """A loaded encoder directory."""

    model: Any  # a transformers PreTrainedModel with encoder.layer (BERT's layout)
    tokenizer: Any  # its own tokenizer
    path: Path
    model_type: str
    max_length: int  # the longest input, [CLS] and [SEP] included

    @property
    def files(self) -> list[Path]:
        """The files that define the model (for the manifest's input hashes)."""
        names = ("config.json", *WEIGHT_FILES, "tokenizer.json", "vocab.txt")
        return [self.path / n for n in names if (self.path / n).is_file()]


def check_encoder_dir(directory: str | os.PathLike) -> str:
    """Validate ``directory`` before any heavy import: a folder with ``config.json`` and
    weights, of a layer layout the stream can read; returns its ``model_type``.

    Raises
    ------
    InputError
        Not a folder, no ``config.json``, weights or tokenizer files, or DistilBERT's layout.
    """
    d = Path(directory)
    if not d.is_dir():
        raise InputError(f"{d}: not a model directory (a local HF model folder with config.json)")
    if not (d / "config.json").is_file():
        raise InputError(f"{d}: no config.json (not an HF model directory)")
    if not any((d / w).is_file() for w in WEIGHT_FILES):
        raise InputError(f"{d}: no weights ({' or '.join(WEIGHT_FILES)})")
    if not any((d / n).is_file() for n in TOKENIZER_FILES):
        raise InputError(f"{d}: no tokenizer files ({', '.join(TOKENIZER_FILES)})")
    config = read_json(d / "config.json", "HF model config")
    model_type = str(config.get("model_type", "")) if isinstance(config, dict) else ""
    if model_type in UNSUPPORTED_LAYOUTS:
        raise InputError(
            f"{d}: {model_type} is not supported: its layers "
            f"({UNSUPPORTED_LAYOUTS[model_type]}) are not BERT's layout "
            "(encoder.layer[i].attention.self.query ...), which the stream points are read from"
        )
    return model_type


def load_encoder_dir(
    directory: str | os.PathLike, device: str = "cpu", attn_implementation: str = "eager"
) -> EncoderDir:
    """Load the encoder of ``directory`` and its tokenizer, offline, in eval mode on
    ``device`` (float32).

    Raises
    ------
    InputError
        See :func:`check_encoder_dir`; a model without BERT's layer layout.
    ArtifactError
        Damaged files.
    """
    import torch
    import transformers

    import bertgeom.model.hf_tokenizer  # noqa: F401  (registers a bertgeom dir's tokenizer)
    from bertgeom.geometry.capture import encoder_layers

    d = Path(directory)
    model_type = check_encoder_dir(d)
    with _quiet_transformers(), reading(d, "HF tokenizer", "check the model directory"):
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(d), local_files_only=True)
    with _quiet_transformers(), reading(d, "HF model directory", "check the model directory"):
        model = transformers.AutoModel.from_pretrained(
            str(d),
            attn_implementation=attn_implementation,
            dtype=torch.float32,
            local_files_only=True,
        )
    try:
        encoder_layers(model)
    except TypeError as err:
        raise InputError(f"{d}: {err}") from None
    model.to(device).eval()
    limits = [int(getattr(model.config, "max_position_embeddings", 512) or 512)]
    given = getattr(tokenizer, "model_max_length", None)
    if isinstance(given, int) and 0 < given < 1_000_000:
        limits.append(given)
    return EncoderDir(model, tokenizer, d, model_type, min(limits))
