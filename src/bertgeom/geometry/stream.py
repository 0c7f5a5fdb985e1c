"""The one stream driver: batches through the model, each layer's tensors to the measures.

Used by ``bertgeom analyze`` (whole runs, shards, resumed runs), by
:func:`bertgeom.geometry.encoder.measure_encoder` and by the distributed engines. It hooks only
what the selected measures read (``Measure.reads``; ``--only cone`` captures no attention), hands
each layer's tensors once, in float32 and with autocast off whatever precision the forward pass
used, wrapped in a :class:`LayerView` whose shared features (the content mask, mean-pooled
vectors, ...) are computed once per layer and read by every measure that needs them, then tells
the measures the batch's predictions (``end_batch``). Before that, a measure may ask to see some
of the batch's genomes again (``Measure.revisit``): the model runs once more over just those
genomes and their layers go to the measures that asked (spectra of a large model, whose
candidates' tensors cost more to hold than to recompute).

Its state is the measures' states plus the number of genomes done; two streams over consecutive
parts of one genome order merge into the stream over both (:meth:`Stream.merge`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import fields
from functools import cached_property
from typing import Any

import numpy as np
import torch
from torch import Tensor

from bertgeom.errors import ArtifactError
from bertgeom.geometry.capture import Capture, LayerTensors, encoder_layers
from bertgeom.geometry.masking import content_mask
from bertgeom.geometry.measures.base import STREAM_READS, BatchInfo, Measure, RunInfo
from bertgeom.geometry.threads import map_chunks

#: The whole-layer stream points, in stream order (cone index, spectra, pooled vectors, flow).
LAYER_POINTS = ("X", "C", "O", "U", "F", "Y")
_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _float32(x: Tensor | None) -> Tensor | None:
    return x.float() if x is not None and x.dtype in _LOW_PRECISION else x


class LayerView:
    """One layer of one batch: the captured tensors (float32) and the shared features.

    Attributes are the stream points of :class:`~bertgeom.geometry.capture.LayerTensors`
    (``X``, ``A``, ``Z``, ``C``, ``O``, ``U``, ``F``, ``Y``, ``Q``, ``K``; None when not
    captured) plus the cached features below.
    """

    def __init__(self, layer: int, t: LayerTensors, batch: BatchInfo, info: RunInfo) -> None:
        self.layer = layer
        self.batch = batch
        self.info = info
        self.mask = batch.mask
        for f in fields(t):
            setattr(self, f.name, _float32(getattr(t, f.name)))

    @cached_property
    def content(self) -> Tensor:
        """(batch, pos) bool: the positions the token statistics use (real tokens, less [CLS]
        and [SEP] with ``drop_special``)."""
        return content_mask(self.mask, self.info.drop_special)

    @cached_property
    def pooled(self) -> Tensor:
        """(batch, point, d_model) float64: the mean of each whole-layer stream point
        (:data:`LAYER_POINTS`) over the content positions."""
        content = self.content
        if content.device.type != "cpu" or not len(content):
            m = content[..., None].double()
            n = m.sum(1).clamp(min=1)
            points = [(getattr(self, p).double() * m).sum(1) / n for p in LAYER_POINTS]
            return torch.stack(points, 1)

        # on the CPU genome by genome: float64 copies of a few hundred KB come from the heap,
        # where a batch's (7 MB per point for ``small``) would be mapped afresh (bertgeom.heap)
        def genome(i: int) -> Tensor:
            m = content[i, :, None].double()
            n = m.sum(0).clamp(min=1)
            points = [(getattr(self, p)[i].double() * m).sum(0) / n for p in LAYER_POINTS]
            return torch.stack(points)

        def genomes(lo: int, hi: int) -> Tensor:
            return torch.stack([genome(i) for i in range(lo, hi)])

        return torch.cat(map_chunks(genomes, content.shape[0]))

    @cached_property
    def n_content(self) -> Tensor:
        """(batch,) float32: content positions per genome."""
        return self.content.sum(1).float()


class Stream:
    """Streams batches through ``model`` into ``measures`` (see the module docstring).

    Parameters
    ----------
    model
        An HF BERT-family model in eval mode (eager attention when a measure reads ``A``).
    measures
        Measure instances, built on ``info``.
    info
        The run's description (classes, drop_special, layers, device).
    to_class
        Class of each model output (-1: none); None = the model has no predictions to score
        (an encoder), every genome counts as correctly classified.
    bf16
        Run the forward pass under bf16 autocast (CUDA).
    profile
        Time each measure's stream work (``times``: seconds per measure name, the device
        synchronised around each call, which slows a GPU run: benchmarks only).

    Attributes
    ----------
    clock
        The timer of ``profile`` (``time.perf_counter``; a benchmark on a loaded machine may
        set ``time.process_time``, the process's CPU time, meaningful with one thread).
    """

    def __init__(
        self,
        model: Any,
        measures: Sequence[Measure],
        info: RunInfo,
        to_class: np.ndarray | None = None,
        bf16: bool = False,
        profile: bool = False,
    ) -> None:
        self.model = model
        self.profile = profile
        self.times: dict[str, float] = {m.name: 0.0 for m in measures}
        self.clock = time.perf_counter
        self.measures = list(measures)
        self.info = info
        self.bf16 = bf16
        self.mapping = None if to_class is None else torch.as_tensor(to_class)
        self.n_done = 0
        self._batch: BatchInfo | None = None
        self._ending = False
        self._capture: Capture | None = None
        #: during a second look (``_second_look``): its batch, rows and measures
        self._revisiting: tuple[BatchInfo, Tensor, list[Measure]] | None = None

    # ------------------------------------------------------------------ what to capture
    @property
    def reads(self) -> frozenset[str]:
        """Everything the measures read."""
        out: set[str] = set()
        for m in self.measures:
            out |= m.reads
        return frozenset(out)

    def capture_points(self) -> frozenset[str]:
        """What the hooks capture: the measures' stream reads (plus optional uses, where they
        cost no extra capture: Z and C come with A's hook, A with Z's)."""
        need = set(self.reads & STREAM_READS)
        hooked = need & {"A", "Z", "C"}
        for m in self.measures:
            for p in m.uses & STREAM_READS:
                if p in {"A", "Z", "C"} and hooked:
                    need.add(p)
        return frozenset(need)

    def needs_attention(self) -> bool:
        """Whether the model must return attention probabilities (eager attention): a measure
        reads them (measures that merely use them take them when they come)."""
        return "A" in self.reads

    def __enter__(self) -> Stream:
        encoder_layers(self.model)
        self._capture = Capture(self.model, self._on_layer, self.capture_points()).__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._capture is not None:
            self._capture.__exit__(*exc)
            self._capture = None

    # ------------------------------------------------------------------ batches
    def batch(
        self,
        inputs: dict[str, Tensor],
        labels: Tensor,
        keep_maps: Tensor | None = None,
    ) -> Tensor | None:
        """Run one batch (``inputs``: input_ids, attention_mask, ...; ``labels`` (batch,) true
        class ids on the model's device); returns the predicted output indices (None without
        ``to_class``)."""
        if self._capture is None:
            raise RuntimeError("Stream.batch outside ``with stream:``")
        mask = inputs["attention_mask"].bool()
        keep = torch.zeros(len(labels), dtype=torch.bool) if keep_maps is None else keep_maps
        b = BatchInfo(mask=mask, labels=labels, keep_maps=keep.to(mask.device), start=self.n_done)
        self._batch = b
        for m in self.measures:
            m.begin_batch(b)
        device = mask.device.type
        with torch.autocast(device, dtype=torch.bfloat16, enabled=self.bf16):
            out = self.model(**inputs)
        pred = None
        if self.mapping is None:
            b.buckets = labels
        else:
            if not bool(torch.isfinite(out.logits).all()):  # no statistic from a NaN model
                raise ArtifactError(
                    f"the model gives non-finite logits (NaN or inf) for genomes "
                    f"{self.n_done}-{self.n_done + b.size - 1}: its weights are damaged or "
                    "training diverged (retrain)"
                )
            pred = out.logits.argmax(-1)
            right = self.mapping.to(pred.device)[pred] == labels
            b.buckets = torch.where(right, labels, labels + self.info.n_classes)
        del out
        self._second_look(inputs, b)
        self._ending = True  # stays True when adding the batch fails: see abort
        with torch.autocast(device, enabled=False):
            for m in self.measures:
                self._call(m, m.end_batch, b)
        self._ending = False
        self._batch = None
        self.n_done += b.size
        return pred

    def _second_look(self, inputs: dict[str, Tensor], b: BatchInfo) -> None:
        """Run the model again over the genomes the measures ask to revisit (one pass for
        all of them; ``Measure.revisit``), handing each layer to their ``update_revisit``."""
        asked: list[tuple[Measure, Tensor]] = []
        for m in self.measures:
            rows = m.revisit(b)
            if rows is not None and len(rows):
                asked.append((m, rows))
        if not asked:
            return
        if self.profile:
            self._sync()
        t0 = self.clock()
        rows = torch.unique(torch.cat([r.to(b.mask.device) for _, r in asked]))
        sub_inputs = {
            k: v[rows] if isinstance(v, Tensor) and v.dim() and v.shape[0] == b.size else v
            for k, v in inputs.items()
        }
        sub = BatchInfo(
            mask=b.mask[rows],
            labels=b.labels[rows],
            keep_maps=b.keep_maps[rows],
            start=b.start,  # the batch's (the rows need not be contiguous)
            buckets=None if b.buckets is None else b.buckets[rows],
        )
        self._revisiting = (sub, rows, [m for m, _ in asked])
        try:
            with torch.autocast(b.mask.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                self.model(**sub_inputs)
        finally:
            self._revisiting = None
        if self.profile:  # the second pass is the cost of the measures that asked for it
            self._sync()
            spent = self.clock() - t0
            for m, _ in asked:
                self.times[m.name] += spent / len(asked)

    def _on_layer(self, layer: int, t: LayerTensors) -> None:
        b = self._batch
        if b is None:  # a forward pass outside Stream.batch (e.g. the caller's own)
            return
        if self._revisiting is not None:
            sub, rows, measures = self._revisiting
            with torch.autocast(b.mask.device.type, enabled=False):
                view = LayerView(layer, t, sub, self.info)
                for m in measures:
                    m.update_revisit(layer, view, rows)
            return
        if "A" in self.reads and t.A is None:
            names = [m.name for m in self.measures if "A" in m.reads]
            raise RuntimeError(
                f"layer {layer}: the self-attention returned no attention probabilities, which "
                f"the {', '.join(names)} measures read; load the model with "
                "attn_implementation='eager' (transformers >= 5 returns them from eager "
                "attention)"
            )
        with torch.autocast(b.mask.device.type, enabled=False):
            view = LayerView(layer, t, b, self.info)
            for m in self.measures:
                self._call(m, m.update, layer, view, b)

    def _call(self, m: Measure, method: Any, *args: Any) -> None:
        if not self.profile:
            method(*args)
            return
        self._sync()
        t0 = self.clock()
        method(*args)
        self._sync()
        self.times[m.name] += self.clock() - t0

    def _sync(self) -> None:
        """Wait for the device (a profiled run times each call's own work)."""
        if self.info.device.startswith("cuda"):
            torch.cuda.synchronize()

    def abort(self) -> bool:
        """Drop the batch in progress (an interrupted forward pass), so the state is that of
        the finished batches; False when ``end_batch`` was interrupted (the state may hold part
        of the batch: it is not whole)."""
        if self._ending:
            return False
        if self._batch is not None:
            for m in self.measures:
                m.abort_batch()
        self._batch = None
        return True

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Every measure's state and the number of genomes done (between batches only)."""
        if self._batch is not None:
            raise RuntimeError("state_dict() inside a batch")
        return {
            "n_done": self.n_done,
            "measures": {m.name: m.state_dict() for m in self.measures},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s result, all or nothing."""
        got = state["measures"]
        missing = [m.name for m in self.measures if m.name not in got]
        if missing:
            raise ValueError(f"stream state lacks measures {missing}")
        snapshot = {m.name: m.state_dict() for m in self.measures}
        try:
            for m in self.measures:
                m.load_state_dict(got[m.name])
        except Exception:
            for m in self.measures:
                m.load_state_dict(snapshot[m.name])
            raise
        self.n_done = int(state["n_done"])

    def merge(self, other: Stream) -> None:
        """Add ``other`` (the stream over the genomes that follow this one's) to this one."""
        theirs = {m.name: m for m in other.measures}
        if set(theirs) != {m.name for m in self.measures}:
            raise ValueError("streams of different measures cannot be merged")
        for m in self.measures:
            m.merge(theirs[m.name])
        self.n_done += other.n_done


def run_info(
    model: Any,
    classes: Sequence[str],
    drop_special: bool = False,
    domains: Any = None,
    device: str | None = None,
) -> RunInfo:
    """The :class:`RunInfo` of ``model`` (its encoder's shape) for ``classes``."""
    layers = encoder_layers(model)
    sa = layers[0].attention.self
    d_model = int(sa.query.weight.shape[1])
    if device is None:
        device = str(next(model.parameters()).device)
    return RunInfo(
        n_layers=len(layers),
        n_heads=int(sa.num_attention_heads),
        d_model=d_model,
        d_head=int(sa.attention_head_size),
        classes=tuple(classes),
        drop_special=drop_special,
        layers=tuple(layers),
        domains=domains,
        device=device,
    )
