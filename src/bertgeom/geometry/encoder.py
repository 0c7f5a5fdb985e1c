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

Without labels (or with one class) the class-dependent results are left out, and
:attr:`EncoderGeometry.notes` says so: the k-NN, linear-probe and ARI rows of ``embeddings``,
``one_vs_all``, ``separability`` and the separability rows of ``flow`` (between-class scatter
is 0 by definition with one class); every other statistic pools the sequences as class ``all``.
A sentence-transformers model is passed as its ``BertModel`` (``SentenceTransformer(dir)[0].
auto_model``, or ``AutoModel.from_pretrained(dir)``): no classification head is needed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
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


#: Tables (and ``flow`` metrics) that compare classes: left out with fewer than two classes.
CLASS_TABLES = ("separability", "one_vs_all")


@dataclass
class EncoderGeometry:
    """What ``measure_encoder`` accumulated, and the tables built from it."""

    stream: Stream
    labels: np.ndarray  # (sequence,) class ids, in input order
    class_names: tuple[str, ...]
    seq_ids: np.ndarray | None = None  # (sequence,) ids of the tables (None: s0, s1, ...)
    notes: list[str] = field(default_factory=list)  # what was left out, and why

    @property
    def ids(self) -> np.ndarray:
        """Sequence ids of the tables: ``seq_ids``, else ``s0``, ``s1``, ... in input order."""
        if self.seq_ids is not None:
            return np.asarray(self.seq_ids, dtype=str)
        return np.array([f"s{i}" for i in range(len(self.labels))])

    @property
    def n_classes_present(self) -> int:
        """Classes with at least one sequence."""
        return len(np.unique(self.labels))

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
        if self.n_classes_present < 2:
            out = {k: v for k, v in out.items() if k not in CLASS_TABLES}
            flow = out.get("flow")
            if isinstance(flow, pd.DataFrame) and "metric" in flow.columns:
                out["flow"] = flow[~flow["metric"].isin(CLASS_TABLES)].reset_index(drop=True)
        return out

    def measure_notes(self) -> list[str]:
        """This run's notes, then every measure's (after :meth:`finish`)."""
        extra = [n for m in self.stream.measures for n in m.notes]
        return [*self.notes, *(n for n in dict.fromkeys(extra) if n not in self.notes)]

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
    ids: Sequence[str] | None = None,
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
    ids
        Sequence ids for the tables (default ``s0``, ``s1``, ...), one per sequence.

    Raises
    ------
    ValueError
        Attention that is not eager (when a measure reads it), an unknown measure, labels that
        do not match the number of sequences or the classes, class names without labels, ids
        that do not match the number of sequences, or batches that are not right-padded.
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
    if ids is not None and len(ids) != len(y_all):
        raise ValueError(f"{len(ids)} ids for {len(y_all)} sequences")
    geo = EncoderGeometry(stream, y_all, names, None if ids is None else np.asarray(ids, str))
    if geo.n_classes_present < 2 and len(y_all):
        why = "no labels" if given is None else f"one class ({names[int(y_all[0])]})"
        geo.notes.append(
            f"{why}: the statistics pool every sequence; k-NN, linear-probe and ARI rows of "
            "embeddings, one_vs_all, separability and the separability rows of flow compare "
            "classes and are not computed (give a label per sequence for them)"
        )
    return geo
