"""Hard negatives for ``other``: training spikes that carry part of a named class's constellation.

A classifier trained on a few lineages per class can learn a shortcut (Theta's E484K and N501Y
read as Beta; Epsilon's L452R as Delta) instead of the constellation. Each hard negative is a
real ``other`` training spike (the background) into which one to ``max_events`` defining events
of a named class (:func:`bertgeom.genome.constellation.defining_events`) are copied, column for
column, from real training genomes of that class that carry them, labelled ``other``. The
planted mutations stay at most ``max_share`` of the class's core defining sites (D614G counted
when the background has it), so a hard negative never carries most of a constellation. Classes
take turns; everything derives from ``seed``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bertgeom.genome.constellation import (
    carries_event,
    class_sites,
    constellation_support,
    defining_events,
    transplant,
)


def hard_negatives(
    spikes: Sequence[str],
    mutations: Sequence[str],
    labels: Sequence[str],
    per_other: float,
    seed: int,
    max_events: int = 3,
    max_share: float = 0.5,
) -> list[str]:
    """Aligned spikes of hard negatives made from training rows.

    Parameters
    ----------
    spikes, mutations, labels
        The training rows: aligned spike, comma-separated mutations, class.
    per_other
        Hard negatives per ``other`` row (0 = none).
    seed
        Seed of every choice.
    max_events
        Most defining events planted in one spike.
    max_share
        Most defining mutations planted, as a share of the class's core defining sites.

    Returns
    -------
    list of str
        The new spikes, all of class ``other``; empty when there is no ``other`` row or no
        donor of any named class.
    """
    others = [i for i, lab in enumerate(labels) if lab == "other"]
    n = round(per_other * len(others))
    muts = [set(m.split(",")) if m else set() for m in mutations]
    donors: dict[str, list[list[int]]] = {}
    for cls in sorted(set(labels)):
        rows = [i for i, lab in enumerate(labels) if lab == cls]
        per_event = [
            [i for i in rows if carries_event(muts[i], spikes[i], ev)]
            for ev in defining_events(cls)
        ]
        if any(per_event):
            donors[cls] = per_event
    classes = sorted(donors)
    if n == 0 or not others or not classes:
        return []
    rng = np.random.default_rng([seed, 19])
    out: list[str] = []
    for j in range(n):
        cls = classes[j % len(classes)]
        events = defining_events(cls)
        background = others[int(rng.integers(len(others)))]
        spike = spikes[background]
        # the background's own support (D614G, a shared site) counts against the budget
        carried = constellation_support(muts[background], spike, cls).support
        budget = int(max_share * len(class_sites(cls)))
        wanted, planted = int(rng.integers(1, max_events + 1)), 0
        for e in rng.permutation(len(events)):
            pool, event = donors[cls][int(e)], events[int(e)]
            if planted == wanted or not pool or carried + len(event) > budget:
                continue
            spike = transplant(spike, spikes[int(rng.choice(pool))], event)
            carried, planted = carried + len(event), planted + 1
        out.append(spike)
    return out
