"""How far to trust each call: constellation support, open-set score, and the note that flags it.

:func:`assess_calls` adds to each call, as pangolin's scorpio and note do, what speaks against
it:

- ``support`` / ``conflict``: the predicted class's core defining spike mutations the genome
  carries / contradicts among the sites it covers (:mod:`bertgeom.genome.constellation`); empty
  for ``other``;
- a named-class call is flagged ``low constellation support`` when ``support`` is below
  ``min_support`` (:data:`MIN_SUPPORT`) of the covered sites, or when none is covered;
- an ``other`` call is flagged when the genome carries at least ``min_support`` of a named
  class's covered sites (``carries the X constellation``);
- the open-set detector (:mod:`bertgeom.model.openset`) flags genomes unlike the training data
  (``out of distribution``) and calls below its minimum confidence (``low confidence``), except
  a call the constellation *confirms*: a named class whose genome carries every core defining
  site of the class it covers, with no conflict, and covers at least ``min_support`` of them. A
  genome far from the training genomes that carries its class's whole constellation is that
  class by definition (a new sub-lineage, a recombinant of that variant): its distance stays in
  ``ood``/``ood_distance``, and it does not flag the call. On the regular test split of
  ../shared/data (``make model``) the detector alone flags 28 of 1,245 correct calls (2.2 %),
  24 of them confirmed (all 9 delta sites and the like); with this rule 4 (0.3 %), and the one
  wrong call stays flagged.

``note`` joins the reasons with ``; `` (empty = no flag).

With ``override`` (the default), a named-class call with low constellation support is replaced,
as pangolin lets scorpio replace a lineage assignment that the constellation contradicts: the
call becomes the model's most probable class that the genome's constellation allows (``other``,
or a named class with at least ``min_support`` of its covered sites), and the note says so
(``constellation check replaced the model's call beta (3 of 7 sites) by other``). Without it the
model's call is kept and only flagged. A held-out lineage carrying a few sites of a class (Theta's
E484K, N501Y and V1176F, three of Gamma's; Kappa's L452R and P681R, two of Delta's) is then
called ``other``, and flagged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bertgeom.genome.constellation import best_constellation, class_sites, constellation_support
from bertgeom.model.openset import Detector

#: Lowest share of covered defining sites a named-class call must carry. In ../shared/data every
#: genome of a named class but one (a delta genome, 5 of 9 sites) carries at least 0.67 of its
#: class's covered core sites (99 % of them 0.7 or more), no "other" genome more than 0.56 of
#: any class's, and a hard negative at most 0.5.
MIN_SUPPORT = 0.6


@dataclass(frozen=True)
class Assessment:
    """Per genome: constellation counts (-1 = not applicable), open-set score and flag, note."""

    support: np.ndarray  # (n,) int
    conflict: np.ndarray  # (n,) int
    confirmed: np.ndarray  # (n,) bool: the constellation confirms the call (module docstring)
    ood: np.ndarray | None  # (n,) bool, None without a detector
    ood_score: np.ndarray | None  # (n,) float
    notes: tuple[str, ...]
    support_score: np.ndarray  # (n,) float: past the constellation threshold when >= 0
    calls: np.ndarray  # (n,) int: the final call (the model's, or its replacement)
    replaced: np.ndarray  # (n,) bool: the constellation check replaced the model's call

    @property
    def flagged(self) -> np.ndarray:
        """(n,) True where the note is not empty."""
        return np.array([bool(n) for n in self.notes], dtype=bool)


@dataclass(frozen=True)
class CallCheck:
    """The constellation check of one call: counts (-1 for ``other``), note, and ``score``:
    ``min_support`` minus the support fraction for a named class, the best named class's
    fraction minus ``min_support`` for ``other`` (flagged when the note is not empty)."""

    support: int
    conflict: int
    note: str
    score: float
    confirmed: bool = False


def check_call(
    label: str,
    mutations: set[str],
    spike: str,
    classes: Sequence[str],
    min_support: float = MIN_SUPPORT,
) -> CallCheck:
    """The constellation check of a call of ``label`` (see the module docstring)."""
    if class_sites(label):
        s = constellation_support(mutations, spike, label)
        score = min_support - s.fraction
        if s.covered == 0:
            return CallCheck(s.support, s.conflict, f"no defining site of {label} covered", score)
        if s.fraction < min_support:
            note = f"low constellation support: {s.support} of {s.covered} {label} sites"
            return CallCheck(s.support, s.conflict, note, score)
        confirmed = s.conflict == 0 and s.covered >= min_support * s.total
        return CallCheck(s.support, s.conflict, "", score, confirmed)
    best = best_constellation(mutations, spike, [c for c in classes if c != label])
    if best is None:
        return CallCheck(-1, -1, "", -min_support)
    cls, s = best
    if s.covered and s.fraction >= min_support:
        note = f"carries the {cls} constellation: {s.support} of {s.covered} sites"
        return CallCheck(-1, -1, note, s.fraction - min_support)
    return CallCheck(-1, -1, "", s.fraction - min_support)


def assess_calls(
    labels: Sequence[str],
    probs: np.ndarray,
    logits: np.ndarray,
    cls: np.ndarray,
    spikes: Sequence[str],
    mutations: Sequence[str],
    detector: Detector | None,
    temperature: float = 1.0,
    min_support: float = MIN_SUPPORT,
    override: bool = True,
) -> Assessment:
    """Assess the calls of ``n`` genomes.

    Parameters
    ----------
    labels
        The model's classes.
    probs, logits, cls
        (n, class) calibrated probabilities and raw logits, (n, d_model) final [CLS] states.
    spikes, mutations
        Aligned spikes and comma-separated mutation calls (``prepare``'s columns).
    detector
        The open-set detector, or None.
    temperature, min_support
        Calibration temperature (for ``msp``), constellation threshold.
    override
        Replace a named-class call with low constellation support (module docstring).
    """
    pred = probs.argmax(axis=1) if len(probs) else np.zeros(0, dtype=np.int64)
    support = np.full(len(pred), -1, dtype=np.int64)
    conflict = np.full(len(pred), -1, dtype=np.int64)
    support_score = np.zeros(len(pred))
    notes: list[list[str]] = []
    calls = pred.copy()
    replaced = np.zeros(len(pred), dtype=bool)
    confirmed = np.zeros(len(pred), dtype=bool)
    for i, k in enumerate(pred):
        muts = set(mutations[i].split(",")) if mutations[i] else set()
        check = check_call(labels[k], muts, spikes[i], labels, min_support)
        support_score[i] = check.score
        note = check.note
        if override and note.startswith("low constellation support"):
            calls[i] = _allowed(probs[i], labels, muts, spikes[i], min_support)
            replaced[i] = True
            new = check_call(labels[calls[i]], muts, spikes[i], labels, min_support)
            note = (
                f"constellation check replaced the model's call {labels[k]} "
                f"({check.support} of {check.support + check.conflict} sites) by "
                f"{labels[calls[i]]}" + (f"; {new.note}" if new.note else "")
            )
            check = new
        support[i], conflict[i] = check.support, check.conflict
        confirmed[i] = check.confirmed
        notes.append([note] if note else [])
    ood = score = None
    if detector is not None and len(pred):
        score = detector.scores(logits, cls, spikes, temperature)
        confidence = probs.max(axis=1)
        ood = detector.flag(score, confidence)
        for i in np.flatnonzero(ood & ~confirmed):
            if score[i] > detector.threshold:
                notes[i].append(
                    f"out of distribution: {detector.method} {score[i]:.2f} > "
                    f"{detector.threshold:.2f}"
                )
            else:
                notes[i].append(f"low confidence: {confidence[i]:.2f}")
    joined = tuple("; ".join(n) for n in notes)
    return Assessment(
        support, conflict, confirmed, ood, score, joined, support_score, calls, replaced
    )


def _allowed(
    probs: np.ndarray, labels: Sequence[str], mutations: set[str], spike: str, min_support: float
) -> int:
    """The most probable class after the top one that the genome's constellation allows:
    ``other``, or a named class with at least ``min_support`` of its covered sites."""
    for k in np.argsort(-probs)[1:]:
        label = labels[int(k)]
        if not class_sites(label):
            return int(k)
        s = constellation_support(mutations, spike, label)
        if s.covered and s.fraction >= min_support:
            return int(k)
    return int(np.argsort(-probs)[0])  # no class allowed (a model without "other"): keep it
