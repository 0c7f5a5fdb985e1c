"""Constellation support and conflict, the note that flags a call, and hard negatives."""

from __future__ import annotations

import numpy as np
import pytest

from bertgeom.genome.constellation import (
    best_constellation,
    class_sites,
    constellation_support,
    defining_events,
    transplant,
)
from bertgeom.genome.mutations import call_mutations
from bertgeom.model.assess import MIN_SUPPORT, assess_calls, check_call
from bertgeom.model.hardneg import hard_negatives
from bertgeom.resources import CLASSES, genetic_code, spike_reference
from bertgeom.resources.variants import parse_mutation

CODE = genetic_code()
REF = spike_reference()
REF_AA = "".join(CODE[REF[i : i + 3]] for i in range(0, len(REF), 3))
CODONS = {aa: sorted(c for c, a in CODE.items() if a == aa) for aa in set(CODE.values())}


def build(mutations: list[str], masked: tuple[int, ...] = ()) -> tuple[str, set[str]]:
    """An aligned spike carrying ``mutations`` (substitutions, whole-codon deletions) with the
    codons of ``masked`` residues turned to N, and its calls."""
    cols = list(REF)
    for text in mutations:
        m = parse_mutation(text)
        a = 3 * (m.position - 1)
        cols[a : a + 3] = "---" if m.kind == "del" else CODONS[m.alt][0]
    for r in masked:
        cols[3 * (r - 1) : 3 * r] = "NNN"
    spike = "".join(cols)
    return spike, set(call_mutations(spike, [], REF, CODE).mutations)


BETA = [str(m) for m in class_sites("beta")]


def test_all_defining_mutations_present():
    spike, calls = build(BETA)
    s = constellation_support(calls, spike, "beta")
    assert (s.support, s.conflict, s.covered, s.total) == (len(BETA), 0, len(BETA), len(BETA))
    assert s.fraction == 1.0


def test_sites_masked_by_n_are_not_counted():
    spike, calls = build(BETA, masked=(417, 484))
    s = constellation_support(calls, spike, "beta")
    assert (s.support, s.conflict, s.covered) == (len(BETA) - 2, 0, len(BETA) - 2)


def test_reference_or_another_allele_is_a_conflict():
    others = [m for m in BETA if m not in ("S:E484K", "S:K417N")]
    spike, calls = build([*others, "S:E484Q"])  # K417 reference, E484 another allele
    s = constellation_support(calls, spike, "beta")
    assert (s.support, s.conflict, s.covered) == (len(BETA) - 2, 2, len(BETA))


def test_a_call_with_low_support_is_flagged_or_replaced():
    spike, calls = build(["S:E484K", "S:N501Y", "S:D614G"])  # Theta-like shortcut sites
    check = check_call("beta", calls, spike, CLASSES)
    assert (check.support, check.conflict) == (3, len(BETA) - 3)
    assert check.note.startswith("low constellation support: 3 of 7 beta sites")
    full, full_calls = build(BETA)
    probs = np.zeros((2, len(CLASSES)))
    for cls, p in [("beta", 0.7), ("gamma", 0.2), ("other", 0.1)]:
        probs[:, CLASSES.index(cls)] = p
    texts = [",".join(calls), ",".join(full_calls)]
    args = (CLASSES, probs, probs, np.zeros((2, 4)), [spike, full], texts, None)
    kept = assess_calls(*args, override=False)
    assert kept.flagged.tolist() == [True, False] and kept.ood is None
    assert kept.calls.tolist() == [CLASSES.index("beta")] * 2 and not kept.replaced.any()
    assert kept.support.tolist() == [3, len(BETA)]
    assert (kept.support_score >= 0).tolist() == [True, False]
    # by default the call goes to the most probable class the constellation allows: gamma has
    # 3 of 12 sites here, so "other"; the genome carrying all of beta's sites stays beta
    result = assess_calls(*args)
    assert result.calls.tolist() == [CLASSES.index("other"), CLASSES.index("beta")]
    assert result.replaced.tolist() == [True, False] and result.flagged.tolist() == [True, False]
    assert (
        result.notes[0]
        == "constellation check replaced the model's call beta (3 of 7 sites) by other"
    )
    assert result.support.tolist() == [-1, len(BETA)]


def test_other_call_carrying_a_constellation_is_flagged():
    alpha = [str(m) for m in class_sites("alpha")]
    spike, calls = build([m for m in alpha if m not in ("S:H69-", "S:V70-")])
    check = check_call("other", calls, spike, CLASSES)
    assert (check.support, check.conflict) == (-1, -1)
    assert "carries the alpha constellation: 8 of 10 sites" in check.note
    plain, plain_calls = build(["S:D614G"])
    assert check_call("other", plain_calls, plain, CLASSES).note == ""
    assert best_constellation(calls, spike, CLASSES)[0] == "alpha"


