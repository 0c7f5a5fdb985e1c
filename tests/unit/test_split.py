"""The grouped, stratified, seeded split."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from bertgeom.genome.split import assign_lineage_splits, assign_splits, lineage_group


def test_identical_spikes_stay_in_one_split_and_fractions_hold():
    labels = ["a"] * 300 + ["b"] * 30
    keys = [f"k{i // 5}" if i < 100 else f"u{i}" for i in range(330)]  # 20 groups of 5
    res = assign_splits(labels, keys, [True] * 330, 0.1, 0.2, seed=1)
    by_key: dict[str, set] = {}
    for k, s in zip(keys, res.splits, strict=True):
        by_key.setdefault(k, set()).add(s)
    assert all(len(v) == 1 for v in by_key.values())
    counts = Counter(s for lab, s in zip(labels, res.splits, strict=True) if lab == "a")
    assert abs(counts["test"] - 60) <= 5 and abs(counts["val"] - 30) <= 5
    counts_b = Counter(s for lab, s in zip(labels, res.splits, strict=True) if lab == "b")
    assert counts_b["test"] == 6 and counts_b["val"] == 3
    assert res.n_groups_shared == 20 and res.n_genomes_in_shared == 100


def test_seeded_and_deterministic():
    labels = ["a"] * 50
    keys = [str(i) for i in range(50)]
    one = assign_splits(labels, keys, [True] * 50, 0.1, 0.2, seed=3).splits
    assert one == assign_splits(labels, keys, [True] * 50, 0.1, 0.2, seed=3).splits
    assert one != assign_splits(labels, keys, [True] * 50, 0.1, 0.2, seed=4).splits


def test_ineligible_and_unlabelled_get_no_split():
    res = assign_splits(
        ["a", None, "a", "a"], ["1", "2", "3", "4"], [True, True, False, True], 0.1, 0.2, seed=0
    )
    assert res.splits[1] is None and res.splits[2] is None


def test_a_huge_group_does_not_swallow_the_test_set():
    labels = ["a"] * 1000
    keys = ["big"] * 600 + [str(i) for i in range(400)]
    res = assign_splits(labels, keys, [True] * 1000, 0.064, 0.2, seed=0)
    c = Counter(res.splits)
    assert res.splits[0] == "train" and c["train"] >= 700
    assert c["test"] >= 100 and c["val"] >= 25


def test_val_and_test_get_their_share_of_distinct_spikes():
    # a few large groups and many singletons: distinct spikes spread over every split
    labels = ["a"] * 700
    keys = [f"g{i // 100}" for i in range(500)] + [f"s{i}" for i in range(200)]
    res = assign_splits(labels, keys, [True] * 700, 0.1, 0.2, seed=0)
    distinct = {
        s: len({k for k, x in zip(keys, res.splits, strict=True) if x == s})
        for s in ("train", "val", "test")
    }
    assert distinct["val"] >= 8 and distinct["test"] >= 30


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abc"), st.integers(0, 40)), min_size=1, max_size=200))
def test_every_eligible_labelled_genome_gets_a_split(items):
    labels = [lab for lab, _ in items]
    keys = [f"{lab}{k}" for lab, k in items]
    res = assign_splits(labels, keys, [True] * len(items), 0.1, 0.2, seed=0)
    assert all(s in ("train", "val", "test") for s in res.splits)
    for cls in "abc":  # a class with >= 3 groups reaches every split
        groups = {k for lab, k in zip(labels, keys, strict=True) if lab == cls}
        splits = {s for lab, s in zip(labels, res.splits, strict=True) if lab == cls}
        if len(groups) >= 3:
            assert splits == {"train", "val", "test"}


# --- lineage-disjoint split ---------------------------------------------------------------------


def _lineage_data():
    """Class a: 8 lineages of 10-60 genomes; class b: 2 lineages (too few to hold any out)."""
    labels, lineages, keys = [], [], []
    for j, size in enumerate([60, 40, 30, 20, 20, 15, 10, 10]):
        for i in range(size):
            labels.append("a")
            lineages.append(f"B.1.{j}")
            keys.append(f"a{j}-{i // 3}")  # identical spikes within a lineage
    for j in range(2):
        for i in range(12):
            labels.append("b")
            lineages.append(f"P.{j + 1}")
            keys.append(f"b{j}-{i}")
    return labels, lineages, keys


def test_lineage_split_never_puts_a_lineage_in_two_splits():
    labels, lineages, keys = _lineage_data()
    res = assign_lineage_splits(labels, lineages, keys, [True] * len(labels), 0.1, 0.2, 0.2, 7)
    for lin in set(lineages):
        idx = [i for i, x in enumerate(lineages) if x == lin]
        held = {res.held_out[i] for i in idx}
        assert len(held) == 1, lin  # a lineage is held out whole or not at all
        if held == {True}:
            assert lin in res.held_out_lineages
            assert {res.splits[i] for i in idx} == {"test"}  # never in train or val
    held_a = sum(h for h, lab in zip(res.held_out, labels, strict=True) if lab == "a")
    assert 0.2 * 205 <= held_a <= 1.5 * 0.2 * 205
    # class b has 2 lineages (< min_lineages 3): both stay in training
    assert not any(h for h, lab in zip(res.held_out, labels, strict=True) if lab == "b")
    trained = {lineages[i] for i, s in enumerate(res.splits) if s == "train"}
    assert not trained & set(res.held_out_lineages)
    assert {res.splits[i] for i in range(len(labels)) if not res.held_out[i]} == {
        "train", "val", "test"
    }  # fmt: skip


def test_lineage_split_is_seeded_and_honours_holdout():
    labels, lineages, keys = _lineage_data()
    eligible = [True] * len(labels)
    one = assign_lineage_splits(labels, lineages, keys, eligible, 0.1, 0.2, 0.2, 1)
    assert one == assign_lineage_splits(labels, lineages, keys, eligible, 0.1, 0.2, 0.2, 1)
    forced = assign_lineage_splits(
        labels, lineages, keys, eligible, 0.1, 0.2, 0.2, 1, holdout=("B.1.0", "P.2")
    )
    assert {"B.1.0", "P.2"} <= set(forced.held_out_lineages)
    assert "P.1" not in forced.held_out_lineages  # b keeps its other lineage in training


def test_lineage_groups_and_sublineages():
    assert lineage_group("B.1.1.529", 2) == "B.1" and lineage_group("AY.4.2", 0) == "AY.4.2"
    assert lineage_group("", 0) is None and lineage_group(None, 3) is None
    labels = ["a"] * 9
    lineages = ["B.1.2", "B.1.2.5", "B.1.20", "C.1", "C.1", "D.1", "D.1", "E.1", "E.1"]
    res = assign_lineage_splits(
        labels, lineages, [str(i) for i in range(9)], [True] * 9, 0.0, 0.0, 0.0, 0,
        holdout=("B.1.2",),
    )  # fmt: skip
    assert res.held_out[:3] == (True, True, False)  # B.1.20 is no sublineage of B.1.2
