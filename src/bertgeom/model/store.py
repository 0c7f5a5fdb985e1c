"""Model directories in HF format, plus bertgeom's own metadata.

A model directory holds ``config.json`` and ``model.safetensors`` (HF
``BertForSequenceClassification``: ``AutoModelForSequenceClassification.from_pretrained(dir)``
loads it), the tokenizer files (``vocab.txt``, ``tokenizer.json``, ``tokenizer_config.json``,
``special_tokens_map.json``, ``bertgeom_tokens.json``), ``bertgeom_model.json`` (labels, preset,
training config, calibration temperature, OOD thresholds) and, when fitted, ``ood.npz`` (class
centroids and the shared precision matrix of [CLS] embeddings).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bertgeom.errors import ArtifactError
from bertgeom.io.files import write_json
from bertgeom.tokens.vocab import Vocabulary, load_vocabulary

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
    return json.loads(path.read_text(encoding="utf-8"))


def update_meta(directory: str | os.PathLike, **fields: Any) -> dict[str, Any]:
    """Merge ``fields`` into ``bertgeom_model.json`` (atomically) and return the result."""
    meta = read_meta(directory) | fields
    write_json(Path(directory) / MODEL_META, meta)
    return meta


def load_model_dir(
    directory: str | os.PathLike, device: str = "cpu", attn_implementation: str = "eager"
) -> ModelBundle:
    """Load a model directory for inference (eval mode, on ``device``)."""
    from transformers import BertForSequenceClassification

    d = Path(directory)
    if not (d / WEIGHTS).is_file():
        raise ArtifactError(f"{d / WEIGHTS}: no such file (not a trained model directory)")
    meta = read_meta(d)
    vocab = load_vocabulary(d)
    with _quiet_transformers():
        model = BertForSequenceClassification.from_pretrained(
            str(d), attn_implementation=attn_implementation
        )
    model.to(device).eval()
    labels = tuple(model.config.id2label[i] for i in range(model.config.num_labels))
    return ModelBundle(model=model, vocab=vocab, labels=labels, meta=meta, path=d)
