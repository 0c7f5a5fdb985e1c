"""Work split over the CPU threads torch may use, one torch thread per worker.

Many geometry kernels on the CPU are loops over small matrices (an SVD per attention map, a
sort per map's rows, a dynamic programme over a few hundred steps): torch's own intra-op
parallelism gains little there (LAPACK on a 427 x 427 map is nearly serial; a 100-element op
is not split at all, and each split op pays an OpenMP barrier). Splitting the matrices among
``torch.get_num_threads()`` Python threads, each running torch (and numpy, which releases the
GIL) on one thread, keeps every core busy: 1.7x for the attention SVDs on two cores.

A worker sets its own torch thread count to one (OpenMP's thread count is per thread; the
process-wide default that torch also sets, read by threads it meets later, is set back to the
caller's count when the split ends) and runs under the caller's grad and inference modes (both are
thread-local in torch); with one torch thread everything runs in the caller's thread. So every
chunk runs on one torch thread whatever the split: the values do not depend on the thread
count or on how the items were grouped.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np
import torch

T = TypeVar("T")


def workers(n: int) -> int:
    """Threads a split of ``n`` items uses: torch's thread count, at most ``n`` (at least 1)."""
    return max(1, min(torch.get_num_threads(), n))


def bounds(n: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous, near-equal ranges covering [0, n)."""
    edges = np.linspace(0, n, max(parts, 1) + 1).astype(int)
    return [(int(a), int(b)) for a, b in itertools.pairwise(edges)]


def _one_thread() -> None:
    torch.set_num_threads(1)


def _as_caller(fn: Callable[[int, int], T]) -> Callable[[int, int], T]:
    """``fn`` run under the calling thread's grad and inference modes."""
    inference, grad = torch.is_inference_mode_enabled(), torch.is_grad_enabled()

    def run(lo: int, hi: int) -> T:
        with torch.inference_mode(inference), torch.set_grad_enabled(grad):
            return fn(lo, hi)

    return run


def in_chunks(work: Callable[[int, int], None], n: int) -> None:
    """``work(lo, hi)`` over [0, n) in ``workers(n)`` contiguous chunks, one thread each.

    Exceptions raised by a chunk propagate (the first one, after every chunk has ended).
    """
    map_chunks(work, n)


def map_chunks(fn: Callable[[int, int], T], n: int) -> list[T]:
    """``[fn(lo, hi) for each chunk]`` in order, the chunks as in :func:`in_chunks`.

    Every chunk runs with one torch thread, also when there is a single chunk (in a worker
    then, unless torch uses one thread anyway): a kernel's result never depends on how its
    matrices were grouped (LAPACK's rounding depends on its thread count).
    """
    if torch.get_num_threads() == 1:
        return [fn(0, n)]
    threads = workers(n)
    run = _as_caller(fn)
    caller = torch.get_num_threads()
    try:
        with ThreadPoolExecutor(threads, initializer=_one_thread) as pool:
            futures = [pool.submit(run, lo, hi) for lo, hi in bounds(n, threads)]
            return [f.result() for f in futures]
    finally:
        # a worker's set_num_threads(1) also sets the default of threads torch meets later
        torch.set_num_threads(caller)
