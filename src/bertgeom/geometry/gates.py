"""The paper's seven attention "gates" as scores in [0, 1] (science.md §4, bertgeom definitions).

bertgeom's operational definitions (B). For one genome and head, let A be the attention over its
n real tokens (rows sum to 1 over real keys; [CLS] = first, [SEP] = last real position), the
query rows be the real tokens (or only the content tokens with ``drop_special``) and the content
keys be the real tokens other than [CLS]/[SEP]. Per genome:

- closed      = mean_i (A_i,CLS + A_i,SEP)                   mass on the special tokens (no-op)
- open        = mean_i H(A_i) / ln n                          near-uniform reading
- backward    = mean_i Σ_{w=1..window} A_i,i-w                the previous ``window`` tokens
- forward     = mean_i Σ_{w=1..window} A_i,i+w                the next ``window`` tokens
- cluster     = reciprocal mass in contiguous blocks above a banded null (``segmentation``)
- focus       = m · s1_share · concentration                  every row reads the same few keys
  (``head_measures.focus`` on content keys; m = mean content-key mass per row)

Across the genomes of a class (or all genomes, "pooled"), with p_g the content-key profile of
genome g (``head_measures.key_profile``) and p̄ their mean, the profile variability is the
Jensen-Shannon divergence of the G profiles, i.e. the mutual information I(genome; key) with
genomes weighted equally, normalised by its upper bound min(H(genome), H(key)):

    v = JSD(p_1..p_G) / min(ln G, H(p̄)),   JSD = H(p̄) - mean_g H(p_g),   v in [0, 1],

0 when all genomes read the same keys, 1 when each reads its own keys (disjoint profiles, or
profiles that determine the genome). Then

- directional = mean_g focus_g · (1 - v)      the same few keys, stable across genomes
- instance    = mean_g m_g · v                 peaked profiles that differ between genomes

and the other five scores are means over the genomes. Everything is streamed: ``gate_stats``
reduces a batch to sums (``GateStats``, ``combine``), ``gate_scores`` turns them into scores.
A head's label is the gate whose score exceeds its threshold by the largest share of the room
above it, ``(score - t) / (1 - t)``; "mixed" when no score reaches its threshold.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np
import torch
from torch import Tensor

from bertgeom.errors import ConfigError
from bertgeom.geometry import head_measures as hm
from bertgeom.geometry.masking import check_labels, check_mask, compact_square
from bertgeom.geometry.segmentation import ClusterParts, cluster_from_parts, reciprocal_parts

#: Gate names, in the order of the ``gate`` dimension.
GATES: tuple[str, ...] = (
    "closed", "open", "backward", "forward", "directional", "instance", "cluster",
)  # fmt: skip
#: Per-head statistics of Clark et al. and Ramsauer et al., the ``stat`` dimension.
HEAD_STATS: tuple[str, ...] = ("cls", "sep", "distance", "metastable_k")
#: Per-genome measures summed in ``GateStats.sums``, the ``measure`` dimension.
MEASURES: tuple[str, ...] = (
    "closed", "open", "backward", "forward", "cluster", "focus", "content", *HEAD_STATS,
)  # fmt: skip


@dataclass(frozen=True)
class GateThresholds:
    """Score a head must reach for each gate to be its label (all in [0, 1)).

    Defaults: closed 0.5 (half the mass on [CLS]/[SEP]); open 0.9 (rows within 10 % of the
    maximal entropy ln n); backward/forward 0.5 (half the mass on the ``window`` neighbours);
    directional 0.5; instance 0.3 (profile variability times content mass); cluster 0.4.
    """

    closed: float = 0.5
    open: float = 0.9
    backward: float = 0.5
    forward: float = 0.5
    directional: float = 0.5
    instance: float = 0.3
    cluster: float = 0.4

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"gate threshold {f.name} must be in [0, 1), got {value}")

    def values(self) -> np.ndarray:
        """(gate,) thresholds in ``GATES`` order."""
        return np.array([getattr(self, g) for g in GATES])


@dataclass(frozen=True)
class GateOptions:
    """How the per-genome measures are taken.

    Attributes
    ----------
    window : w of the contextual gates, keys i-w..i-1 / i+1..i+w (default 3)
    coverage : mass the metastable-state size k must reach (default 0.9)
    drop_special : average over content query rows only, not [CLS]/[SEP] rows (default False)
    iterations : Golub-Kahan-Lanczos steps for the top singular value (default 8; see
        ``head_measures.top_singular_share`` for the accuracy)
    """

    window: int = 3
    coverage: float = 0.9
    drop_special: bool = False
    iterations: int = 8

    def __post_init__(self) -> None:
        if self.window < 1:
            raise ConfigError(f"window must be >= 1, got {self.window}")
        if not 0.0 < self.coverage <= 1.0:
            raise ConfigError(f"coverage must be in (0, 1], got {self.coverage}")
        if self.iterations < 1:
            raise ConfigError(f"iterations must be >= 1, got {self.iterations}")


@dataclass(frozen=True)
class GateStats:
    """Streamed sufficient statistics of the gate scores of one layer.

    Attributes
    ----------
    n_genomes : (class,) float64 genomes seen
    sums : (class, measure, head) float64 per-genome measures (``MEASURES``) summed
    profile_sum : (class, head, k_pos) float64 content-key profiles summed (compacted positions)
    profile_entropy_sum : (class, head) float64 Σ_g H(p_g)
    n_profiles : (class, head) float64 genomes whose head gave content keys any mass
    """

    n_genomes: Tensor
    sums: Tensor
    profile_sum: Tensor
    profile_entropy_sum: Tensor
    n_profiles: Tensor

    def combine(self, other: GateStats) -> GateStats:
        """Both batches together; the profiles are zero-padded to the longer ``k_pos``."""
        p = max(self.profile_sum.shape[-1], other.profile_sum.shape[-1])

        def pad(t: Tensor) -> Tensor:
            return torch.nn.functional.pad(t, (0, p - t.shape[-1]))

        dev = self.sums.device
        return GateStats(
            n_genomes=self.n_genomes + other.n_genomes.to(dev),
            sums=self.sums + other.sums.to(dev),
            profile_sum=pad(self.profile_sum) + pad(other.profile_sum.to(dev)),
            profile_entropy_sum=self.profile_entropy_sum + other.profile_entropy_sum.to(dev),
            n_profiles=self.n_profiles + other.n_profiles.to(dev),
        )


@dataclass(frozen=True)
class LayerMeasures:
    """Everything the gates read from one layer of one batch, from one pass over its maps.

    Attributes
    ----------
    measures : (batch, measure, head) per-genome measures in ``MEASURES`` order (the cluster
        measure 0: it comes from ``parts`` after the dynamic programme)
    profile : (batch, head, k_pos) content-key profile in compacted positions
    has_profile : (batch, head) bool
    profile_entropy : (batch, head) H(profile)
    row_entropy : (batch, head) mean row entropy over the query rows divided by ln n (0 when
        n < 2): the ``row_entropy`` table's value
    parts : ClusterParts of the cluster measure
    """

    measures: Tensor
    profile: Tensor
    has_profile: Tensor
    profile_entropy: Tensor
    row_entropy: Tensor
    parts: ClusterParts


def is_right_padded(mask: Tensor) -> bool:
    """Whether every row of ``mask`` (batch, pos) is its real tokens then PAD (compaction is
    then the identity; one host synchronisation)."""
    idx = torch.arange(mask.shape[-1], device=mask.device)
    return bool((mask == (idx < mask.sum(-1, keepdim=True))).all())


def layer_measures(
    attn: Tensor,
    mask: Tensor | None = None,
    options: GateOptions | None = None,
    right_padded: bool | None = None,
    recip_out: Tensor | None = None,
    work: Tensor | None = None,
) -> LayerMeasures:
    """The per-genome measures of one layer's attention (see the module docstring).

    One copy of the maps is made (PAD keys zeroed, rows renormalised over the real keys, PAD
    rows zeroed; compacted first unless the batch is right-padded); every per-row statistic is
    a reduction or a matrix-vector product over it; the metastable k sorts each row once; the
    row entropy is taken once for the open gate and the ``row_entropy`` table.

    Parameters
    ----------
    attn : (batch, head, q_pos, k_pos) attention probabilities (non-negative)
    mask : (batch, pos) bool, True = real token; None = all real
    options : window, coverage, drop_special, iterations
    right_padded : whether ``mask`` is right-padded (``is_right_padded``; None = check here)
    recip_out : (batch, head, pos - 1, pos - 1) where the reciprocal attention of ``parts`` is
        written (``segmentation.reciprocal_parts``); None = a new tensor
    work : a float tensor of ``attn``'s shape that receives the renormalised copy of the maps
        (a caller streaming many batches reuses one: a map-sized tensor allocated afresh for
        every layer costs its page faults each time); None = a new tensor

    Returns
    -------
    LayerMeasures
    """
    options = options or GateOptions()
    a, n = _renormalised(attn, mask, right_padded, work)
    idx = torch.arange(a.shape[-1], device=a.device)
    real = idx < n[:, None]
    content = real & (idx >= 1) & (idx < n[:, None] - 1)
    rows = content if options.drop_special else real
    last = (n - 1).clamp(min=0)[:, None, None, None].expand(*a.shape[:-1], 1)
    cls, sep = a[..., 0], a.gather(-1, last)[..., 0]
    sep_other = (n > 1).to(a.dtype)[:, None, None]  # [SEP] is not [CLS]
    stats = hm.row_statistics(a, options.coverage)  # (batch, head, q_pos) each
    entropy = stats.entropy
    c = content.to(a.dtype)[:, None, None, :]  # (batch, 1, 1, k_pos)
    content_mass = (c @ a.transpose(-1, -2))[..., 0, :]  # Σ_j A_ij c_j, read row-major
    ln_n = torch.log(n.to(a.dtype).clamp(min=2))[:, None, None]
    per_row = {
        "closed": cls + sep,
        "open": entropy / ln_n,
        "backward": hm.contextual_mass(a, options.window, forward=False),
        "forward": hm.contextual_mass(a, options.window, forward=True),
        "content": content_mass,
        "cls": cls,
        "sep": sep,
        "distance": stats.distance,
        "metastable_k": stats.metastable_k,
    }
    names = list(per_row)
    means = hm.row_mean(torch.stack([per_row[k] for k in names], 1), rows[:, None])
    out = dict(zip(names, means.unbind(1), strict=True))
    out["cluster"] = torch.zeros_like(out["content"])  # filled from the parts by the caller
    # PAD rows of ``a`` are zero: without drop_special the rows need no mask (the same sums)
    profile, has_profile = hm.key_profile(a, rows if options.drop_special else None, content)
    # ‖A restricted to rows x content keys‖_F²: the row norms less the [CLS]/[SEP] entries
    norm = torch.linalg.vector_norm(a, dim=-1).square() - cls.square() - sep_other * sep.square()
    square_norm = (norm.clamp(min=0) * rows[:, None, :]).sum(-1)
    out["focus"] = out["content"] * hm.focus(
        a, rows, content, options.iterations, profile=profile, square_norm=square_norm
    )
    w = rows.to(a.dtype)[:, None, :]
    mean_entropy = (entropy * w).sum(-1) / w.sum(-1).clamp(min=1)
    log_n = torch.log(n.to(a.dtype))[:, None]
    row_entropy = torch.where(n[:, None] >= 2, mean_entropy / log_n.clamp(min=1e-30), 0.0)
    content_rows = ((content_mass > 0) & content[:, None, :]).sum(-1)
    parts = reciprocal_parts(a[..., 1:, 1:], (n - 2).clamp(min=0), content_rows, recip_out)
    return LayerMeasures(
        measures=torch.stack([out[m] for m in MEASURES], 1),
        profile=profile,
        has_profile=has_profile,
        profile_entropy=hm.row_entropy(profile[..., None, :])[..., 0],
        row_entropy=row_entropy,
        parts=parts,
    )


def _renormalised(
    attn: Tensor, mask: Tensor | None, right_padded: bool | None, out: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """A float copy of ``attn`` in compacted positions with PAD rows and keys zeroed and every
    row renormalised over the real keys (the same values as ``compact_square`` then the
    division: without its gathers when the batch is right-padded), and the real counts n;
    written into ``out`` when given (a right-padded batch)."""
    if attn.dim() != 4 or attn.shape[-1] != attn.shape[-2]:
        raise ValueError(f"attn must be (batch, head, pos, pos), got {tuple(attn.shape)}")
    b, _, p, _ = attn.shape
    mask = check_mask(mask, b, p, attn.device)
    x = attn.to(torch.promote_types(attn.dtype, torch.float32))
    n = mask.sum(-1)
    real = torch.arange(p, device=x.device) < n[:, None]
    if right_padded is None:
        right_padded = is_right_padded(mask)
    if right_padded:
        # PAD keys zeroed (a new tensor unless ``out``, PAD rows kept)
        a = torch.mul(x, real[:, None, None, :], out=out)
    else:
        a, _ = compact_square(x, mask)
    total = a.sum(-1, keepdim=True)
    # rows renormalised over the real keys; PAD query rows divided by inf (zeroed)
    a = a.div_(torch.where(real[:, None, :, None], torch.where(total > 0, total, 1.0), torch.inf))
    return a, n


def genome_measures(
    attn: Tensor, mask: Tensor | None = None, options: GateOptions | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-genome measures of every head (see the module docstring).

    Parameters
    ----------
    attn : (batch, head, q_pos, k_pos) attention probabilities; PAD keys are dropped and rows
        renormalised over the real keys
    mask : (batch, pos) bool, True = real token; None = all real
    options : window, coverage, drop_special, iterations

    Returns
    -------
    measures : (batch, measure, head) in ``MEASURES`` order
    profile : (batch, head, k_pos) content-key profile in compacted positions
    has_profile : (batch, head) bool
    """
    lm = layer_measures(attn, mask, options)
    measures = lm.measures.clone()
    measures[:, MEASURES.index("cluster")] = cluster_from_parts(lm.parts)
    return measures, lm.profile, lm.has_profile


