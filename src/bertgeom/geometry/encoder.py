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

The same measures and the same stream driver as ``analyze`` (:mod:`bertgeom.geometry.stream`;
memory flat in the number of sequences, on the model's device). Sequences may have any lengths
(PAD positions are excluded by the attention mask). Labels group the statistics (one class
``all`` when there are none); every sequence is included (there are no predictions to score).
Measures that read the spike's token-domain map (``domains``) are not offered here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from bertgeom.geometry.capture import encoder_layers
from bertgeom.geometry.measures import registry
from bertgeom.geometry.measures.base import Arrays, Genomes, options_from
from bertgeom.geometry.stream import Stream, run_info


def encoder_measures() -> tuple[str, ...]:
    """The measures ``measure_encoder`` computes by default: every default measure of the
    registry that does not need the spike's domains."""
    return tuple(n for n, m in registry().items() if m.default and not m.needs_domains)


@dataclass
class EncoderGeometry:
    """What ``measure_encoder`` accumulated, and the tables built from it."""

    stream: Stream
    labels: np.ndarray  # (sequence,) class ids, in input order
    class_names: tuple[str, ...]

    @property
    def ids(self) -> np.ndarray:
        """Sequence ids of the tables: ``s0``, ``s1``, ... in input order."""
        return np.array([f"s{i}" for i in range(len(self.labels))])

    def finish(self, seed: int = 42) -> dict[str, Any]:
        """Every measure's tables and arrays (``Arrays``), then the derived tables."""
        genomes = Genomes(
            ids=self.ids,
            labels=self.labels,
            included=np.ones(len(self.labels), bool),
            all_genomes=True,
            seed=seed,
        )
        out: dict[str, Any] = {}
        for m in self.stream.measures:
            out |= m.finish(genomes)
        for m in self.stream.measures:
            out |= m.derive(out)
        return out

    def tables(self, seed: int = 42) -> dict[str, pd.DataFrame]:
        """Tidy tables as ``analyze`` writes them (see docs/formats.md), for the measures
        computed; class statistics over every sequence."""
        return {k: v for k, v in self.finish(seed).items() if not isinstance(v, Arrays)}

    def class_mean_maps(self) -> np.ndarray | None:
        """(layer, head, class, q_pos, k_pos) class-mean attention (``maps`` measure)."""
        genomes = Genomes(self.ids, self.labels, np.ones(len(self.labels), bool), True)
        for m in self.stream.measures:  # only the maps measure's own tables, not every measure's
            if m.name == "maps":
                maps = m.finish(genomes).get("maps")
                return None if maps is None else maps.arrays.get("class_mean")
        return None


def measure_encoder(
    model: Any,
    batches: Iterable[Mapping[str, Any]],
    labels: Sequence[int] | np.ndarray | None = None,
    class_names: Sequence[str] | None = None,
    families: Sequence[str] | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    drop_special: bool = False,
) -> EncoderGeometry:
    """Stream ``batches`` through ``model`` and accumulate the geometry measures.

    Parameters
    ----------
    model
        An HF BERT-family model (``AutoModel``, ``*ForSequenceClassification``, ...: anything
        with ``encoder.layer``) loaded with ``attn_implementation="eager"`` when a measure reads
        the attention probabilities; it runs on its own device, in eval mode.
    batches
        Mappings with ``input_ids`` and ``attention_mask`` (batch, pos), e.g. a tokenizer's
        output; other keys (``token_type_ids``) are passed to the model as they are.
    labels
        Class id of every sequence, in batch order; None = one class.
    class_names
        Names of the classes (default ``class0``, ``class1``, ...; ``all`` without labels).
    families
        Measure names (default :func:`encoder_measures`).
    options
        Per measure, its options (``{"spectra": {"genomes": 16}}``).
    drop_special
        Leave [CLS] and [SEP] (the first and last real position) out of the token statistics.

    Raises
    ------
    ValueError
        Attention that is not eager (when a measure reads it), an unknown measure, labels that
        do not match the number of sequences or the classes, class names without labels, or
        batches that are not right-padded.
    TypeError
        A model without BERT's layer layout (``encoder.layer[i].attention.self.query`` ...).
    """
    reg = registry()
    chosen = encoder_measures() if families is None else tuple(families)
    valid = [n for n, m in reg.items() if not m.needs_domains]
    bad = sorted(set(chosen) - set(valid))
    if bad:
        raise ValueError(f"unknown measures {bad} (valid: {', '.join(valid)})")
    encoder_layers(model)  # a clear error for a model that is not BERT-family
    measures_cls = [m for n, m in reg.items() if n in chosen]
    impl = getattr(model.config, "_attn_implementation", None) or "eager"
    if impl != "eager" and any("A" in m.reads for m in measures_cls):
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
    device = next(model.parameters()).device
    info = run_info(model, names, drop_special, None, str(device))
    opts = dict(options or {})
    measures = [
        m(info, options_from(m.Options, opts.get(m.name), f"options[{m.name!r}]"))
        for m in measures_cls
    ]
    stream = Stream(model.eval(), measures, info, to_class=None)
    seen: list[np.ndarray] = []
    with stream, torch.inference_mode():
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
            stream.batch(inputs, torch.as_tensor(y, device=device))
            seen.append(y)
    y_all = np.concatenate(seen) if seen else np.zeros(0, np.int64)
    if given is not None and len(y_all) != len(given):
        raise ValueError(f"{len(given)} labels for {len(y_all)} sequences")
    return EncoderGeometry(stream, y_all, names)