def test_real_genomes_support_their_class(ci_prepared):
    """Every CI genome of a named class carries at least MIN_SUPPORT of its class's sites,
    and no 'other' genome carries that much of any class."""
    from bertgeom.io.spikes import read_spikes

    df = read_spikes(ci_prepared / "spikes.parquet", ["label", "spike", "mutations"])
    for row in df.itertuples():
        calls = set(row.mutations.split(","))
        if row.label == "other":
            best = best_constellation(calls, row.spike, CLASSES)
            assert best[1].fraction < MIN_SUPPORT, row
        else:
            assert constellation_support(calls, row.spike, row.label).fraction >= MIN_SUPPORT


@pytest.mark.parametrize("cls", [c for c in CLASSES if c != "other"])
def test_defining_events_group_consecutive_residues(cls):
    events = defining_events(cls)
    flat = [m for e in events for m in e]
    assert all(m.kind != "ins" and str(m) != "S:D614G" for m in flat)
    for e in events:
        positions = [m.position for m in e]
        assert positions == list(range(positions[0], positions[0] + len(e)))


def test_transplant_copies_the_donor_columns():
    delta = [str(m) for m in class_sites("delta")]
    donor, _ = build(delta)
    event = next(e for e in defining_events("delta") if len(e) == 3)  # E156-, F157-, R158G
    out = transplant(REF, donor, event)
    calls = set(call_mutations(out, [], REF, CODE).mutations)
    assert {"S:E156-", "S:F157-", "S:R158G"} <= calls and "S:L452R" not in calls


def test_hard_negatives_carry_part_of_a_constellation():
    spikes, muts, labels = [], [], []
    for cls in ("alpha", "beta", "delta"):
        spike, calls = build([str(m) for m in class_sites(cls)])
        spikes.append(spike)
        muts.append(",".join(sorted(calls)))
        labels.append(cls)
    for i in range(4):
        alt = "W" if REF_AA[100 + i] != "W" else "C"
        spike, calls = build(["S:D614G", f"S:{REF_AA[100 + i]}{101 + i}{alt}"])
        spikes.append(spike)
        muts.append(",".join(sorted(calls)))
        labels.append("other")
    made = hard_negatives(spikes, muts, labels, per_other=6.0, seed=3)
    assert len(made) == 24 and made == hard_negatives(spikes, muts, labels, 6.0, seed=3)
    for j, spike in enumerate(made):
        cls = ("alpha", "beta", "delta")[j % 3]
        calls = set(call_mutations(spike, [], REF, CODE).mutations)
        s = constellation_support(calls, spike, cls)
        assert 2 <= s.support <= int(0.5 * s.total), (cls, s)  # D614G plus 1-3 events


def test_the_detector_does_not_flag_a_call_the_constellation_confirms():
    """An out-of-distribution score flags a call unless the genome carries its class's whole
    covered constellation (none contradicted, most sites covered); ``ood`` keeps the verdict."""
    from bertgeom.model.openset import Detector

    full, full_calls = build(BETA)
    masked, masked_calls = build(BETA, masked=(417,))  # 6 of 7 covered, all carried
    sparse, sparse_calls = build(BETA, masked=(80, 215, 417, 484))  # 3 of 7 covered
    short, short_calls = build([m for m in BETA if m != "S:K417N"])  # one conflict
    spikes = [full, masked, sparse, short, REF]
    texts = [",".join(c) for c in (full_calls, masked_calls, sparse_calls, short_calls, set())]
    probs = np.zeros((5, len(CLASSES)))
    probs[:4, CLASSES.index("beta")] = 0.9
    probs[4, CLASSES.index("other")] = 0.9
    probs[probs == 0] = 0.1 / (len(CLASSES) - 1)
    logits = np.log(probs)
    # ``msp``: one minus the top probability, above a threshold of 0.05 for every genome
    detector = Detector("msp", threshold=0.05, min_confidence=0.0)
    result = assess_calls(
        CLASSES, probs, logits, np.zeros((5, 4)), spikes, texts, detector, override=False
    )
    assert result.ood is not None and result.ood.all()
    assert result.confirmed.tolist() == [True, True, False, False, False]
    assert result.flagged.tolist() == [False, False, True, True, True]
    assert all(n.startswith("out of distribution: msp") for n in result.notes[2:])
    assert result.support.tolist()[:4] == [len(BETA), len(BETA) - 1, 3, len(BETA) - 1]
