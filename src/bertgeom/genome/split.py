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


@dataclass(frozen=True)
class LineageSplit:
    """A lineage-disjoint split: each genome's split, and which genomes' lineages are held out.

    ``held_out[i]`` is True for a genome whose lineage group was kept out of training (it is in
    ``test``); ``held_out_lineages`` lists those groups, sorted.
    """

    splits: tuple[str | None, ...]
    held_out: tuple[bool, ...]
    held_out_lineages: tuple[str, ...]
    n_groups_shared: int
    n_genomes_in_shared: int


def lineage_group(lineage: str | None, depth: int = 0) -> str | None:
    """The group of a Pango lineage: its first ``depth`` dot-separated parts (0 = all of it).

    ``lineage_group('B.1.1.529', 2) == 'B.1'``; aliases are not resolved (``'Q.3'`` stays apart
    from ``'B.1.1.7'``). Empty or missing lineages give None.
    """
    if lineage is None or not lineage.strip():
        return None
    parts = lineage.strip().split(".")
    return ".".join(parts[:depth] if depth > 0 else parts)


def _matches(group: str, prefixes: Sequence[str]) -> bool:
    """``group`` is one of ``prefixes`` or a sublineage of one (whole components)."""
    return any(group == p or group.startswith(p + ".") for p in prefixes)


def assign_lineage_splits(
    labels: Sequence[str | None],
    lineages: Sequence[str | None],
    spike_keys: Sequence[str],
    eligible: Sequence[bool],
    val_fraction: float,
    test_fraction: float,
    held_out_fraction: float,
    seed: int,
    holdout: Sequence[str] = (),
    min_lineages: int = 3,
) -> LineageSplit:
    """Hold whole lineage groups out of training, then split the rest as :func:`assign_splits`.

    Genomes are grouped by lineage group (``lineages``, already grouped, e.g. with
    :func:`lineage_group`); a group's class is its majority class. Per class, groups named in
    ``holdout`` (or sublineages of them) are held out; then, in a seeded random order, more
    groups are held out until about ``held_out_fraction`` of the class's genomes are, a group
    being taken only while it does not overshoot that target by more than half of it. A class
    with fewer than ``min_lineages`` groups keeps all of them in training (only ``holdout`` ones
    are held out), and at least one group of every class always stays in training. Held-out
    genomes all go to ``test``: no genome of a held-out lineage is in train or val. The other
    genomes (in-distribution) are split into train, val and test with :func:`assign_splits`
    (identical spikes kept together), so ``test`` holds both kinds; genomes without a lineage
    are never held out.
    """
    n = len(labels)
    groups: dict[str, list[int]] = defaultdict(list)
    for i in range(n):
        if eligible[i] and labels[i] is not None and lineages[i] is not None:
            groups[str(lineages[i])].append(i)
    by_class: dict[str, list[str]] = defaultdict(list)
    for name, members in groups.items():
        classes = [labels[i] for i in members]
        by_class[str(max(sorted(set(classes)), key=classes.count))].append(name)
    held: set[str] = set()
    for cls_index, cls in enumerate(sorted(by_class)):
        names = sorted(by_class[cls])
        sizes = {g: len(groups[g]) for g in names}
        target = held_out_fraction * sum(sizes.values())
        chosen = [g for g in names if _matches(g, holdout)]
        if len(names) >= min_lineages:
            rng = np.random.default_rng([seed, cls_index, 1])
            taken = sum(sizes[g] for g in chosen)
            for gi in rng.permutation(len(names)):
                g = names[int(gi)]
                if g not in chosen and taken + sizes[g] <= 1.5 * target:
                    chosen.append(g)
                    taken += sizes[g]
                if taken >= target:
                    break
        drawn = [g for g in chosen if not _matches(g, holdout)]
        if len(chosen) == len(names) and drawn:  # keep the largest drawn group in training
            chosen.remove(max(drawn, key=lambda g: (sizes[g], g)))
        held.update(chosen)
    held_out = [
        bool(eligible[i])
        and labels[i] is not None
        and lineages[i] is not None
        and str(lineages[i]) in held
        for i in range(n)
    ]
    rest = assign_splits(
        labels,
        spike_keys,
        [bool(eligible[i]) and not held_out[i] for i in range(n)],
        val_fraction,
        test_fraction,
        seed,
    )
    splits = ["test" if held_out[i] else rest.splits[i] for i in range(n)]
    return LineageSplit(
        splits=tuple(splits),
        held_out=tuple(held_out),
        held_out_lineages=tuple(sorted(held)),
        n_groups_shared=rest.n_groups_shared,
        n_genomes_in_shared=rest.n_genomes_in_shared,
    )
