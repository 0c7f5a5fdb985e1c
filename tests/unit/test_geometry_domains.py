"""Token -> domain mapping, attention enrichment and rollout (science.md §6)."""

from __future__ import annotations

import pytest
import torch

from bertgeom.geometry.domains import (
    NO_DOMAIN,
    attention_rollout,
    cls_domain_readout,
    domain_enrichment,
    domain_stats,
    position_membership,
    token_domains,
)
from bertgeom.resources import Domain

SPIKE = token_domains(425)


def col(name):
    return SPIKE.names.index(name)


def test_token_residues_and_membership():
    assert SPIKE.names[-1] == NO_DOMAIN and SPIKE.membership.shape == (425, len(SPIKE.names))
    assert SPIKE.residues[0].tolist() == [1, 4] and SPIKE.residues[1].tolist() == [4, 7]
    assert SPIKE.membership[0, col("SP")] and not SPIKE.membership[0, col("S1")]
    t = 102  # residues 307-310: inside S1, between NTD (..305) and RBD (319..)
    assert SPIKE.residues[t].tolist() == [307, 310]
    assert SPIKE.membership[t, col("S1")] and SPIKE.membership[t, col(NO_DOMAIN)]
    rbd = SPIKE.membership[:, col("RBD")]
    assert rbd.any() and not SPIKE.membership[rbd, col(NO_DOMAIN)].any()
    assert SPIKE.membership[rbd, col("S1")].all()
    assert SPIKE.residues[424].tolist() == [1273, 1276]  # the last token reaches the padding
    assert SPIKE.membership[424, col("CT")] and not SPIKE.membership[424, col(NO_DOMAIN)]


def test_compat_drops_the_last_residue_of_each_domain():
    spike_compat = token_domains(425, compat=True)
    # token 4 covers residues 13-16: it touches SP (1-13) only at SP's last residue
    assert SPIKE.membership[4, col("SP")] and not spike_compat.membership[4, col("SP")]


def test_custom_domains_and_positions():
    domains = [Domain("A", "", 1, 6), Domain("B", "", 10, 12)]
    td = token_domains(5, domains=domains)  # residues 1-4, 4-7, 7-10, 10-13, 13-16
    assert td.membership.tolist() == [
        [True, False, False],
        [True, False, False],
        [False, True, False],
        [False, True, False],
        [False, False, True],
    ]
    mask = torch.tensor([[True] * 7 + [False], [True] * 5 + [False] * 3])
    pos = position_membership(mask, td)
    assert pos.shape == (2, 8, 3)
    assert pos[0, 0].sum() == 0 and pos[0, 6].sum() == 0  # [CLS], [SEP]
    assert pos[0, 1:6].tolist() == torch.as_tensor(td.membership, dtype=torch.float32).tolist()
    assert pos[1, 1:4].tolist() == pos[0, 1:4].tolist() and pos[1, 4:].sum() == 0


def small_table(n_tokens=6):
    return token_domains(n_tokens, domains=[Domain("A", "", 1, 6), Domain("B", "", 10, 18)])


def test_focused_attention_is_enriched_and_uniform_is_not():
    td = small_table()  # tokens 0-1 in A, tokens 2-5 in B (token 2: residues 7-10)
    n = 8  # [CLS] + 6 tokens + [SEP]
    focused = torch.zeros(40, 2, n, n)
    focused[:, 0, :, 1:3] = 0.5  # head 0 reads the A tokens
    focused[:, 1] = 1.0 / n  # head 1 is uniform
    stats = domain_stats(focused, None, td)
    enr = domain_enrichment([stats])
    a = td.names.index("A")
    assert float(enr.attention_share[0, 0, 0, a]) == pytest.approx(1.0)
    assert float(enr.token_share[0, a]) == pytest.approx(2 / 6)
    assert bool(enr.significant[0, 0, 0, a]) and float(enr.z[0, 0, 0, a]) > 0
    assert torch.allclose(enr.attention_share[0, 0, 1], enr.token_share[0].float().double())
    assert not enr.significant[0, 0, 1].any()
    assert enr.alpha_corrected == pytest.approx(0.05 / 2)
    assert domain_enrichment([stats] * 3).alpha_corrected == pytest.approx(0.05 / 6)


