"""Model directories in HF format, plus bertgeom's own metadata.

A model directory holds ``config.json`` and ``model.safetensors`` (HF
``BertForSequenceClassification``: ``AutoModelForSequenceClassification.from_pretrained(dir)``
loads it), the tokenizer files (``vocab.txt``, ``tokenizer_config.json``,
``tokenization_bertgeom.py``, ``special_tokens_map.json``, ``bertgeom_tokens.json``),
``bertgeom_model.json`` (labels, preset, training config, calibration temperature, OOD
thresholds) and, when fitted, ``ood.npz`` (class centroids and the shared precision matrix of
[CLS] embeddings).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bertgeom.errors import ArtifactError
from bertgeom.io.files import read_json, reading, write_json
from bertgeom.io.manifest import verify_artifact
from bertgeom.tokens.vocab import TOKENIZER_FILES, Vocabulary, load_vocabulary

MODEL_META = "bertgeom_model.json"
WEIGHTS = "model.safetensors"


@dataclass
class ModelBundle:
    """A loaded model directory."""

    model: Any  # transformers.BertForSequenceClassification
    vocab: Vocabulary
    labels: tuple[str, ...]
    meta: dict[str, Any]
    path: Path

    @property
    def temperature(self) -> float:
        """Calibration temperature (1.0 until fitted)."""
        return float(self.meta.get("calibration", {}).get("temperature", 1.0))


def save_model_dir(
    model: Any, vocab: Vocabulary, meta: dict[str, Any], directory: str | os.PathLike
) -> Path:
    """Write weights, HF config, tokenizer files and ``bertgeom_model.json`` into ``directory``.

    Files are written to temporary names and renamed, weights last but one and the metadata
    last, so a reader never sees new metadata with old weights.
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / ".saving"
    tmp.mkdir(exist_ok=True)
    with _quiet_transformers():
        model.save_pretrained(str(tmp), safe_serialization=True)
    umask = os.umask(0)
    os.umask(umask)
    for name in ("config.json", WEIGHTS):
        os.chmod(tmp / name, 0o666 & ~umask)
        os.replace(tmp / name, d / name)
    for leftover in tmp.iterdir():
        leftover.unlink()
    tmp.rmdir()
    vocab.save(d)
    write_json(d / MODEL_META, meta)
    return d


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Hide transformers' own progress bars ("Loading weights", "Writing model shards")."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


def read_meta(directory: str | os.PathLike) -> dict[str, Any]:
    """``bertgeom_model.json`` of a model directory."""
    path = Path(directory) / MODEL_META
    if not path.is_file():
        raise ArtifactError(
            f"{path}: no such file (not a bertgeom model directory; run `bertgeom train` first)"
        )
    meta = read_json(verify_artifact(path), "bertgeom model metadata file")
    if not isinstance(meta, dict):
        raise ArtifactError(f"{path}: damaged or not a bertgeom model metadata file (retrain)")
    return meta


def update_meta(directory: str | os.PathLike, **fields: Any) -> dict[str, Any]:
    """Merge ``fields`` into ``bertgeom_model.json`` (atomically; created for a directory
    trained elsewhere, which has none) and return the result."""
    path = Path(directory) / MODEL_META
    meta = (read_meta(directory) if path.is_file() else {}) | fields
    write_json(Path(directory) / MODEL_META, meta)
    return meta


#: Files of a model directory checked against its manifest before loading (with the weights).
MODEL_FILES = ("config.json", *TOKENIZER_FILES, MODEL_META)
#: Weight files an HF model directory may hold (safetensors first).
WEIGHT_FILES = (WEIGHTS, "pytorch_model.bin")


def weights_file(directory: str | os.PathLike) -> Path:
    """The weights of a model directory (``model.safetensors``, else ``pytorch_model.bin``)."""
    d = Path(directory)
    for name in WEIGHT_FILES:
        if (d / name).is_file():
            return d / name
    raise ArtifactError(f"{d / WEIGHTS}: no such file (not a trained model directory)")


def load_model_dir(
    directory: str | os.PathLike, device: str = "cpu", attn_implementation: str = "eager"
) -> ModelBundle:
    """Load a model directory for inference (eval mode, on ``device``).

    Ours, or any local HF sequence classifier of the BERT family (BERT, RoBERTa, ...: loaded
    with ``AutoModelForSequenceClassification``) that reads our k-mer tokens, i.e. holds our
    tokenizer files (``vocab.txt``, ``bertgeom_tokens.json``). Weights stored in float16 are
    loaded as float32. Without ``bertgeom_model.json``
    (a checkpoint trained elsewhere) the labels come from ``config.json``'s ``id2label`` and
    there is no calibration (temperature 1).
    """
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    d = Path(directory)
    weights = weights_file(d)
    for name in (*MODEL_FILES, weights.name):
        verify_artifact(d / name)
    meta = read_meta(d) if (d / MODEL_META).is_file() else {"foreign": True}
    with reading(d, "bertgeom tokenizer (vocab.txt, bertgeom_tokens.json)"):
        vocab = load_vocabulary(d)
    with reading(d / "config.json", "HF model config"):
        config = AutoConfig.from_pretrained(str(d))
    with _quiet_transformers(), reading(weights, "model weights file (safetensors)"):
        model, info = AutoModelForSequenceClassification.from_pretrained(  # float32 even when
            str(d),  # the weights are stored as float16 (a shipped model): CPU kernels want it
            config=config,
            attn_implementation=attn_implementation,
            dtype=torch.float32,
            output_loading_info=True,
        )
    absent = [*info.get("missing_keys", ()), *info.get("mismatched_keys", ())]
    if absent:  # transformers would initialise them at random: calls without meaning
        raise ArtifactError(
            f"{weights}: {len(absent)} weights missing or of the wrong shape (e.g. "
            f"{sorted(map(str, absent))[0]}); damaged or not this model's weights (retrain)"
        )
    from bertgeom.geometry.capture import encoder_layers

    try:
        encoder_layers(model)
    except TypeError as err:
        raise ArtifactError(f"{d}: {err}") from None
    if config.vocab_size < len(vocab.tokens):
        raise ArtifactError(
            f"{d}: the model's vocabulary ({config.vocab_size}) is smaller than the tokenizer's "
            f"({len(vocab.tokens)})"
        )
    model.to(device).eval()
    with reading(d / "config.json", "HF model config (id2label)"):
        labels = tuple(str(model.config.id2label[i]) for i in range(model.config.num_labels))
    return ModelBundle(model=model, vocab=vocab, labels=labels, meta=meta, path=d)
