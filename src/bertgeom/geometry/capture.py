"""Capture of the stream points of every encoder layer through forward hooks.

For layer l of a post-LN BERT-family encoder (science.md §2; HF ``BertLayer``, ``RobertaLayer``
and the like, found as ``model.base_model.encoder.layer``):

====  =============================================  ==========================================
name  what (shape)                                   read from
====  =============================================  ==========================================
X     layer input, ``hidden_states[l-1]`` (b pos d)  pre-hook of the layer
A     attention probs, PAD keys masked (b head q k)  output of ``attention.self``
Z     per-head outputs A_h V_h (b head pos d_head)   output of ``attention.self``
C     concatenation [Z_1 .. Z_H] (b pos d)           output of ``attention.self``
O     C W_O + b_O (b pos d)                          output of ``attention.output.dense``
U     LN1(X + O) (b pos d)                           output of ``attention.output``
F     MLP(U) (b pos d)                               output of ``output.dense``
Y     LN2(U + F), next layer's input (b pos d)       output of the layer
====  =============================================  ==========================================

Nothing is recomputed: every tensor is the one the model itself used (dropout is off in eval
mode). The capture streams: ``on_layer(layer, LayerTensors)`` is called as soon as a layer has
run, and the tensors are dropped afterwards, so memory does not grow with the number of layers
or batches. Attention probabilities need the eager attention implementation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

STREAM_POINTS = ("X", "Z", "C", "O", "U", "F", "Y")
#: Everything a capture can hook: the stream points, the attention probabilities and QK (the
#: query and key projections the forward pass computed).
CAPTURABLE = frozenset({*STREAM_POINTS, "A", "QK"})


@dataclass(frozen=True)
class LayerTensors:
    """The stream points of one layer for one batch (see the module docstring)."""

    X: Any  # (batch, pos, d_model)
    A: Any | None = None  # (batch, head, q_pos, k_pos); None with a non-eager attention
    Z: Any = None  # (batch, head, pos, d_head)
    C: Any = None  # (batch, pos, d_model)
    O: Any = None  # (batch, pos, d_model)  # noqa: E741 - the paper's name
    U: Any = None  # (batch, pos, d_model)
    F: Any = None  # (batch, pos, d_model)
    Y: Any = None  # (batch, pos, d_model)
    Q: Any = None  # (batch, head, pos, d_head) query projections, with ``points`` holding QK
    K: Any = None  # (batch, head, pos, d_head) key projections


_FIELDS = ("X", "A", "Z", "C", "O", "U", "F", "Y", "Q", "K")


def encoder_layers(model: Any) -> list[Any]:
    """The encoder layers of an HF BERT-family model (BERT, RoBERTa, ELECTRA, ...)."""
    base = getattr(model, "base_model", model)
    encoder = getattr(base, "encoder", None)
    layers = getattr(encoder, "layer", None)
    if layers is None:
        raise TypeError(f"{type(model).__name__}: no encoder.layer list (not a BERT-family model)")
    needed = (
        "attention.self.query", "attention.self.key", "attention.self.value",
        "attention.self.num_attention_heads", "attention.self.attention_head_size",
        "attention.output.dense", "output.dense",
    )  # fmt: skip
    for path in needed:
        obj = layers[0] if len(layers) else None
        for part in path.split("."):
            obj = getattr(obj, part, None)
        if obj is None:
            raise TypeError(
                f"{type(model).__name__}: its encoder layers have no {path} (not BERT's layer "
                "layout, which the stream points are read from)"
            )
    return list(layers)


class Capture:
    """Context manager that hooks every encoder layer of ``model``.

    Parameters
    ----------
    model
        An HF BERT-family model in eval mode.
    on_layer
        Called with (layer index, :class:`LayerTensors`) after each layer's forward.
    points
        What to hook (a subset of :data:`CAPTURABLE`; None = every stream point and A, not QK).
        X and Y are always there (the layer's input and output cost nothing to keep); the
        other fields of :class:`LayerTensors` stay None unless asked for.
    """

    def __init__(
        self,
        model: Any,
        on_layer: Callable[[int, LayerTensors], None],
        points: frozenset[str] | None = None,
    ) -> None:
        self.model = model
        self.on_layer = on_layer
        self.points = CAPTURABLE - {"QK"} if points is None else frozenset(points)
        unknown = self.points - CAPTURABLE
        if unknown:
            raise ValueError(f"cannot capture {sorted(unknown)} (valid: {sorted(CAPTURABLE)})")
        self._handles: list[Any] = []
        self._store: dict[int, dict[str, Any]] = {}

    def __enter__(self) -> Capture:
        want = self.points
        for i, layer in enumerate(encoder_layers(self.model)):
            att = layer.attention
            hooks = [layer.register_forward_pre_hook(self._pre(i, "X"), with_kwargs=True)]
            if want & {"A", "Z", "C"}:
                hooks.append(att.self.register_forward_hook(self._self_attention(i, att.self)))
            if "QK" in want:
                hooks.append(att.self.query.register_forward_hook(self._heads(i, "Q", att.self)))
                hooks.append(att.self.key.register_forward_hook(self._heads(i, "K", att.self)))
            if "O" in want:
                hooks.append(att.output.dense.register_forward_hook(self._out(i, "O")))
            if "U" in want:
                hooks.append(att.output.register_forward_hook(self._out(i, "U")))
            if "F" in want:
                hooks.append(layer.output.dense.register_forward_hook(self._out(i, "F")))
            hooks.append(layer.register_forward_hook(self._layer_done(i)))
            self._handles += hooks
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._store.clear()

    def _pre(self, i: int, name: str) -> Callable[..., None]:
        def hook(module: Any, args: tuple, kwargs: dict) -> None:
            x = args[0] if args else kwargs["hidden_states"]
            self._store[i] = {name: x}

        return hook

    def _out(self, i: int, name: str) -> Callable[..., None]:
        def hook(module: Any, args: tuple, output: Any) -> None:
            self._store[i][name] = output[0] if isinstance(output, tuple) else output

        return hook

    def _heads(self, i: int, name: str, module: Any) -> Callable[..., None]:
        n_heads, d_head = module.num_attention_heads, module.attention_head_size

        def hook(mod: Any, args: tuple, output: Any) -> None:
            b, pos, _ = output.shape
            self._store[i][name] = output.view(b, pos, n_heads, d_head).transpose(1, 2)

        return hook

    def _self_attention(self, i: int, module: Any) -> Callable[..., None]:
        n_heads = module.num_attention_heads
        d_head = module.attention_head_size

        def hook(mod: Any, args: tuple, output: Any) -> None:
            context, weights = output[0], output[1] if len(output) > 1 else None
            b, pos, _ = context.shape
            self._store[i]["C"] = context
            self._store[i]["Z"] = context.view(b, pos, n_heads, d_head).transpose(1, 2)
            self._store[i]["A"] = weights

        return hook

    def _layer_done(self, i: int) -> Callable[..., None]:
        def hook(module: Any, args: tuple, output: Any) -> None:
            s = self._store.pop(i)
            y = output[0] if isinstance(output, tuple) else output
            self.on_layer(i, LayerTensors(**{k: s.get(k) for k in _FIELDS if k != "Y"}, Y=y))

        return hook
