"""Training data: split loading, per-epoch order, balance, batches, masking and macro-F1."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bertgeom.errors import ArtifactError
from bertgeom.model.data import (
    IGNORE_INDEX,
    TRAIN_COLUMNS,
    batch_width,
    class_weights,
    collate,
    encode_labels,
    epoch_order,
    load_pretraining_rows,
    load_split,
    mask_tokens,
    present_labels,
    sequences_for,
)
from bertgeom.resources import CLASSES
from bertgeom.tokens.vocab import CLS_ID, MASK_ID, PAD_ID, SEP_ID, UNK_ID

IMBALANCED = np.array([0] * 90 + [1] * 9 + [2] * 1)


def test_epoch_order_depends_only_on_seed_and_epoch():
    for balance in ("none", "weights", "sampler"):
        a = epoch_order(IMBALANCED, epoch=3, seed=7, balance=balance)
        assert np.array_equal(a, epoch_order(IMBALANCED, epoch=3, seed=7, balance=balance))
        assert not np.array_equal(a, epoch_order(IMBALANCED, epoch=4, seed=7, balance=balance))
        assert not np.array_equal(a, epoch_order(IMBALANCED, epoch=3, seed=8, balance=balance))
        assert a.dtype == np.int64 and len(a) == len(IMBALANCED)


def test_epoch_order_without_sampler_is_a_permutation():
    order = epoch_order(IMBALANCED, epoch=0, seed=1, balance="none")
    assert sorted(order.tolist()) == list(range(len(IMBALANCED)))


def test_sampler_draws_every_class_equally_often_on_average():
    labels = np.array([0] * 900 + [1] * 90 + [2] * 10)
    drawn = np.concatenate([labels[epoch_order(labels, e, 42, "sampler")] for e in range(20)])
    share = np.bincount(drawn, minlength=3) / len(drawn)
    assert np.allclose(share, 1 / 3, atol=0.02)


def test_class_weights_are_inverse_frequency_with_mean_one_over_rows():
    labels = np.array([0, 0, 0, 1])
    w = class_weights(labels, n_classes=3)
    assert w.dtype == np.float32
    assert w[2] == 0  # absent class
    assert w[1] == pytest.approx(3 * w[0])
    assert w[labels].mean() == pytest.approx(1.0)


def test_encode_labels_and_present_labels():
    assert present_labels(["omicron", "alpha", "omicron"], CLASSES) == ("alpha", "omicron")
    ids = encode_labels(pd.Series(["omicron", "alpha"]), ("alpha", "omicron"))
    assert ids.tolist() == [1, 0] and ids.dtype == np.int64
    with pytest.raises(ArtifactError, match="'delta'"):
        encode_labels(["delta"], ("alpha", "omicron"))
    with pytest.raises(ArtifactError, match="unknown class labels"):
        present_labels(["zeta"], CLASSES)


def test_collate_pads_to_the_longest_row_rounded_to_8():
    ids = np.zeros((2, 20), dtype=np.int64)
    ids[0, :5] = [CLS_ID, 9, 9, 9, SEP_ID]
    ids[1, :10] = [CLS_ID, *[7] * 8, SEP_ID]
    batch = collate(ids)
    assert tuple(batch["input_ids"].shape) == (2, 16)
    assert batch["attention_mask"].sum(1).tolist() == [5, 10]
    assert batch["input_ids"][1, :10].tolist() == ids[1, :10].tolist()
    # aligned spikes: 427 ids -> 432 columns, the 5 extra ones PAD
    full = np.full((1, 427), 9, dtype=np.int64)
    assert batch_width(full) == 432
    b = collate(full)
    assert b["input_ids"].shape[1] == 432 and int(b["attention_mask"].sum()) == 427
    assert (b["input_ids"][0, 427:] == PAD_ID).all()


def test_mask_tokens_never_touches_special_tokens():
    rng = np.random.default_rng(0)
    ids = np.full((64, 100), 50, dtype=np.int64)
    ids[:, 0], ids[:, 90], ids[:, 91:] = CLS_ID, SEP_ID, PAD_ID
    ids[:, 10] = UNK_ID
    inputs, targets = mask_tokens(ids, rng, mask_prob=0.15, vocab_size=60)
    special = ids < 5
    assert (inputs[special] == ids[special]).all()
    assert (targets[special] == IGNORE_INDEX).all()
    chosen = targets != IGNORE_INDEX
    assert 0.12 < chosen.sum() / (~special).sum() < 0.18
    assert (targets[chosen] == ids[chosen]).all()
    masked = (inputs == MASK_ID) & chosen
    assert 0.75 < masked.sum() / chosen.sum() < 0.85
    assert ((inputs[chosen] >= 5) | (inputs[chosen] == MASK_ID)).all()


def _write_spikes(path, rows):
    df = pd.DataFrame(rows, columns=["id", "label", "split", "qc_status", "spike", "raw_spike"])
    for column in TRAIN_COLUMNS:
        if column not in df:
            df[column] = ""
    df.to_parquet(path / "spikes.parquet")


def test_load_split_keeps_labelled_passing_rows_and_names_missing_files(tmp_path):
    with pytest.raises(ArtifactError, match="no such directory"):
        load_split(tmp_path / "absent", "train")
    with pytest.raises(ArtifactError, match=r"spikes\.parquet: no such file"):
        load_split(tmp_path, "train")
    rows = [
        ["a", "alpha", "train", "good", "ACGT", "AC"],
        ["b", "beta", "train", "bad", "ACGT", "AC"],
        ["c", None, None, "good", "ACGT", "AC"],
        ["d", "delta", "val", "mediocre", "ACGT", "AC"],
        ["e", "delta", "test", "good", "ACGT", "AC"],
    ]
    _write_spikes(tmp_path, rows)
    assert load_split(tmp_path, "train").id.tolist() == ["a"]
    assert load_split(tmp_path, "val").id.tolist() == ["d"]
    assert load_pretraining_rows(tmp_path).id.tolist() == ["a", "c", "d"]
    assert sequences_for(load_split(tmp_path, "val"), "raw") == ["AC"]
    slim = load_split(tmp_path, "train", columns=("id", "raw_spike"))
    assert sorted(slim.columns) == ["id", "label", "qc_status", "raw_spike", "split"]
    assert slim.id.tolist() == ["a"]
    _write_spikes(tmp_path, rows[:3])
    with pytest.raises(ArtifactError, match="'val' split"):
        load_split(tmp_path, "val")
