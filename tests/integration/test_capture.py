"""Captured stream points agree with the model (science.md §2 and §7)."""

from __future__ import annotations

import pytest
import torch

from bertgeom.geometry.capture import Capture, encoder_layers


def tiny(kind: str):
    import transformers

    common = dict(
        vocab_size=50,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=40,
        attn_implementation="eager",
    )
    torch.manual_seed(0)
    if kind == "bert":
        cfg = transformers.BertConfig(**common)
        model = transformers.BertModel(cfg)
    else:
        cfg = transformers.RobertaConfig(**common, pad_token_id=1, bos_token_id=0, eos_token_id=2)
        model = transformers.RobertaModel(cfg)
    return model.eval()


def batch():
    ids = torch.randint(5, 50, (3, 12))
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0  # padded rows
    mask[2, 5:] = 0
    ids[mask == 0] = 1
    return ids, mask


@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_captured_tensors_agree_with_the_model(kind):
    model = tiny(kind)
    ids, mask = batch()
    seen = {}
    with Capture(model, lambda i, t: seen.__setitem__(i, t)), torch.no_grad():
        out = model(
            input_ids=ids, attention_mask=mask, output_attentions=True, output_hidden_states=True
        )
    layers = encoder_layers(model)
    assert sorted(seen) == list(range(len(layers)))
    real = mask.bool()
    for i, t in seen.items():
        sa = layers[i].attention.self
        n_heads, d_head = sa.num_attention_heads, sa.attention_head_size
        # A equals HF output_attentions
        assert torch.allclose(t.A, out.attentions[i], atol=1e-6)

        # Q, K, V rebuilt from the weights (x @ W.T + b, head blocks of rows) reproduce A and Z
        def heads(x, n_heads=n_heads, d_head=d_head):
            return x.view(3, 12, n_heads, d_head).transpose(1, 2)

        q = heads(t.X @ sa.query.weight.T + sa.query.bias)
        k = heads(t.X @ sa.key.weight.T + sa.key.bias)
        v = heads(t.X @ sa.value.weight.T + sa.value.bias)
        scores = q @ k.transpose(-1, -2) / d_head**0.5
        scores = scores.masked_fill(~real[:, None, None, :], float("-inf"))
        a = scores.softmax(-1)
        assert torch.allclose(a, t.A, atol=1e-5)
        assert torch.allclose(a @ v, t.Z, atol=1e-5)
        # PAD keys get no attention
        assert float(t.A.masked_select(~real[:, None, None, :].expand_as(t.A)).abs().max()) == 0.0
        # the per-head contributions through W_O add up to O
        wo = layers[i].attention.output.dense
        per_head = [
            t.Z[:, h] @ wo.weight[:, h * d_head : (h + 1) * d_head].T for h in range(n_heads)
        ]
        assert torch.allclose(sum(per_head) + wo.bias, t.O, atol=1e-5)
        # X and Y are the model's hidden states before and after the layer
        assert torch.allclose(t.X, out.hidden_states[i], atol=1e-6)
        assert torch.allclose(t.Y, out.hidden_states[i + 1], atol=1e-6)
        # U = LN1(X + O); Y = LN2(U + F)
        ln1, ln2 = layers[i].attention.output.LayerNorm, layers[i].output.LayerNorm
        assert torch.allclose(ln1(t.X + t.O), t.U, atol=1e-5)
        assert torch.allclose(ln2(t.U + t.F), t.Y, atol=1e-5)


def test_hooks_are_removed():
    model = tiny("bert")
    ids, mask = batch()
    calls = []
    with Capture(model, lambda i, t: calls.append(i)), torch.no_grad():
        model(input_ids=ids, attention_mask=mask)
    with torch.no_grad():
        model(input_ids=ids, attention_mask=mask)
    assert calls == [0, 1]


def test_only_the_points_asked_for_are_captured_and_qk_are_the_forward_pass_own():
    model = tiny("bert")
    ids, mask = batch()
    seen = {}
    hook = Capture(model, lambda i, t: seen.__setitem__(i, t), points={"QK", "O"})
    with hook, torch.no_grad():
        model(input_ids=ids, attention_mask=mask)
    for i, t in seen.items():
        assert t.A is None and t.Z is None and t.C is None and t.U is None and t.F is None
        assert t.X is not None and t.Y is not None and t.O is not None
        sa = encoder_layers(model)[i].attention.self
        q = (t.X @ sa.query.weight.T + sa.query.bias).view(3, 12, 4, 8).transpose(1, 2)
        k = (t.X @ sa.key.weight.T + sa.key.bias).view(3, 12, 4, 8).transpose(1, 2)
        assert torch.allclose(t.Q, q, atol=1e-6) and torch.allclose(t.K, k, atol=1e-6)
    with pytest.raises(ValueError, match="cannot capture"):
        Capture(model, lambda i, t: None, points={"W"})


def test_cone_alone_reads_no_attention_and_runs_on_sdpa(tiny_model, ci_prepared):
    """``--only cone`` needs no attention probabilities: the model is loaded with SDPA
    attention (which computes none) and the cone table has no attention-row point."""
    from bertgeom.config import AnalyzeConfig
    from bertgeom.pipeline import analyze

    p = analyze.plan(
        tiny_model, ci_prepared, AnalyzeConfig(split="all", max_genomes=4, only="cone")
    )
    assert p.bundle.model.config._attn_implementation == "sdpa"
    stream = analyze.new_stream(p)
    assert "A" not in stream.reads
    analyze.stream_genomes(p, stream, 0, p.n, progress=False)
    assert "cone_A" not in stream.measures[0].rows and "cone_Z" in stream.measures[0].rows