def gate_stats(
    attn: Tensor,
    mask: Tensor | None = None,
    labels: Tensor | None = None,
    n_classes: int = 1,
    options: GateOptions | None = None,
) -> GateStats:
    """Reduce a batch of attention maps of one layer to per-class sums (``GateStats``).

    Parameters
    ----------
    attn : (batch, head, q_pos, k_pos) attention probabilities
    mask : (batch, pos) bool, True = real token; None = all real
    labels : (batch,) class ids in 0..n_classes-1; None = one class
    n_classes : number of classes
    options : see ``GateOptions``

    Returns
    -------
    GateStats with a ``class`` dimension of size ``n_classes``
    """
    stats, parts = gate_stats_and_parts(attn, mask, labels, n_classes, options)
    return add_cluster(stats, cluster_from_parts(parts), labels, n_classes)


def gate_stats_and_parts(
    attn: Tensor,
    mask: Tensor | None = None,
    labels: Tensor | None = None,
    n_classes: int = 1,
    options: GateOptions | None = None,
) -> tuple[GateStats, ClusterParts]:
    """``gate_stats`` without the cluster measure (0 in ``sums``), and that measure's parts.

    The cluster score's dynamic programme takes ``pos`` sequential steps whatever the batch, so
    a caller holding several layers of the same genomes concatenates their parts
    (``ClusterParts.cat``), runs ``cluster_from_parts`` once and adds the scores back with
    ``add_cluster``: the result equals ``gate_stats``.
    """
    lm = layer_measures(attn, mask, options)
    labels = check_labels(labels, attn.shape[0], n_classes, attn.device)

    def per_class(x: Tensor) -> Tensor:
        out = torch.zeros((n_classes, *x.shape[1:]), dtype=torch.float64, device=x.device)
        return out.index_add(0, labels, x.double())

    stats = GateStats(
        n_genomes=per_class(torch.ones(attn.shape[0], device=attn.device)),
        sums=per_class(lm.measures),
        profile_sum=per_class(lm.profile),
        profile_entropy_sum=per_class(lm.profile_entropy),
        n_profiles=per_class(lm.has_profile),
    )
    return stats, lm.parts


