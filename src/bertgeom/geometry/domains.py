"""Attention to spike protein domains, and attention rollout (science.md §6).

Tokens to residues (aligned tokens): content token t (0-based, the t-th real position after
[CLS]) covers spike nucleotides [t*stride, t*stride + k - 1], i.e. residues
``t*stride//3 + 1 .. (t*stride + k - 1)//3 + 1`` (``bertgeom.tokens.kmers.token_residues``). A
token belongs to every domain its residue range overlaps (domains nest: S1 holds NTD and RBD), and
to "no domain" when it overlaps no *leaf* domain (one that contains no other domain), so that the
gaps between the named domains inside S1/S2 count as "no domain" (bertgeom definition, B). With
``compat=True`` each domain ends one residue early, as the research code's end index
``a_end*3 - 1`` loses the last codon.

Enrichment (after Vig et al. 2021, bertgeom definition): per (layer, class, head, domain),
attention share = mass that content query rows give to content keys in the domain / mass they
give to all content keys; token share = content tokens in the domain / content tokens. The
two-proportion z-test uses x1 = attention mass on the domain, n1 = attention mass on content keys
(each query row carries mass 1), x2, n2 the token counts: ``z = (p1 - p2) / sqrt(p̂(1-p̂)(1/n1 +
1/n2))`` with pooled p̂ = (x1 + x2)/(n1 + n2); two-sided p-values; Bonferroni over the
layers x heads tested (alpha 0.05/144 for BERT-base). This is the paper's test (science.md §6);
it counts every token of every genome as an observation, so with thousands of genomes nearly
any difference is "significant".

Genome-level test (bertgeom, B): the genome is the unit. Each genome g gives the excess
``e_g = attention share_g - token share_g`` (its own shares); the one-sample t-test of mean e = 0
over the class's genomes, ``t = ē / (s_e / sqrt(n))`` with n - 1 degrees of freedom, two-sided,
with the same Bonferroni level. Its p-values do not shrink merely because genomes are many
tokens long, and ē is the effect size.

Float32 guard (resolution of the shares): the shares come from float32 attention maps, which
carry the rounding of every layer of the forward pass; near-clonal genomes (identical, or a few
tokens apart) have excesses that agree to that rounding, and both ē and s_e of a cell can be
rounding noise (ē/s_e of two noises is anything: |t| up to 1e6 was seen on real data, where the
only previous guard, Σe² - n ē² > 1e-10 ē² against float64 cancellation, let it through). The
test is made only where both are resolved: ``s_e > δ`` and ``|ē| > δ`` with the resolution
``δ = SHARE_RESOLUTION x p1`` (:data:`SHARE_RESOLUTION` = 1e-5, about 84 float32 units in the last
place of the cell's pooled attention share p1; two summation orders of the same maps differ by
up to 3e-7 of the share on the golden model, and batching can move a deep model's maps by more).
Elsewhere t and p_genome are NaN and the cell is not significant: genomes whose excesses agree
to 5 significant digits are one observation, not n, and an excess below δ is no excess. The
cancellation guard stays. The resolution is set for float32 attention: maps from a bf16 forward
pass (autocast on a GPU) carry bf16 rounding (2^-8), which it does not cover.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from bertgeom.geometry.masking import check_labels, check_mask, content_mask, special_positions
from bertgeom.resources import Domain, protein_domains
from bertgeom.tokens.kmers import KmerSpec, token_residues

NO_DOMAIN = "no domain"
#: Relative resolution of a per-genome attention share: the genome-level t-test needs a spread
#: and a mean of the per-genome excess above this fraction of the cell's attention share
#: (float32 rounding is neither; module docstring).
SHARE_RESOLUTION = 1e-5


@dataclass(frozen=True)
class TokenDomains:
    """Which spike domains each content token overlaps.

    Attributes
    ----------
    names : domain names, then ``NO_DOMAIN`` last (the ``domain`` dimension)
    membership : (token, domain) bool
    residues : (token, 2) first and last residue (1-based) of each token
    """

    names: tuple[str, ...]
    membership: np.ndarray
    residues: np.ndarray


def _leaves(domains: Sequence[Domain]) -> list[bool]:
    def inside(e: Domain, d: Domain) -> bool:  # e strictly inside d
        return d.start <= e.start and e.end <= d.end and (e.start, e.end) != (d.start, d.end)

    return [not any(inside(e, d) for e in domains) for d in domains]


def token_domains(
    n_tokens: int,
    spec: KmerSpec | None = None,
    domains: Sequence[Domain] | None = None,
    *,
    compat: bool = False,
) -> TokenDomains:
    """Domain membership of the content tokens (see the module docstring).

    Parameters
    ----------
    n_tokens : number of content tokens (425 for the spike with k=12, stride 9)
    spec : tokenization (default k=12, stride 9, aligned)
    domains : default ``bertgeom.resources.protein_domains()``
    compat : end every domain one residue early (the research code's index)

    Returns
    -------
    TokenDomains
    """
    spec = spec or KmerSpec()
    domains = tuple(protein_domains() if domains is None else domains)
    res = token_residues(spec, n_tokens)  # (token, 2)
    cut = 1 if compat else 0
    member = np.stack(
        [(res[:, 0] <= d.end - cut) & (res[:, 1] >= d.start) for d in domains], axis=1
    ).reshape(n_tokens, len(domains))
    leaf = np.array(_leaves(domains), dtype=bool)
    none = ~(member[:, leaf].any(axis=1))
    names = (*(d.name for d in domains), NO_DOMAIN)
    return TokenDomains(
        names=names, membership=np.concatenate([member, none[:, None]], 1), residues=res
    )


def position_membership(mask: Tensor, domains: TokenDomains) -> Tensor:
    """Per-position domain membership: content position -> its token's domains; others none.

    Parameters
    ----------
    mask : (batch, pos) bool, True = real token
    domains : TokenDomains of at least as many tokens as any genome has content tokens

    Returns
    -------
    (batch, pos, domain) float32, zero rows at [CLS], [SEP] and PAD
    """
    content = content_mask(mask, True)
    token = content.long().cumsum(-1) - 1  # (batch, pos) content-token index
    n_table = domains.membership.shape[0]
    # a row of pos positions has at most pos - 2 content tokens: only wider masks need the
    # (host-synchronising) count
    if content.numel() and mask.shape[-1] - 2 > n_table and int(content.sum(-1).amax()) > n_table:
        raise ValueError(f"a genome has more content tokens than the {n_table} of the domain table")
    table = torch.as_tensor(domains.membership, dtype=torch.float32, device=mask.device)
    out = table[token.clamp(0, n_table - 1)]
    return out * content[..., None]


@dataclass(frozen=True)
class DomainStats:
    """Streamed attention-to-domain sums of one layer.

    Attributes
    ----------
    names : the ``domain`` dimension
    attention : (class, head, domain) float64 mass content queries give to keys in the domain
    content_attention : (class, head) float64 mass content queries give to content keys
    tokens : (class, domain) float64 content tokens in the domain, summed over genomes
    n_tokens : (class,) float64 content tokens summed over genomes
    genomes : (class,) float64 genomes
    excess_sum, excess_sq : (class, head, domain) float64 Σ_g e_g and Σ_g e_g² of the per-genome
        excess e_g = attention share - token share (the genome-level test)
    """

    names: tuple[str, ...]
    attention: Tensor
    content_attention: Tensor
    tokens: Tensor
    n_tokens: Tensor
    genomes: Tensor
    excess_sum: Tensor
    excess_sq: Tensor

    def combine(self, other: DomainStats) -> DomainStats:
        """Both batches together (sums add)."""
        if self.names != other.names:
            raise ValueError("cannot combine DomainStats of different domain tables")
        dev = self.attention.device
        return DomainStats(
            self.names,
            *(getattr(self, f) + getattr(other, f).to(dev) for f in _SUMMED),
        )

    def pooled(self) -> DomainStats:
        """All classes as one (class dimension of size 1)."""
        return DomainStats(self.names, *(getattr(self, f).sum(0, keepdim=True) for f in _SUMMED))


#: The summed (tensor) fields of ``DomainStats``, in order.
_SUMMED = (
    "attention", "content_attention", "tokens", "n_tokens", "genomes", "excess_sum", "excess_sq",
)  # fmt: skip


def content_key_mass(attn: Tensor, mask: Tensor) -> Tensor:
    """Attention mass each key receives from the content query rows, rows renormalised over the
    real keys: ``m_j = Σ_{i content} A_ij [j real] / Σ_{j' real} A_ij'``.

    Two batched row-vector products over ``attn`` (row sums over the real keys, then the
    weighted column sums): each map is read twice and never copied.

    Parameters
    ----------
    attn : (batch, head, q_pos, k_pos) float32 or float64
    mask : (batch, pos) bool, True = real token

    Returns
    -------
    (batch, head, k_pos), zero at PAD keys
    """
    a = attn if attn.dtype in (torch.float32, torch.float64) else attn.float()
    b, h, q, k = a.shape
    real = mask.to(a.dtype)
    # (batch, 1, k) @ (batch, k, head*q): a row vector times the transposed maps is a plain
    # matrix product (a matrix times a column vector runs ~3x slower on the CPU)
    flat = a.reshape(b, h * q, k)
    rows = torch.bmm(real[:, None, :], flat.transpose(1, 2)).view(b, h, q)  # mass on real keys
    weight = content_mask(mask, True).to(a.dtype)[:, None, :] / torch.where(rows > 0, rows, 1.0)
    cols = torch.bmm(weight.reshape(b * h, 1, q), a.reshape(b * h, q, k)).view(b, h, k)
    return cols * real[:, None, :]


def genome_domain_stats(
    attn: Tensor, mask: Tensor, domains: TokenDomains, member: Tensor | None = None
) -> dict[str, Tensor]:
    """Per-genome terms of :class:`DomainStats` (the class dimension is the batch's genomes).

    Parameters
    ----------
    attn : (batch, head, q_pos, k_pos)
    mask : (batch, pos) bool, True = real token
    domains : from ``token_domains``
    member : ``position_membership(mask, domains)`` when the caller has it (one per batch)

    Returns
    -------
    dict of the summed fields of DomainStats, each (batch, ...) float64; ``tokens``,
    ``n_tokens`` and ``genomes`` do not depend on the attention
    """
    if member is None:
        member = position_membership(mask, domains)
    content = content_mask(mask, True)
    key_mass = content_key_mass(attn, mask).double()  # (batch, head, k_pos)
    member = member.double()
    on_domain = key_mass @ member  # (batch, head, domain)
    on_content = (key_mass * content[:, None, :]).sum(-1)  # (batch, head)
    tokens = member.sum(1)  # (batch, domain)
    n_tokens = content.sum(-1).double()  # (batch,)
    share = on_domain / torch.where(on_content > 0, on_content, 1.0)[..., None]
    excess = share - (tokens / n_tokens.clamp(min=1)[:, None])[:, None, :]
    return {
        "attention": on_domain,
        "content_attention": on_content,
        "tokens": tokens,
        "n_tokens": n_tokens,
        "genomes": torch.ones_like(n_tokens),
        "excess_sum": excess,
        "excess_sq": excess**2,
    }


def domain_stats(
    attn: Tensor,
    mask: Tensor | None,
    domains: TokenDomains,
    labels: Tensor | None = None,
    n_classes: int = 1,
) -> DomainStats:
    """Attention mass landing in each domain, per class and head, from one batch of one layer.

    ``attention[c, h, d] = Σ_{genome ∈ c} Σ_{i content} Σ_{j content} A_ij [token j ∈ d]``, with
    A renormalised over the real keys (PAD keys dropped).

    Parameters
    ----------
    attn : (batch, head, q_pos, k_pos)
    mask : (batch, pos) bool, True = real token; None = all real
    domains : from ``token_domains``
    labels : (batch,) class ids; None = one class
    n_classes : number of classes

    Returns
    -------
    DomainStats
    """
    b, _, p, _ = attn.shape
    mask = check_mask(mask, b, p, attn.device)
    labels = check_labels(labels, b, n_classes, attn.device)
    per = genome_domain_stats(attn, mask, domains)

    def per_class(x: Tensor) -> Tensor:
        out = torch.zeros((n_classes, *x.shape[1:]), dtype=torch.float64, device=x.device)
        return out.index_add(0, labels, x)

    return DomainStats(domains.names, *(per_class(per[f]) for f in _SUMMED))


@dataclass(frozen=True)
class DomainEnrichment:
    """Attention share vs token share per domain, with Bonferroni-corrected z-tests.

    Attributes
    ----------
    names : the ``domain`` dimension
    attention_share : (layer, class, head, domain)
    token_share : (class, domain)
    z : (layer, class, head, domain) positive = the head reads the domain more than its share
    p_value : (layer, class, head, domain) two-sided
    significant : (layer, class, head, domain) bool, p_value < alpha_corrected
    alpha_corrected : alpha / (layers x heads)
    excess : (layer, class, head, domain) mean per-genome excess ē (genome-level test)
    t : (layer, class, head, domain) its one-sample t statistic (NaN below 2 genomes or with
        no spread)
    p_genome : two-sided p-value of t (NaN where t is)
    significant_genome : p_genome < alpha_corrected
    """

    names: tuple[str, ...]
    attention_share: Tensor
    token_share: Tensor
    z: Tensor
    p_value: Tensor
    significant: Tensor
    alpha_corrected: float
    excess: Tensor
    t: Tensor
    p_genome: Tensor
    significant_genome: Tensor


def domain_enrichment(layers: Sequence[DomainStats], alpha: float = 0.05) -> DomainEnrichment:
    """Proportions z-test of attention share against token share (module docstring).

    Parameters
    ----------
    layers : one DomainStats per layer, all batches combined
    alpha : family-wise error rate, split over layers x heads (Bonferroni)

    Returns
    -------
    DomainEnrichment
    """
    x1 = torch.stack([s.attention for s in layers])  # (layer, class, head, domain)
    n1 = torch.stack([s.content_attention for s in layers])[..., None]
    x2 = layers[0].tokens[None, :, None, :]
    n2 = layers[0].n_tokens[None, :, None, None]
    p1 = x1 / n1.clamp(min=1e-300)
    p2 = x2 / n2.clamp(min=1e-300)
    pooled = (x1 + x2) / (n1 + n2).clamp(min=1e-300)
    se = (pooled * (1 - pooled) * (1 / n1.clamp(min=1e-300) + 1 / n2.clamp(min=1e-300))).sqrt()
    z = torch.where(se > 0, (p1 - p2) / se.clamp(min=1e-300), 0.0)
    p_value = torch.special.erfc(z.abs() / math.sqrt(2))
    corrected = alpha / (x1.shape[0] * x1.shape[2])
    excess, t, p_genome = _genome_test(layers)
    return DomainEnrichment(
        names=layers[0].names,
        attention_share=p1,
        token_share=p2[0, :, 0, :],
        z=z,
        p_value=p_value,
        significant=p_value < corrected,
        alpha_corrected=corrected,
        excess=excess,
        t=t,
        p_genome=p_genome,
        significant_genome=p_genome < corrected,  # NaN compares False
    )


def _genome_test(layers: Sequence[DomainStats]) -> tuple[Tensor, Tensor, Tensor]:
    """Mean excess, t statistic and two-sided p-value of the genome-level test (module
    docstring), each (layer, class, head, domain)."""
    from scipy.stats import t as student

    total = torch.stack([s.excess_sum for s in layers]).cpu()
    sq = torch.stack([s.excess_sq for s in layers]).cpu()
    n = layers[0].genomes.cpu()[None, :, None, None]
    mean = total / n.clamp(min=1)
    var = ((sq - n * mean**2) / (n - 1).clamp(min=1)).clamp(min=0)
    se = (var / n.clamp(min=1)).sqrt()
    # the float32 guard (module docstring): spread and mean must exceed the shares' resolution
    share = torch.stack([s.attention for s in layers]).cpu() / torch.stack(
        [s.content_attention for s in layers]
    ).cpu()[..., None].clamp(min=1e-300)
    delta = SHARE_RESOLUTION * share
    resolved = (var > delta**2) & (mean.abs() > delta)
    # Σe² - n ē² cancels to rounding noise (~1e-16 ē²) when every genome has the same excess
    ok = (n >= 2) & (var > 1e-10 * mean**2) & resolved & (var > 0)
    t = torch.where(ok, mean / torch.where(ok, se, 1.0), torch.nan)
    df = (n - 1).clamp(min=1).expand_as(t).numpy()
    p = torch.from_numpy(2 * student.sf(np.abs(t.numpy()), df))
    mean = torch.where(n > 0, mean, torch.nan)
    return mean, t, p


def attention_rollout(attn: Tensor, mask: Tensor | None = None, residual: float = 0.5) -> Tensor:
    """Attention rollout (Abnar & Zuidema 2020) of per-layer maps, e.g. class-mean maps.

    Heads are averaged, ``Â_l = (1 - residual) Ā_l + residual I`` on the real positions, rows
    renormalised, and ``R = Â_L Â_{L-1} ... Â_1``: R_ij is how much position i at the output
    draws on input position j.

    Parameters
    ----------
    attn : (..., layer, head, pos, pos)
    mask : (..., pos) bool, True = real position; None = all real
    residual : weight of the identity (0.5 in the paper)

    Returns
    -------
    (..., pos, pos) rows summing to 1 on the real positions, zero elsewhere
    """
    a = attn.to(torch.promote_types(attn.dtype, torch.float32)).mean(-3)  # (..., layer, pos, pos)
    p = a.shape[-1]
    real = torch.ones(p, dtype=torch.bool, device=a.device) if mask is None else mask.bool()
    real = real.to(a.device)[..., None, :]  # (..., 1, pos)
    pair = real[..., :, None] & real[..., None, :]  # (..., 1, pos, pos)
    eye = torch.eye(p, dtype=a.dtype, device=a.device)
    a = ((1 - residual) * a + residual * eye) * pair
    a = a / torch.where((s := a.sum(-1, keepdim=True)) > 0, s, 1.0)
    out = torch.eye(p, dtype=a.dtype, device=a.device) * pair[..., 0, :, :]
    for layer in range(a.shape[-3]):
        out = a[..., layer, :, :] @ out
    return out


@dataclass(frozen=True)
class DomainReadout:
    """Where [CLS] finally reads from, by domain.

    Attributes
    ----------
    names : the ``domain`` dimension
    share : (batch, domain) share of [CLS]'s content-key weight landing in each domain
    special : (batch,) weight on [CLS] and [SEP] themselves
    """

    names: tuple[str, ...]
    share: Tensor
    special: Tensor


def cls_domain_readout(
    rollout: Tensor, mask: Tensor | None, domains: TokenDomains
) -> DomainReadout:
    """The [CLS] row of a rollout (or of any (pos, pos) map) mapped to domains.

    Parameters
    ----------
    rollout : (batch, pos, pos), e.g. ``attention_rollout`` per class
    mask : (batch, pos) bool, True = real token
    domains : from ``token_domains``

    Returns
    -------
    DomainReadout
    """
    b, p, _ = rollout.shape
    mask = check_mask(mask, b, p, rollout.device)
    first, _ = special_positions(mask)
    row = rollout[torch.arange(b, device=rollout.device), first]  # (batch, pos)
    content = content_mask(mask, True)
    member = position_membership(mask, domains).to(row.dtype)
    total = (row * content).sum(-1, keepdim=True)
    share = (row[:, None, :] @ member)[:, 0] / torch.where(total > 0, total, 1.0)
    special = (row * (mask & ~content)).sum(-1)
    return DomainReadout(names=domains.names, share=share, special=special)
