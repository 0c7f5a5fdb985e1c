"""Tables of how calls fare on held-out lineages, and how well open-set scores find them.

Pure functions on per-genome arrays; ``evaluate`` writes their rows (``lineages.tsv``,
``open_set.tsv``, docs/formats.md).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence

import numpy as np

from bertgeom.model.openset import auroc

LINEAGE_COLUMNS = (
    "lineage", "class", "held_out", "n", "right", "right_flagged", "wrong_flagged",
    "wrong_unflagged", "calls",
)  # fmt: skip
OPEN_SET_COLUMNS = (
    "method", "threshold", "auroc_held_out", "auroc_wrong", "correct_in_dist_flagged",
    "held_out_flagged", "held_out_right_or_flagged", "wrong_flagged",
)  # fmt: skip


def lineage_rows(
    lineages: Sequence[str | None],
    truth: Sequence[str],
    calls: Sequence[str],
    flagged: np.ndarray,
    held_out: np.ndarray,
) -> list[list[object]]:
    """One row per (lineage, class), held-out lineages first, then by decreasing size:
    genomes, right calls (with a flag among them), wrong calls flagged and not, and the calls
    made (``class:count``, most frequent first)."""
    groups: dict[tuple[str, str, bool], list[int]] = defaultdict(list)
    for i, lin in enumerate(lineages):
        groups[(lin or "", truth[i], bool(held_out[i]))].append(i)
    rows = []
    for (lin, cls, held), idx in groups.items():
        right = [i for i in idx if calls[i] == truth[i]]
        wrong = [i for i in idx if calls[i] != truth[i]]
        made = Counter(calls[i] for i in idx).most_common()
        rows.append([
            lin, cls, str(held).lower(), len(idx), len(right),
            sum(bool(flagged[i]) for i in right), sum(bool(flagged[i]) for i in wrong),
            sum(not flagged[i] for i in wrong), ",".join(f"{c}:{n}" for c, n in made),
        ])  # fmt: skip
    rows.sort(key=lambda r: (r[2] != "true", -int(r[3]), str(r[0])))  # type: ignore[call-overload]
    return rows


def open_set_rows(
    scores: Mapping[str, np.ndarray | None],
    flags: Mapping[str, np.ndarray],
    thresholds: Mapping[str, float],
    correct: np.ndarray,
    held_out: np.ndarray,
) -> list[list[object]]:
    """One row per method: threshold; AUROC of held-out-lineage genomes against
    in-distribution genomes (empty without both, or without a score); AUROC of wrong against
    right calls; shares of correct in-distribution calls flagged, of held-out genomes flagged,
    of held-out genomes right or flagged, and of wrong calls flagged."""
    correct = np.asarray(correct, dtype=bool)
    held_out = np.asarray(held_out, dtype=bool)
    rows = []
    for name, score in scores.items():
        flag = np.asarray(flags[name], dtype=bool)
        nan = float("nan")
        rows.append([
            name,
            _fmt(thresholds.get(name, nan)),
            _fmt(nan if score is None else auroc(score[held_out], score[~held_out])),
            _fmt(nan if score is None else auroc(score[~correct], score[correct])),
            _fmt(_share(flag[correct & ~held_out])),
            _fmt(_share(flag[held_out])),
            _fmt(_share((flag | correct)[held_out])),
            _fmt(_share(flag[~correct])),
        ])  # fmt: skip
    return rows


def _share(x: np.ndarray) -> float:
    return float(np.mean(x)) if len(x) else float("nan")


def _fmt(x: float) -> str:
    return "" if not np.isfinite(x) else f"{x:.4f}"