def add_cluster(
    stats: GateStats, scores: Tensor, labels: Tensor | None = None, n_classes: int = 1
) -> GateStats:
    """``stats`` with per-genome cluster scores (batch, head) added to the class sums."""
    labels = check_labels(labels, scores.shape[0], n_classes, scores.device)
    sums = stats.sums.clone()
    sums[:, MEASURES.index("cluster")] += torch.zeros(
        (n_classes, scores.shape[1]), dtype=torch.float64, device=scores.device
    ).index_add(0, labels, scores.double())
    return replace(stats, sums=sums)


def profile_variability(profile_sum: Tensor, entropy_sum: Tensor, n_profiles: Tensor) -> Tensor:
    """Profile variability ``v = (H(p̄) - mean_g H(p_g)) / min(ln G, H(p̄))`` (normalised JSD).

    Parameters
    ----------
    profile_sum : (..., k_pos) Σ_g p_g
    entropy_sum : (...) Σ_g H(p_g)
    n_profiles : (...) number of genomes summed

    Returns
    -------
    (...) in [0, 1]; 0 with fewer than two genomes or a point-mass mean profile
    """
    total = profile_sum.sum(-1, keepdim=True)
    mean = profile_sum / torch.where(total > 0, total, 1.0)
    h_mean = hm.row_entropy(mean[..., None, :])[..., 0]
    mean_h = entropy_sum / n_profiles.clamp(min=1)
    bound = torch.minimum(h_mean, torch.log(n_profiles.clamp(min=1)))
    v = torch.where(bound > 1e-12, (h_mean - mean_h) / bound.clamp(min=1e-12), 0.0)
    return torch.where(n_profiles >= 2, v.clamp(0.0, 1.0), 0.0)


