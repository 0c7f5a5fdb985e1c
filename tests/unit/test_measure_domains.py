"""The ``domains`` measure: the kernel's statistics per class, merge, and the t-test guard."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from bertgeom.geometry.domains import (
    SHARE_RESOLUTION,
    content_key_mass,
    domain_enrichment,
    domain_stats,
    position_membership,
    token_domains,
)
from bertgeom.geometry.measures.domains import Domains, domains_table
from bertgeom.resources import Domain
from tests.unit import tiny_stream as ts


@pytest.fixture(scope="module")
def setup():
    model = ts.tiny_classifier()
    ids, labels = ts.genomes(1)
    return model, ids, labels, ts.info(model)


def make(info):
    return lambda: Domains(info, Domains.Options())


@pytest.mark.parametrize("all_genomes", [True, False])
def test_table_equals_the_kernel_on_each_genome_alone(setup, all_genomes):
    """Bucketed, batched and padded: the same table as ``domain_stats`` of every included
    genome streamed alone, grouped by class."""
    model, ids, labels, info = setup
    keep = np.zeros(len(ids), bool)
    m, preds = ts.streamed(model, make(info), ids, labels, keep)
    g = ts.genomes_of(labels, preds, all_genomes)
    got = m.finish(g)["domains"]
    rows = np.flatnonzero(g.included)
    per_layer = []
    with torch.inference_mode():
        maps = [
            model(input_ids=torch.as_tensor(ids[i])[None], output_attentions=True).attentions
            for i in rows
        ]
    for layer in range(2):
        stats = None
        for i, a in zip(rows, maps, strict=True):
            s = domain_stats(a[layer], None, info.domains, torch.tensor([labels[i]]), 3)
            stats = s if stats is None else stats.combine(s)
        per_layer.append(stats)
    want = domains_table(per_layer, ts.CLASSES, 0.05)
    assert len(got) == 2 * 3 * 4 * len(info.domains.names)
    # batched and padded maps differ from the lone ones by float32 rounding; t amplifies it
    pd.testing.assert_frame_equal(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("cuts", "via_state"), [((8,), False), ((4, 12), True)])
def test_merge_of_parts_equals_one_stream(setup, cuts, via_state):
    model, ids, labels, info = setup
    keep = np.zeros(len(ids), bool)
    whole, preds = ts.streamed(model, make(info), ids, labels, keep)
    parts, _ = ts.streamed(model, make(info), ids, labels, keep, cuts, via_state)
    g = ts.genomes_of(labels, preds, True)
    pd.testing.assert_frame_equal(
        whole.finish(g)["domains"], parts.finish(g)["domains"], rtol=1e-9, atol=1e-12
    )
    empty = Domains(info, Domains.Options())
    empty.merge(whole)  # the empty state is the identity
    pd.testing.assert_frame_equal(empty.finish(g)["domains"], whole.finish(g)["domains"])


def test_alpha_is_used_and_validated(setup):
    model, ids, labels, info = setup
    m, preds = ts.streamed(model, make(info), ids, labels, np.zeros(len(ids), bool))
    g = ts.genomes_of(labels, preds, True)
    strict = Domains(info, Domains.Options(alpha=1e-300))
    strict.merge(m)
    assert not strict.finish(g)["domains"].significant.any()
    for bad in (0.0, 1.0, float("nan")):
        with pytest.raises(ValueError, match="alpha"):
            Domains.Options(alpha=bad)


def _table():
    return token_domains(6, domains=[Domain("A", "", 1, 6), Domain("B", "", 10, 18)])


def test_an_excess_of_float32_rounding_is_not_significant():
    """Near-clonal genomes: maps equal up to a few float32 units in the last place, with a
    common bias of 40 units on one domain. Without the guard, t is large and the cell
    significant (the issue's case); with it there is no test. A real excess with a real spread
    is still tested."""
    td = _table()  # tokens 0-1 in A, 2-5 in B
    n, genomes = 8, 40
    g = torch.Generator().manual_seed(0)
    uniform = torch.full((1, 1, n, n), 1.0 / n, dtype=torch.float64)
    noise = torch.rand(genomes, 1, n, n, generator=g, dtype=torch.float64) - 0.5
    a = td.names.index("A")

    def stats(bias, spread):
        attn = uniform * (1 + spread * noise)
        attn[..., 1:3] *= 1 + bias  # domain A read a little more than its token share
        return domain_stats(attn.float(), None, td)

    ulp = 2.0**-24
    rounding = stats(40 * ulp, 8 * ulp)
    mean = float(rounding.excess_sum[0, 0, a]) / genomes
    var = (float(rounding.excess_sq[0, 0, a]) - genomes * mean**2) / (genomes - 1)
    assert var > 1e-10 * mean**2  # the previous guard let it through
    assert mean / (var / genomes) ** 0.5 > 20  # p < 1e-20: called significant
    e = domain_enrichment([rounding])
    assert abs(mean) < SHARE_RESOLUTION * float(e.attention_share[0, 0, 0, a])
    assert torch.isnan(e.t[0, 0, 0, a]) and not e.significant_genome.any()
    real = domain_enrichment([stats(0.5, 1e-2)])  # excess 1/6 of the share, spread 1 %
    assert torch.isfinite(real.t[0, 0, 0, a]) and bool(real.significant_genome[0, 0, 0, a])


def test_content_key_mass_is_the_renormalised_column_sum():
    g = torch.Generator().manual_seed(2)
    attn = torch.rand(3, 2, 7, 7, generator=g)
    mask = torch.ones(3, 7, dtype=torch.bool)
    mask[1, 5:] = False
    mask[2, 3:] = False
    got = content_key_mass(attn, mask)
    content = mask.clone()
    for b, n in enumerate(mask.sum(1).tolist()):
        content[b, 0] = content[b, n - 1] = False
    a = attn * mask[:, None, None, :]
    a = a / a.sum(-1, keepdim=True)
    want = (a * content[:, None, :, None]).sum(-2)
    assert torch.allclose(got, want, atol=1e-6)
    assert not got[1, :, 5:].any()


def test_membership_checks_the_table_size_only_when_a_row_may_exceed_it():
    td = _table()  # 6 tokens
    assert position_membership(torch.ones(2, 8, dtype=torch.bool), td).shape == (2, 8, 3)
    wide = torch.zeros(1, 10, dtype=torch.bool)
    wide[0, :8] = True  # 6 content tokens in a row of 10 positions: fits
    assert position_membership(wide, td).shape == (1, 10, 3)
    with pytest.raises(ValueError, match="more content tokens"):
        position_membership(torch.ones(1, 9, dtype=torch.bool), td)
