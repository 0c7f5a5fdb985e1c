"""Model presets, built from config (never downloaded).

=======  ======  ======  =====  ============  ==================================================
preset   layers  hidden  heads  intermediate  use
=======  ======  ======  =====  ============  ==================================================
tiny     2       32      4      64            tests: a few steps on CPU
small    4       128     4      512           CPU: trains on the real data in minutes (no
                                              attention dropout)
base     12      768     12     3072          the paper's size (BERT-base), for GPU
=======  ======  ======  =====  ============  ==================================================
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from bertgeom.errors import ConfigError


@dataclass(frozen=True)
class Preset:
    """Encoder size."""

    num_hidden_layers: int
    hidden_size: int
    num_attention_heads: int
    intermediate_size: int
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1


PRESETS: dict[str, Preset] = {
    "tiny": Preset(2, 32, 4, 64),
    # no attention dropout: it blocks the fused CPU attention kernel (2x slower training) and
    # made no difference to accuracy on the real genomes
    "small": Preset(4, 128, 4, 512, attention_probs_dropout_prob=0.0),
    "base": Preset(12, 768, 12, 3072),
}


@dataclass(frozen=True)
class Recipe:
    """Training defaults of a preset: the ``TrainConfig`` fields left unset take these.

    ``base`` (12 x 768) gets more steps and a longer patience than ``small``: a 12-layer proxy
    (hidden 64, CPU, 200 steps of 16 genomes) reached 97 % test accuracy at lr 5e-4 and stayed
    at 22 % at 1e-4 (600 steps at 2e-4: 98 %), and a GPU run of base for 588 steps at 1e-4
    stayed at 42 %: from scratch,
    the classifier finds the class-defining sites only after enough optimiser steps at a large
    enough rate, and validation macro-F1 is flat until then.
    """

    epochs: int
    batch_size: int
    lr: float
    patience: int


RECIPES: dict[str, Recipe] = {
    "tiny": Recipe(epochs=2, batch_size=16, lr=5e-4, patience=3),
    "small": Recipe(epochs=2, batch_size=16, lr=5e-4, patience=3),
    "base": Recipe(epochs=20, batch_size=32, lr=2e-4, patience=6),
}


def get_preset(name: str) -> Preset:
    """The preset called ``name``."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset '{name}' (valid presets: {', '.join(PRESETS)})")
    return PRESETS[name]


def bert_config(
    preset: str | Preset,
    vocab_size: int,
    n_positions: int,
    labels: Sequence[str],
    **overrides: Any,
) -> Any:
    """An HF ``BertConfig`` for sequence classification over ``labels``.

    ``max_position_embeddings`` is ``n_positions`` rounded up to a multiple of 8 (427 -> 432),
    not 512: the research code's padding to 512 only cost time.
    """
    from transformers import BertConfig

    p = get_preset(preset) if isinstance(preset, str) else preset
    values = asdict(p) | {
        "vocab_size": vocab_size,
        "max_position_embeddings": -(-n_positions // 8) * 8,
        "type_vocab_size": 1,
        "pad_token_id": 0,
        "id2label": dict(enumerate(labels)),
        "label2id": {lab: i for i, lab in enumerate(labels)},
        "problem_type": "single_label_classification",
    }
    values.update(overrides)
    return BertConfig(**values)


def build_classifier(config: Any, seed: int, attn_implementation: str = "eager") -> Any:
    """A freshly initialised ``BertForSequenceClassification`` (seeded)."""
    import torch
    from transformers import BertForSequenceClassification

    torch.manual_seed(seed)
    return BertForSequenceClassification._from_config(
        config, attn_implementation=attn_implementation
    )
