"""The geometry measures of any HF BERT-family encoder on any inputs (not only spikes).

``bertgeom analyze`` reads spikes and our model directories; interpretability work on other
encoders and other inputs (text, proteins, ...) uses this entry point instead::

    import transformers
    from bertgeom.geometry.encoder import measure_encoder

    tok = transformers.AutoTokenizer.from_pretrained("path/to/local/bert")
    model = transformers.AutoModel.from_pretrained("path/to/local/bert",
                                                   attn_implementation="eager")
    batches = [tok(chunk, padding=True, return_tensors="pt") for chunk in text_chunks]
    geo = measure_encoder(model, batches, labels=labels, class_names=("neg", "pos"))
    tables = geo.tables()  # cone, cone_summary, gates, direction, spectra, embeddings, ...

The same streaming accumulators as ``analyze`` (memory flat in the number of sequences, on the
model's device), fed by hooks on every encoder layer. Sequences may have any lengths (PAD
positions are excluded by the attention mask). Labels group the statistics (one class ``all``
when there are none); every sequence is included (there are no predictions to score). The
spike-domain family (``domains``) needs the spike's token-domain map and is not offered here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
import torch

from bertgeom.geometry.accumulate import AccumulatorOptions, GeometryAccumulator
from bertgeom.geometry.capture import Capture, encoder_layers

#: The families ``measure_encoder`` computes (all of ``analyze``'s but the spike domains).
ENCODER_FAMILIES = ("cone", "gates", "direction", "spectra", "embeddings", "maps")


@dataclass
class EncoderGeometry:
    """What ``measure_encoder`` accumulated, and the tables built from it."""

    acc: GeometryAccumulator
    labels: np.ndarray  # (sequence,) class ids, in input order
    class_names: tuple[str, ...]

    @property
    def ids(self) -> np.ndarray:
        """Sequence ids of the tables: ``s0``, ``s1``, ... in input order."""
        return np.array([f"s{i}" for i in range(len(self.labels))])

    def tables(self, seed: int = 42) -> dict[str, pd.DataFrame]:
        """Tidy tables as ``analyze`` writes them (see docs/formats.md), for the families
        computed; class statistics over every sequence."""
        from bertgeom.geometry.tables import measure_tables

        keep = np.ones(len(self.labels), bool)
        return measure_tables(
            self.acc, self.ids, self.labels, keep, self.class_names, all_genomes=True, seed=seed
        )

    def class_mean_maps(self) -> np.ndarray | None:
        """(layer, head, class, q_pos, k_pos) class-mean attention (``maps`` family)."""
        from bertgeom.geometry.tables import class_mean_maps

        return class_mean_maps(self.acc, all_genomes=True)


def measure_encoder(
    model: Any,
    batches: Iterable[Mapping[str, Any]],
    labels: Sequence[int] | np.ndarray | None = None,
    class_names: Sequence[str] | None = None,
    families: Sequence[str] = ENCODER_FAMILIES,
    options: AccumulatorOptions | None = None,
) -> EncoderGeometry:
    """Stream ``batches`` through ``model`` and accumulate the geometry measures.

    Parameters
    ----------
    model
        An HF BERT-family model (``AutoModel``, ``*ForSequenceClassification``, ...: anything
        with ``encoder.layer``) loaded with ``attn_implementation="eager"`` (the measures read
        the attention probabilities); it runs on its own device, in eval mode.
    batches
        Mappings with ``input_ids`` and ``attention_mask`` (batch, pos), e.g. a tokenizer's
        output; other keys (``token_type_ids``) are passed to the model as they are.
    labels
        Class id of every sequence, in batch order; None = one class.
    class_names
        Names of the classes (default ``class0``, ``class1``, ...; ``all`` without labels).
    families
        Measure families, a subset of ``ENCODER_FAMILIES``.
    options
        Accumulator options (``families`` is set from ``families``).

    Raises
    ------
    ValueError
        Attention that is not eager, an unknown family, labels that do not match the number of
        sequences or the classes, class names without labels, or batches that are not
        right-padded.
    TypeError
        A model without BERT's layer layout (``encoder.layer[i].attention.self.query`` ...).
    """
    bad = sorted(set(families) - set(ENCODER_FAMILIES))
    if bad:
        raise ValueError(f"unknown families {bad} (valid: {', '.join(ENCODER_FAMILIES)})")
    encoder_layers(model)  # a clear error for a model that is not BERT-family
    impl = getattr(model.config, "_attn_implementation", None) or "eager"
    if impl != "eager":
        raise ValueError(
            f"the model uses {impl!r} attention, which returns no probabilities: load it with "
            "attn_implementation='eager'"
        )
    if labels is None and class_names is not None and len(class_names) != 1:
        raise ValueError("class_names without labels: give each sequence's class id (labels)")
    given = None if labels is None else np.asarray(labels, dtype=np.int64).reshape(-1)
    n_classes = 1 if given is None else int(given.max(initial=-1)) + 1
    names = tuple(class_names) if class_names is not None else None
    if names is None:
        names = ("all",) if given is None else tuple(f"class{c}" for c in range(n_classes))
    if given is not None and (given.min(initial=0) < 0 or n_classes > len(names)):
        raise ValueError(f"labels must be class ids in 0..{len(names) - 1}")
    opts = replace(options or AccumulatorOptions(), families=tuple(families))
    acc = GeometryAccumulator(model, len(names), domains=None, options=opts)
    device = next(model.parameters()).device
    seen: list[np.ndarray] = []
    model.eval()
    with Capture(model, acc.on_layer), torch.inference_mode():
        for batch in batches:
            inputs = {k: torch.as_tensor(v).to(device) for k, v in batch.items()}
            if "attention_mask" not in inputs:
                raise ValueError("every batch needs an attention_mask (PAD positions excluded)")
            real = inputs["attention_mask"].bool()
            if bool((real[:, 1:] & ~real[:, :-1]).any()):  # a real position after a PAD one
                raise ValueError(
                    "the batches are not right-padded (PAD before real tokens): the measures "
                    "read [CLS] at position 0; tokenize with padding_side='right'"
                )
            n, start = inputs["input_ids"].shape[0], sum(len(s) for s in seen)
            if given is None:
                y = np.zeros(n, np.int64)
            elif start + n > len(given):
                raise ValueError(f"{len(given)} labels for more sequences than that")
            else:
                y = given[start : start + n]
            labels_t = torch.as_tensor(y, device=device)
            acc.begin_batch(real, labels_t)
            model(**inputs)
            acc.end_batch(labels_t)  # no predictions: every sequence counts as "correct"
            seen.append(y)
    y_all = np.concatenate(seen) if seen else np.zeros(0, np.int64)
    if given is not None and len(y_all) != len(given):
        raise ValueError(f"{len(given)} labels for {len(y_all)} sequences")
    return EncoderGeometry(acc, y_all, names)
