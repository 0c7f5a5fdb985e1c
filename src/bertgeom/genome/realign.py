"""Exact global alignment of short windows with minimap2's ``asm20`` scores.

Used by the simulator to write nearby defining changes the way a real aligner will see them.
"""

from __future__ import annotations

_MATCH, _MISMATCH, _GAP_PIECES = 1, 4, ((6, 2), (26, 1))
_NEG = -(10**9)


def align_global(ref: str, query: str) -> list[tuple[str, str]]:
    """Optimal global alignment with minimap2's ``asm20`` scores (two-piece affine gaps).

    Parameters
    ----------
    ref, query
        Short sequences (quadratic time and memory: meant for windows of ~100 nt).

    Returns
    -------
    list of (str, str)
        Alignment columns ``(ref_base, query_base)``, ``''`` on the gapped side.
        Ties prefer a match/mismatch, then a deletion, then an insertion, from the end.
    """
    n, m = len(ref), len(query)
    k_range = range(len(_GAP_PIECES))
    hl = [[_NEG] * (m + 1) for _ in range(n + 1)]  # best score of ref[:i] vs query[:j]
    dl = [[[_NEG] * (m + 1) for _ in range(n + 1)] for _ in k_range]  # ... ending in a deletion
    il = [[[_NEG] * (m + 1) for _ in range(n + 1)] for _ in k_range]  # ... in an insertion
    hl[0][0] = 0
    for i in range(n + 1):
        for j in range(m + 1):
            if not (i or j):
                continue
            best = _NEG
            for k in k_range:
                q, e = _GAP_PIECES[k]
                if i:
                    dl[k][i][j] = max(hl[i - 1][j] - q - e, dl[k][i - 1][j] - e)
                    best = max(best, dl[k][i][j])
                if j:
                    il[k][i][j] = max(hl[i][j - 1] - q - e, il[k][i][j - 1] - e)
                    best = max(best, il[k][i][j])
            if i and j:
                diag = hl[i - 1][j - 1] + (_MATCH if ref[i - 1] == query[j - 1] else -_MISMATCH)
                best = max(best, diag)
            hl[i][j] = best
    return _traceback(ref, query, hl, dl, il)


def _traceback(ref: str, query: str, hl: list, dl: list, il: list) -> list[tuple[str, str]]:
    cols: list[tuple[str, str]] = []
    i, j = len(ref), len(query)
    while i or j:
        score = hl[i][j]
        if (
            i
            and j
            and score == hl[i - 1][j - 1] + (_MATCH if ref[i - 1] == query[j - 1] else -_MISMATCH)
        ):
            cols.append((ref[i - 1], query[j - 1]))
            i, j = i - 1, j - 1
            continue
        k = next((k for k in range(len(_GAP_PIECES)) if i and dl[k][i][j] == score), None)
        if k is not None:
            q, e = _GAP_PIECES[k]
            while True:  # follow the deletion back to where it opened
                cols.append((ref[i - 1], ""))
                opened = dl[k][i][j] == hl[i - 1][j] - q - e
                i -= 1
                if opened:
                    break
            continue
        k = next(k for k in range(len(_GAP_PIECES)) if il[k][i][j] == score)
        q, e = _GAP_PIECES[k]
        while True:
            cols.append(("", query[j - 1]))
            opened = il[k][i][j] == hl[i][j - 1] - q - e
            j -= 1
            if opened:
                break
    return cols[::-1]
