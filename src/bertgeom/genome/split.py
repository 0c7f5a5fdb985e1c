"""Seeded train/val/test split, stratified by class, identical spikes kept together."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class SplitResult:
    """Split of each genome (``None`` where it takes no part) and what the grouping did."""

    splits: tuple[str | None, ...]
    n_groups_shared: int  # groups of identical spikes with more than one genome
    n_genomes_in_shared: int  # genomes in those groups


def assign_splits(
    labels: Sequence[str | None],
    spike_keys: Sequence[str],
    eligible: Sequence[bool],
    val_fraction: float,
    test_fraction: float,
    seed: int,
) -> SplitResult:
    """Assign each eligible, labelled genome to train, val or test.

    Genomes with the same ``spike_key`` (identical spike sequences) form one group that goes to
    one split whole, so the test set never contains a spike seen in training. Groups are
    stratified by their majority class: within each class, groups are taken largest first (in
    an order shuffled with ``seed`` among groups of equal size) and each goes to the split
    furthest below its targets, counting both genomes and distinct spikes relative to their
    targets (train, val, test on ties). A class with three or more groups thus gets at least one
    group in every split with a non-zero fraction, and val and test get their share of distinct
    spikes.
    """
    n = len(labels)
    groups: dict[str, list[int]] = defaultdict(list)
    for i in range(n):
        if eligible[i] and labels[i] is not None:
            groups[spike_keys[i]].append(i)
    by_class: dict[str, list[list[int]]] = defaultdict(list)
    for members in groups.values():
        classes = [labels[i] for i in members]
        majority = max(sorted(set(classes)), key=classes.count)
        by_class[str(majority)].append(members)
    fractions = {
        "train": 1.0 - val_fraction - test_fraction,
        "val": val_fraction,
        "test": test_fraction,
    }
    out: list[str | None] = [None] * n
    for cls_index, cls in enumerate(sorted(by_class)):
        cls_groups = sorted(by_class[cls])  # deterministic order before shuffling
        rng = np.random.default_rng([seed, cls_index])
        tiebreak = rng.permutation(len(cls_groups))
        # largest groups first (a greedy fill stays balanced), seeded order among equal sizes
        order = sorted(range(len(cls_groups)), key=lambda g: (-len(cls_groups[g]), tiebreak[g]))
        total = sum(len(g) for g in cls_groups)
        targets = {s: fractions[s] * total for s in SPLITS}
        group_targets = {s: fractions[s] * len(cls_groups) for s in SPLITS}
        counts = dict.fromkeys(SPLITS, 0)
        group_counts = dict.fromkeys(SPLITS, 0)
        for gi in order:
            members = cls_groups[gi]
            split = _neediest(targets, counts, group_targets, group_counts)
            counts[split] += len(members)
            group_counts[split] += 1
            for i in members:
                out[i] = split
    shared = [g for g in groups.values() if len(g) > 1]
    return SplitResult(
        splits=tuple(out),
        n_groups_shared=len(shared),
        n_genomes_in_shared=sum(len(g) for g in shared),
    )


def _neediest(
    targets: dict[str, float],
    counts: dict[str, int],
    group_targets: dict[str, float],
    group_counts: dict[str, int],
) -> str:
    """The split furthest below its targets: relative deficit of genomes plus relative deficit
    of distinct spikes (so that val and test get their share of distinct spikes too, not one
    large group each); ties go to train, val, test in that order."""
    best, best_gap = "train", -np.inf
    for s in SPLITS:
        if targets[s] <= 0:
            continue
        gap = (targets[s] - counts[s]) / targets[s]
        gap += (group_targets[s] - group_counts[s]) / group_targets[s]
        if gap > best_gap:
            best, best_gap = s, gap
    return best