def test_domain_stats_streamed_and_masked():
    td = small_table(8)
    g = torch.Generator().manual_seed(0)
    attn = torch.randn(5, 3, 10, 10, generator=g).softmax(-1)
    mask = torch.ones(5, 10, dtype=torch.bool)
    mask[2, 8:] = False
    mask[4, 6:] = False
    labels = torch.tensor([0, 1, 1, 0, 1])
    whole = domain_stats(attn, mask, td, labels, 2)
    halves = domain_stats(attn[:2], mask[:2], td, labels[:2], 2).combine(
        domain_stats(attn[2:], mask[2:], td, labels[2:], 2)
    )
    for field in (
        "attention", "content_attention", "tokens", "n_tokens", "genomes", "excess_sum",
        "excess_sq",
    ):  # fmt: skip
        assert torch.allclose(getattr(whole, field), getattr(halves, field))
    # genome 4 has 4 content tokens: its PAD keys get nothing
    alone = domain_stats(attn[4:, :, :6, :6], None, td)
    trimmed = domain_stats(attn[4:], mask[4:], td)
    assert torch.allclose(alone.attention, trimmed.attention, atol=1e-6)
    assert float(whole.pooled().n_tokens[0]) == 8 + 8 + 6 + 8 + 4


def test_rollout():
    n = 5
    eye = torch.eye(n).expand(3, 2, n, n)  # (layer, head, pos, pos)
    assert torch.allclose(attention_rollout(eye), torch.eye(n))
    uniform = torch.full((1, 2, n, n), 1.0 / n)
    one = attention_rollout(uniform)
    assert torch.allclose(one, 0.5 * torch.full((n, n), 1.0 / n) + 0.5 * torch.eye(n))
    g = torch.Generator().manual_seed(1)
    maps = torch.randn(2, 3, 4, n, n, generator=g).softmax(-1)  # (class, layer, head, ...)
    r = attention_rollout(maps)
    hat = 0.5 * maps.mean(-3) + 0.5 * torch.eye(n)
    assert torch.allclose(r[1], hat[1, 2] @ hat[1, 1] @ hat[1, 0], atol=1e-6)
    assert torch.allclose(r.sum(-1), torch.ones(2, n))
    mask = torch.tensor([[True] * 4 + [False], [True] * 5])
    rm = attention_rollout(maps, mask)
    assert float(rm[0, :, 4].abs().sum() + rm[0, 4].abs().sum()) == 0.0
    assert torch.allclose(rm[0, :4].sum(-1), torch.ones(4))


def test_cls_readout_maps_to_domains():
    td = small_table()
    n = 8
    roll = torch.zeros(1, n, n)
    roll[0, 0, 3:7] = 0.2  # [CLS] reads tokens 2-5 (domain B)
    roll[0, 0, 0] = 0.2
    out = cls_domain_readout(roll, None, td)
    b = td.names.index("B")
    assert float(out.share[0, b]) == pytest.approx(1.0)
    assert float(out.share[0, td.names.index("A")]) == 0.0
    assert float(out.special[0]) == pytest.approx(0.2)


def test_genome_level_test_is_a_one_sample_t_test_of_the_per_genome_excess():
    """Known answer: per-genome shares computed by hand, t and p from scipy's one-sample
    t-test; a single genome gives no test."""
    from scipy import stats as st

    td = small_table()  # tokens 0-1 in A (share 2/6)
    n = 8
    g = torch.Generator().manual_seed(1)
    attn = torch.rand(6, 1, n, n, generator=g).softmax(-1)
    attn[:, 0, :, 1:3] *= torch.linspace(1.0, 3.0, 6)[:, None, None]  # each genome its own
    attn = attn / attn.sum(-1, keepdim=True)
    enr = domain_enrichment([domain_stats(attn, None, td)])
    a = td.names.index("A")
    rows = attn[:, 0, 1:7, 1:7]  # content queries x content keys
    share = (rows[:, :, 0:2].sum((1, 2)) / rows.sum((1, 2))).double().numpy()
    want = st.ttest_1samp(share - 2 / 6, 0.0)
    assert float(enr.excess[0, 0, 0, a]) == pytest.approx((share - 2 / 6).mean(), rel=1e-6)
    assert float(enr.t[0, 0, 0, a]) == pytest.approx(want.statistic, rel=1e-6)
    assert float(enr.p_genome[0, 0, 0, a]) == pytest.approx(want.pvalue, rel=1e-6)
    one = domain_enrichment([domain_stats(attn[:1], None, td)])
    assert torch.isnan(one.t).all() and not one.significant_genome.any()  # one genome: no test
