"""The geometry measures give the same numbers on a CUDA device as on the CPU (skipped without)."""

from __future__ import annotations

import pytest
import torch

from bertgeom.geometry import cone, direction, domains, gates, spectra
from bertgeom.geometry.embeddings import summed_output_histogram

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _inputs():
    g = torch.Generator().manual_seed(0)
    lengths = [30, 22, 27]
    p = max(lengths)
    attn = torch.zeros(3, 4, p, p)
    mask = torch.zeros(3, p, dtype=torch.bool)
    for b, n in enumerate(lengths):
        attn[b, :, :n, :n] = torch.randn(4, n, n, generator=g).mul(2).softmax(-1)
        mask[b, :n] = True
    x = torch.randn(3, p, 16, generator=g)
    z = torch.randn(3, 4, p, 4, generator=g)
    wq, wk = torch.randn(2, 16, 16, generator=g), torch.randn(2, 16, 16, generator=g)
    return attn, mask, x, z, wq, wk, torch.tensor([0, 1, 0])


def _same(a, b, atol=1e-4):
    if isinstance(a, torch.Tensor):
        assert torch.allclose(a.cpu().double(), b.double(), atol=atol, rtol=1e-4), (a, b)
    elif hasattr(a, "__dataclass_fields__"):
        for name in a.__dataclass_fields__:
            _same(getattr(a, name), getattr(b, name), atol)
    elif isinstance(a, tuple | list):
        for u, v in zip(a, b, strict=True):
            _same(u, v, atol)
    else:
        assert a == b


def _both(fn, *args, **kwargs):
    cuda = [a.cuda() if isinstance(a, torch.Tensor) else a for a in args]
    _same(fn(*cuda, **kwargs), fn(*args, **kwargs))


def test_cuda_matches_cpu():
    attn, mask, x, z, wq, wk, labels = _inputs()
    _both(cone.cone_index, x, mask)
    _both(cone.cone_index, z, mask, drop_special=True)
    _both(lambda a, y: cone.cone_sums(a, y, 2).index(), x[:, 0], labels)
    _both(lambda a, m, y: gates.gate_scores(gates.gate_stats(a, m, y, 2)), attn, mask, labels)
    for fn in (direction.directionality, direction.symmetric_signature, direction.principal_angles):
        _both(fn, wq, wk, 4)
    _both(direction.subspace_overlap, wq, 4)
    _both(direction.score_directionality, z, z.flip(-1), mask)
    _both(direction.attention_asymmetry, attn, mask)
    _both(spectra.row_entropy, attn, mask)
    _both(spectra.von_neumann_entropy, attn @ attn.transpose(-1, -2), mask)
    _both(spectra.histogram_entropy, attn, mask)
    _both(spectra.spectrum, attn, mask, square=True)
    _both(spectra.spectrum, x, mask)
    fast = spectra.spectrum(attn.cuda(), mask.cuda(), square=True, driver="gesvda")
    _same(fast, spectra.spectrum(attn, mask, square=True))
    table = domains.token_domains(40)
    _both(lambda a, m, y: domains.domain_stats(a, m, table, y, 2), attn, mask, labels)
    _both(domains.attention_rollout, attn[:, None].expand(3, 2, 4, -1, -1), mask)
    _both(summed_output_histogram, x, mask, torch.linspace(-20, 20, 11))
