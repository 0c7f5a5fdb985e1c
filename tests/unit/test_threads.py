"""Work split over threads (geometry.threads) and the kernels that use it: the same values
whatever the thread count and however the matrices are grouped."""

from __future__ import annotations

import itertools
import threading

import pytest
import torch

from bertgeom.geometry import threads
from bertgeom.geometry.direction import attention_asymmetry, score_directionality
from bertgeom.geometry.head_measures import row_statistics
from bertgeom.geometry.spectra import spectrum


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def _attention(batch: int, heads: int, pos: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(3 * torch.randn(batch, heads, pos, pos, generator=g), -1)


@pytest.mark.parametrize("n", [0, 1, 2, 7])
def test_map_chunks_covers_the_range_in_order(two_threads, n):
    chunks = threads.map_chunks(lambda lo, hi: (lo, hi), n)
    assert chunks[0][0] == 0 and chunks[-1][1] == n
    assert all(a[1] == b[0] for a, b in itertools.pairwise(chunks))
    assert len(chunks) == threads.workers(n)


def test_workers_run_one_torch_thread_in_the_callers_modes(two_threads):
    seen = []

    def probe(lo: int, hi: int) -> None:
        seen.append(
            (torch.get_num_threads(), torch.is_inference_mode_enabled(), threading.get_ident())
        )

    with torch.inference_mode():
        threads.in_chunks(probe, 4)
    assert len(seen) == 2
    assert all(n == 1 and inference for n, inference, _ in seen)
    assert threading.get_ident() not in {t for *_, t in seen}
    assert torch.get_num_threads() == 2  # the caller's setting is unchanged
    seen.clear()
    threads.in_chunks(probe, 1)  # one chunk: still one torch thread (in a worker)
    assert seen[0][0] == 1 and not seen[0][1]


def test_one_torch_thread_runs_in_the_caller():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        idents = threads.map_chunks(lambda lo, hi: threading.get_ident(), 5)
    finally:
        torch.set_num_threads(before)
    assert idents == [threading.get_ident()]


def test_an_exception_in_a_chunk_propagates(two_threads):
    def fail(lo: int, hi: int) -> None:
        if lo > 0:
            raise ValueError(f"chunk {lo}")

    with pytest.raises(ValueError, match="chunk"):
        threads.in_chunks(fail, 4)


def test_kernels_do_not_depend_on_grouping_or_thread_count(two_threads):
    a = _attention(5, 2, 23)
    mask = torch.ones(5, 23, dtype=torch.bool)
    mask[1, 20:] = False
    mask[3, 15:] = False
    whole = spectrum(a, mask, square=True).singular_values
    for i in range(5):  # one genome alone gives its values in the batch, to the last bit
        alone = spectrum(a[i : i + 1], mask[i : i + 1], square=True).singular_values
        assert torch.equal(alone[0], whole[i])
        asym = attention_asymmetry(a[i : i + 1], mask[i : i + 1])
        assert torch.equal(asym[0], attention_asymmetry(a, mask)[i])
    # nor on the padding: genome 3 (15 real tokens) alone and unpadded
    short = spectrum(a[3:4, :, :15, :15], square=True).singular_values[0]
    assert torch.equal(short, whole[3][..., :15])
    assert (whole[3][..., 15:] == 0).all()
    rows = spectrum(a[3:4, :, :15, :], square=False).singular_values[0]
    padded = spectrum(a, mask, square=False).singular_values[3]
    assert torch.equal(rows, padded[..., :15]) and (padded[..., 15:] == 0).all()
    stats = row_statistics(a)
    torch.set_num_threads(1)
    one = row_statistics(a)
    torch.set_num_threads(2)
    for field in ("entropy", "distance", "metastable_k"):
        assert torch.equal(getattr(stats, field), getattr(one, field)), field
    assert torch.equal(spectrum(a, mask, square=True).singular_values, whole)
    torch.set_num_threads(1)
    assert torch.equal(spectrum(a, mask, square=True).singular_values, whole)


def test_a_split_leaves_the_default_of_later_threads(two_threads):
    threads.map_chunks(lambda lo, hi: None, 4)
    seen = []
    t = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    t.start()
    t.join()
    assert seen == [2]


def test_empty_batches_and_autograd(two_threads):
    empty = torch.rand(0, 2, 6, 6)
    assert spectrum(empty, square=True).singular_values.shape == (0, 2, 6)
    assert score_directionality(torch.rand(0, 2, 6, 4), torch.rand(0, 2, 6, 4)).shape == (0, 2)
    assert attention_asymmetry(empty).shape == (0, 2)
    a = _attention(2, 2, 7).requires_grad_()
    attention_asymmetry(a).sum().backward()  # the CPU fast path writes into a scratch tensor
    assert a.grad is not None and torch.isfinite(a.grad).all()
