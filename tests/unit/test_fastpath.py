"""The classifier's cut forward pass equals HF's: logits, [CLS] states and gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bertgeom.model.fastpath import classify, supports
from bertgeom.model.infer import infer
from bertgeom.model.presets import bert_config, build_classifier

LABELS = ["a", "b", "c"]


def _model(layers: int, attn: str, dropout: float = 0.0, act: str = "gelu") -> torch.nn.Module:
    cfg = bert_config(
        "tiny",
        60,
        40,
        LABELS,
        num_hidden_layers=layers,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
        hidden_act=act,
    )
    return build_classifier(cfg, seed=3, attn_implementation=attn)


def _batch(n: int = 5, t: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 60, (n, t), generator=g)
    ids[:, 0] = 2  # [CLS]
    mask = torch.ones_like(ids)
    for row, length in enumerate([t, t - 3, 17, 2, t][:n]):  # padded rows of several lengths
        ids[row, length:] = 0
        mask[row, length:] = 0
    return ids, mask


@pytest.mark.parametrize("layers", [1, 2, 3])
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("act", ["gelu", "relu", "gelu_pytorch_tanh"])
def test_logits_and_cls_equal_the_hf_forward(layers, attn, act):
    model = _model(layers, attn, act=act).eval()
    assert supports(model)
    ids, mask = _batch()
    with torch.no_grad():
        ref = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        logits, cls = classify(model, ids, mask)
    torch.testing.assert_close(logits, ref.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cls, ref.hidden_states[-1][:, 0], atol=1e-5, rtol=1e-5)


def test_gradients_equal_the_hf_forward():
    model = _model(3, "eager").train()  # dropout 0: training mode is deterministic
    ids, mask = _batch()
    target = torch.tensor([0, 1, 2, 1, 0])

    def grads(logits: torch.Tensor) -> dict[str, torch.Tensor]:
        model.zero_grad()
        torch.nn.functional.cross_entropy(logits, target).backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    ref = grads(model(input_ids=ids, attention_mask=mask).logits)
    ours = grads(classify(model, ids, mask)[0])
    # the unused last-layer pieces get no gradient from either (HF's: exactly zero)
    for name, g in ref.items():
        torch.testing.assert_close(ours.get(name, torch.zeros_like(g)), g, atol=1e-6, rtol=1e-5)
    assert set(ours) <= set(ref)


def test_dropout_follows_training_mode():
    model = _model(2, "sdpa", dropout=0.3)
    ids, mask = _batch()
    model.train()
    torch.manual_seed(0)
    a = classify(model, ids, mask)[0]
    b = classify(model, ids, mask)[0]
    assert not torch.allclose(a, b)  # dropout active
    model.eval()
    torch.testing.assert_close(classify(model, ids, mask)[0], model(ids, mask).logits)


def test_unsupported_models_run_their_own_forward():
    from transformers import RobertaConfig, RobertaForSequenceClassification

    cfg = RobertaConfig(
        vocab_size=60,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=50,
        num_labels=3,
    )
    torch.manual_seed(0)
    model = RobertaForSequenceClassification(cfg).eval()
    assert not supports(model)
    bert = _model(2, "eager")
    bert.config.position_embedding_type = "relative_key"
    assert not supports(bert)
    ids, mask = _batch()
    ids[ids == 0] = 1  # RoBERTa's pad id
    with torch.no_grad():
        logits, cls = classify(model, ids, mask)
        ref = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    torch.testing.assert_close(logits, ref.logits)
    torch.testing.assert_close(cls, ref.hidden_states[-1][:, 0])


def test_infer_computes_repeated_rows_once_and_keeps_input_order(monkeypatch):
    monkeypatch.setattr("bertgeom.model.infer.MIN_BATCH_ROWS", 1)  # count rows, not padding
    model = _model(2, "sdpa").eval()
    ids = _batch()[0].numpy()
    rows = ids[[3, 0, 3, 1, 0, 4, 2, 3]]  # repeats, out of order: 5 distinct rows
    computed: list[int] = []
    handle = model.bert.embeddings.register_forward_hook(
        lambda _m, _a, _k, out: computed.append(out.shape[0]), with_kwargs=True
    )
    got = infer(model, rows, batch_size=2)
    assert sum(computed) == 5
    computed.clear()
    plain = infer(model, rows, batch_size=3, dedupe=False)
    assert sum(computed) == 8
    handle.remove()
    np.testing.assert_allclose(got.logits, plain.logits, atol=1e-5)
    np.testing.assert_allclose(got.cls, plain.cls, atol=1e-5)
    np.testing.assert_array_equal(got.logits[0], got.logits[2])
    assert got.logits.shape == (8, 3) and got.cls.shape == (8, 32)
    x = torch.from_numpy(rows)
    with torch.no_grad():
        ref = model(input_ids=x, attention_mask=(x != 0).long()).logits
    np.testing.assert_allclose(got.logits, ref.numpy(), atol=1e-5)
    assert infer(model, rows[:0]).logits.shape == (0, 3)


def test_a_rows_outputs_do_not_depend_on_the_rows_beside_it():
    import numpy as np

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = _model(2, "sdpa").eval()
        ids = _batch()[0].numpy()
        together = infer(model, ids, batch_size=64, dedupe=False)
        alone = [infer(model, ids[i : i + 1], batch_size=64, dedupe=False) for i in range(len(ids))]
    finally:
        torch.set_num_threads(before)
    assert np.array_equal(np.concatenate([a.cls for a in alone]), together.cls)
    assert np.array_equal(np.concatenate([a.logits for a in alone]), together.logits)