@dataclass(frozen=True)
class GateScores:
    """Gate scores and per-head statistics of one layer.

    Attributes
    ----------
    values : (gate, class, head) scores in ``GATES`` order; NaN for a class without genomes
    pooled : (gate, head) the same over all genomes together
    head_stats : (stat, class, head) ``HEAD_STATS``: mean attention to [CLS], to [SEP], mean
        attention distance (tokens) and metastable-state size k (keys)
    pooled_head_stats : (stat, head)
    variability : (class, head) profile variability v per class
    pooled_variability : (head,)
    n_genomes : (class,)
    """

    values: Tensor
    pooled: Tensor
    head_stats: Tensor
    pooled_head_stats: Tensor
    variability: Tensor
    pooled_variability: Tensor
    n_genomes: Tensor

    def labels(self, thresholds: GateThresholds | None = None) -> np.ndarray:
        """(class, head) labels per class (``label_heads``)."""
        return label_heads(self.values, thresholds)

    def pooled_labels(self, thresholds: GateThresholds | None = None) -> np.ndarray:
        """(head,) labels over all genomes."""
        return label_heads(self.pooled, thresholds)


def _scores(sums: Tensor, n: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """(…, measure, head) sums and (…) genome counts -> (gate, …, head), (stat, …, head)."""
    mean = sums / n.clamp(min=1)[..., None, None]
    mean = torch.where(n[..., None, None] > 0, mean, torch.nan)
    m = {name: mean[..., i, :] for i, name in enumerate(MEASURES)}
    m["directional"] = m["focus"] * (1 - v)
    m["instance"] = m["content"] * v
    return torch.stack([m[g] for g in GATES]), torch.stack([m[s] for s in HEAD_STATS])


def gate_scores(stats: GateStats) -> GateScores:
    """Gate scores per class and pooled from streamed statistics (formulas: module docstring).

    Parameters
    ----------
    stats : GateStats of one layer, all batches combined

    Returns
    -------
    GateScores
    """
    v = profile_variability(stats.profile_sum, stats.profile_entropy_sum, stats.n_profiles)
    pooled_v = profile_variability(
        stats.profile_sum.sum(0), stats.profile_entropy_sum.sum(0), stats.n_profiles.sum(0)
    )
    values, head_stats = _scores(stats.sums, stats.n_genomes, v)
    pooled, pooled_stats = _scores(stats.sums.sum(0), stats.n_genomes.sum(0), pooled_v)
    return GateScores(
        values=values,
        pooled=pooled,
        head_stats=head_stats,
        pooled_head_stats=pooled_stats,
        variability=v,
        pooled_variability=pooled_v,
        n_genomes=stats.n_genomes,
    )


def label_heads(
    values: Tensor | np.ndarray, thresholds: GateThresholds | None = None
) -> np.ndarray:
    """Label each head by its dominant gate, or "mixed".

    Among the gates with ``score >= threshold``, the label is the one with the largest relative
    excess ``(score - threshold) / (1 - threshold)``; "mixed" when none qualifies, "empty" when
    the scores are NaN (no genomes).

    Parameters
    ----------
    values : (gate, ...) scores in ``GATES`` order
    thresholds : GateThresholds (defaults when None)

    Returns
    -------
    (...) numpy array of str
    """
    s = torch.as_tensor(values).detach().cpu().double().numpy()
    t = (thresholds or GateThresholds()).values().reshape((-1,) + (1,) * (s.ndim - 1))
    excess = np.where(s >= t, (s - t) / (1 - t), -np.inf)
    best = np.argmax(excess, axis=0)
    names = np.array(GATES, dtype=object)[best]
    names = np.where(np.isfinite(np.max(excess, axis=0)), names, "mixed")
    return np.where(np.isnan(s).any(axis=0), "empty", names).astype(str)


def head_scores(
    attn: Tensor,
    mask: Tensor | None = None,
    options: GateOptions | None = None,
) -> Tensor:
    """Gate scores of one batch treated as one class (convenience for small inputs).

    Parameters
    ----------
    attn : (batch, head, q_pos, k_pos)
    mask : (batch, pos) bool or None
    options : see ``GateOptions``

    Returns
    -------
    (gate, head) pooled scores
    """
    return gate_scores(gate_stats(attn, mask, options=options)).pooled
