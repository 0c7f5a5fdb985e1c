"""Distribution of per-genome embeddings layer by layer (science.md §6).

Inputs are one vector per genome and layer, ``x: (genome, layer, d_model)`` numpy arrays (the
[CLS] vector, the mean-pooled token rows, or the input embedding of a chosen token), with class
ids ``labels: (genome,)``. Every function returns one value (or a few) per layer; all randomness
is seeded. scikit-learn does the fitting; cross-validation is stratified with
``min(folds, smallest class size)`` folds.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

import numpy as np
import torch
from torch import Tensor

from bertgeom.errors import InputError
from bertgeom.geometry.masking import check_mask


def _check(x: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 3:
        raise ValueError(f"x must be (genome, layer, d_model), got shape {x.shape}")
    if labels is not None and np.shape(labels) != x.shape[:1]:
        raise ValueError(f"labels must have shape (genome,) = {x.shape[:1]}")
    return x


def _folds(labels: np.ndarray, folds: int, seed: int):  # -> StratifiedKFold (lazy import)
    from sklearn.model_selection import StratifiedKFold

    classes, counts = np.unique(labels, return_counts=True)
    if len(classes) < 2:
        raise InputError("cross-validated accuracy needs genomes of at least two classes")
    if counts.min() < 2:
        raise InputError(
            f"cross-validation needs >= 2 genomes per class; class {classes[counts.argmin()]} has 1"
        )
    return StratifiedKFold(n_splits=min(folds, int(counts.min())), shuffle=True, random_state=seed)


@dataclass(frozen=True)
class PcaSummary:
    """PCA per layer.

    Attributes
    ----------
    explained_variance_ratio : (layer, component)
    coordinates : (layer, genome, 2) the 2-D PCA map
    """

    explained_variance_ratio: np.ndarray
    coordinates: np.ndarray


def pca_summary(x: np.ndarray, n_components: int = 10, seed: int = 0) -> PcaSummary:
    """Explained variance ratios and 2-D map coordinates of a PCA fitted per layer.

    Parameters
    ----------
    x : (genome, layer, d_model)
    n_components : components kept (capped at min(genome, d_model))
    seed : for the randomized solver

    Returns
    -------
    PcaSummary (the map is zero-padded when fewer than 2 components exist)
    """
    from sklearn.decomposition import PCA

    x = _check(x)
    k = min(n_components, x.shape[0], x.shape[2])
    ratios, coords = [], []
    for layer in range(x.shape[1]):
        pca = PCA(n_components=k, random_state=seed)
        z = pca.fit_transform(x[:, layer])
        ratios.append(pca.explained_variance_ratio_)
        coords.append(np.pad(z[:, :2], ((0, 0), (0, max(0, 2 - z.shape[1])))))
    return PcaSummary(explained_variance_ratio=np.array(ratios), coordinates=np.array(coords))


#: Methods of :func:`nonlinear_maps`: scikit-learn's t-SNE, and UMAP from the optional
#: package umap-learn (``pip install 'bertgeom[maps]'``).
NONLINEAR_METHODS = ("tsne", "umap")
#: Fewest genomes a non-linear map is drawn for (fewer are skipped with a note).
MIN_MAP_GENOMES = 5


@dataclass(frozen=True)
class NonlinearMaps:
    """A 2-D non-linear map per layer, or why there is none.

    Attributes
    ----------
    method : "tsne" or "umap"
    coordinates : (layer, genome, 2), or None when the map was skipped
    parameter : the perplexity (t-SNE) or number of neighbours (UMAP) used, after clipping
    note : why the map was skipped or what was clipped ("" = nothing to say)
    """

    method: str
    coordinates: np.ndarray | None
    parameter: float
    note: str = ""


def tsne_perplexity(perplexity: float, n_genomes: int) -> float:
    """The perplexity t-SNE is run with: ``min(perplexity, (n_genomes - 1) / 3)``.

    t-SNE needs perplexity < n_genomes, and scikit-learn looks at the ``3 * perplexity + 1``
    nearest neighbours of each point; capping at (n - 1) / 3 keeps that neighbourhood within
    the other genomes (from n = 91 up, the default 30 is used unchanged).
    """
    return float(min(perplexity, (n_genomes - 1) / 3))


def import_umap() -> ModuleType | None:
    """The ``umap`` module of umap-learn, None when it is not importable."""
    import warnings

    try:
        with warnings.catch_warnings():
            # umap warns at import that its optional TensorFlow-based ParametricUMAP is
            # unavailable; we only use umap.UMAP
            warnings.filterwarnings("ignore", "Tensorflow not installed", ImportWarning)
            import umap
    except ImportError:
        return None
    return umap


def nonlinear_maps(
    x: np.ndarray,
    method: str = "tsne",
    seed: int = 0,
    *,
    perplexity: float = 30.0,
    n_neighbors: int = 15,
) -> NonlinearMaps:
    """2-D t-SNE or UMAP map of the genomes, fitted per layer; the same seed gives the same map.

    Parameters
    ----------
    x : (genome, layer, d_model)
    method : "tsne" (scikit-learn: Barnes-Hut, PCA initialisation, automatic learning rate,
        1000 iterations) or "umap" (umap-learn, when installed); both run on one thread
    seed : random state of the fit
    perplexity : t-SNE perplexity, clipped by :func:`tsne_perplexity` for small samples
    n_neighbors : UMAP neighbourhood size, clipped to genome - 1

    Returns
    -------
    NonlinearMaps; coordinates None with a note when there are fewer than
    ``MIN_MAP_GENOMES`` genomes, or for UMAP when umap-learn is not installed
    """
    if method not in NONLINEAR_METHODS:
        raise ValueError(f"method must be one of {NONLINEAR_METHODS}, got {method!r}")
    x = _check(x)
    n = x.shape[0]
    if method == "tsne":
        param: float = tsne_perplexity(perplexity, n)
        asked: float = perplexity
    else:
        param, asked = float(min(n_neighbors, n - 1)), float(n_neighbors)
    if n < MIN_MAP_GENOMES:
        why = f"{method}: skipped, {n} genomes (a map needs at least {MIN_MAP_GENOMES})"
        return NonlinearMaps(method, None, param, why)
    if method == "tsne":
        fit = _tsne(param, seed)
    else:
        umap = import_umap()
        if umap is None:
            why = "umap: skipped, umap-learn is not installed (pip install 'bertgeom[maps]')"
            return NonlinearMaps(method, None, param, why)
        fit = umap.UMAP(n_neighbors=int(param), n_components=2, random_state=seed, n_jobs=1)
    # UMAP warns (UserWarning) when the neighbour graph falls apart, as with many identical
    # genomes, and then lays it out otherwise: a note on the map, not a warning
    coords, warned = _fit_layers(fit, x, (UserWarning,) if method == "umap" else ())
    name = "perplexity" if method == "tsne" else "n_neighbors"
    notes = []
    if param < asked:
        notes.append(f"{method}: {name} {asked:g} clipped to {param:.3g} for {n} genomes")
    notes += [f"{method}: {m} ({k} of {x.shape[1]} layers)" for m, k in warned.items()]
    return NonlinearMaps(method, coords, param, "; ".join(notes))


def _fit_layers(
    fit,  # noqa: ANN001 (a TSNE or UMAP estimator)
    x: np.ndarray,
    as_notes: tuple[type[Warning], ...] = (),
) -> tuple[np.ndarray, dict[str, int]]:
    """(layer, genome, 2) coordinates of ``fit`` per layer (one thread), and the text of each
    warning of the ``as_notes`` categories with the number of layers that raised it; every
    other warning passes on."""
    import warnings

    from threadpoolctl import threadpool_limits

    coords = np.zeros((x.shape[1], x.shape[0], 2))  # (layer, genome, 2)
    warned: dict[str, int] = {}
    # one thread: t-SNE's Barnes-Hut gradient meets OpenMP barriers every iteration, and with
    # the cores shared (torch's own OpenMP runtime in this process, other jobs) two threads
    # ran 3-40x slower than one here (2,000 genomes: 57 s against 19 s)
    with threadpool_limits(1):
        for layer in range(x.shape[1]):
            if x[:, layer].std(axis=0).max() <= 1e-12:  # all genomes alike: a point at 0
                continue
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                coords[layer] = fit.fit_transform(x[:, layer])
            seen = set()
            for w in caught:
                if not issubclass(w.category, as_notes):
                    warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
                    continue
                text = " ".join(str(w.message).split()).rstrip(".")
                if text not in seen:
                    seen.add(text)
                    warned[text] = warned.get(text, 0) + 1
    return coords, warned


def _tsne(perplexity: float, seed: int):  # -> sklearn TSNE (lazy import)
    from sklearn.manifold import TSNE

    return TSNE(
        n_components=2,
        perplexity=perplexity,
        init="pca",
        learning_rate="auto",
        max_iter=1000,
        random_state=seed,
    )


def silhouette_by_layer(
    x: np.ndarray, labels: np.ndarray, *, sample_size: int | None = None, seed: int = 0
) -> np.ndarray:
    """Silhouette coefficient of the classes per layer (Euclidean), in [-1, 1].

    Parameters
    ----------
    x : (genome, layer, d_model)
    labels : (genome,)
    sample_size : score a seeded random subset of this many genomes (None = all)

    Returns
    -------
    (layer,); NaN when there are fewer than 2 classes or no more genomes than classes
    """
    from sklearn.metrics import silhouette_score

    x = _check(x, labels)
    n_labels = len(np.unique(labels))
    if not 2 <= n_labels < x.shape[0]:
        return np.full(x.shape[1], np.nan)
    return np.array([
        silhouette_score(x[:, layer], labels, sample_size=sample_size, random_state=seed)
        for layer in range(x.shape[1])
    ])  # fmt: skip


def _cv_scores(
    x: np.ndarray,
    labels: np.ndarray,
    model,  # noqa: ANN001 (any scikit-learn classifier)
    folds: int,
    seed: int,
    scoring: tuple[str, ...] = ("accuracy",),
) -> dict[str, np.ndarray]:
    """Scoring name -> (layer,) mean cross-validated score of ``model`` fitted per layer."""
    from sklearn.model_selection import cross_validate

    cv = _folds(labels, folds, seed)
    runs = [
        cross_validate(model, x[:, layer], labels, cv=cv, scoring=scoring)
        for layer in range(x.shape[1])
    ]
    return {name: np.array([run[f"test_{name}"].mean() for run in runs]) for name in scoring}


def knn_accuracy(
    x: np.ndarray,
    labels: np.ndarray,
    *,
    n_neighbors: int = 5,
    folds: int = 5,
    seed: int = 0,
    clip: str = "fold",
) -> np.ndarray:
    """Cross-validated k-nearest-neighbour accuracy per layer (Euclidean, uniform weights).

    ``n_neighbors`` is clipped for small samples: ``clip="fold"`` to the smallest training
    fold; ``clip="class"`` to the fewest genomes of one class in a training fold, so that a
    genome's own class can fill its neighbourhood (with 3 genomes per class and 3 folds, k = 2
    rather than the 4 of the training fold, whose 2-2 ties misclassify perfectly separated
    classes).

    Returns
    -------
    (layer,) mean accuracy over the folds
    """
    from sklearn.neighbors import KNeighborsClassifier

    if clip not in ("fold", "class"):
        raise ValueError(f"clip must be 'fold' or 'class', got {clip!r}")
    x = _check(x, labels)
    cv = _folds(labels, folds, seed)
    labels = np.asarray(labels)
    splits = list(cv.split(np.zeros(len(labels)), labels))
    if clip == "fold":
        smallest = min(len(train) for train, _ in splits)
    else:
        smallest = min(
            int(np.unique(labels[train], return_counts=True)[1].min()) for train, _ in splits
        )
    knn = KNeighborsClassifier(n_neighbors=max(1, min(n_neighbors, smallest)))
    return _cv_scores(x, labels, knn, folds, seed)["accuracy"]


def _probe(c: float, seed: int):  # -> sklearn Pipeline (lazy import)
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(
        StandardScaler(), LogisticRegression(C=c, max_iter=2000, random_state=seed)
    )


def probe_accuracy(
    x: np.ndarray, labels: np.ndarray, *, c: float = 1.0, folds: int = 5, seed: int = 0
) -> np.ndarray:
    """Cross-validated linear-probe accuracy per layer.

    The probe is a standardisation followed by multinomial logistic regression (L2, inverse
    strength ``c``).

    Returns
    -------
    (layer,) mean accuracy over the folds
    """
    x = _check(x, labels)
    return _cv_scores(x, labels, _probe(c, seed), folds, seed)["accuracy"]


@dataclass(frozen=True)
class OneVsAll:
    """One class against the rest, per layer (the research code's probe).

    Attributes
    ----------
    classes : (class,) the class ids, sorted
    accuracy : (layer, class) cross-validated accuracy
    balanced_accuracy : (layer, class) mean of the two recalls (0.5 = chance)
    """

    classes: np.ndarray
    accuracy: np.ndarray
    balanced_accuracy: np.ndarray


def one_vs_all_accuracy(
    x: np.ndarray, labels: np.ndarray, *, c: float = 1.0, folds: int = 5, seed: int = 0
) -> OneVsAll:
    """Cross-validated linear probes of each class against the rest, per layer.

    Returns
    -------
    OneVsAll
    """
    x = _check(x, labels)
    classes = np.unique(labels)
    acc, bal = [], []
    scoring = ("accuracy", "balanced_accuracy")
    for cls in classes:
        target = (np.asarray(labels) == cls).astype(int)
        scores = _cv_scores(x, target, _probe(c, seed), folds, seed, scoring)
        acc.append(scores["accuracy"])
        bal.append(scores["balanced_accuracy"])
    return OneVsAll(classes=classes, accuracy=np.array(acc).T, balanced_accuracy=np.array(bal).T)


def one_vs_all_probes(
    x: np.ndarray,
    labels: np.ndarray,
    *,
    c: float = 1.0,
    folds: int = 5,
    seed: int = 0,
    max_iter: int = 100,
) -> OneVsAll:
    """The probes of :func:`one_vs_all_accuracy` (the same folds, standardisation and L2
    logistic regression), every layer's problem of one class and fold solved together.

    The objective is scikit-learn's, ``C Σ_i log(1 + exp(−s_i (w·z_i + b))) + ||w||² / 2`` (the
    intercept unpenalised), divided by ``C n``; it is strictly convex, and Newton's method with
    a backtracking line search (:func:`_logistic_layers`, batched over the layers, until every
    gradient component is below 1e-9 or ``max_iter`` steps) reaches its minimum in a few
    steps: classes x folds batched solves instead of classes x folds x layers scikit-learn
    fits, each with its fixed overhead. The probes are those of :func:`one_vs_all_accuracy` up
    to its looser stopping rule (a test genome within that tolerance of the boundary may fall
    the other way).

    Returns
    -------
    OneVsAll
    """
    x = _check(x, labels)
    labels = np.asarray(labels)
    classes = np.unique(labels)
    n, n_layers, _ = x.shape
    acc = np.zeros((len(classes), n_layers))
    bal = np.zeros((len(classes), n_layers))
    for i, cls in enumerate(classes):
        target = (labels == cls).astype(int)
        cv = _folds(target, folds, seed)
        splits = list(cv.split(np.zeros(n), target))
        for train, test in splits:
            pred = _logistic_layers(x[train], target[train], x[test], c, max_iter)
            truth = target[test][:, None] == 1  # (test, 1)
            acc[i] += (pred == truth).mean(0)
            recall_pos = (pred & truth).sum(0) / truth.sum()
            recall_neg = (~pred & ~truth).sum(0) / (~truth).sum()
            bal[i] += (recall_pos + recall_neg) / 2
        acc[i] /= len(splits)
        bal[i] /= len(splits)
    return OneVsAll(classes=classes, accuracy=acc.T, balanced_accuracy=bal.T)


def _logistic_layers(
    x: np.ndarray, target: np.ndarray, x_test: np.ndarray, c: float, max_iter: int
) -> np.ndarray:
    """(test, layer) bool predictions of an L2 logistic regression fitted per layer on the
    standardised ``x`` (genome, layer, d) with 0/1 ``target``: Newton's method batched over
    the layers (float64)."""
    from scipy.special import expit, log_expit

    mu = x.mean(0)
    sd = x.std(0)
    sd[sd == 0] = 1.0  # a constant feature stays 0 (as StandardScaler)
    m, n_layers, d = x.shape
    z = np.concatenate([(x - mu) / sd, np.ones((m, n_layers, 1))], -1).transpose(1, 0, 2)
    sign = 2.0 * target - 1.0  # (m,)
    lam = 1.0 / (c * m)
    penal = np.r_[np.full(d, lam), 0.0]  # the intercept is not penalised

    def loss(theta: np.ndarray) -> np.ndarray:  # (layer,)
        margin = sign * np.matmul(z, theta[..., None])[..., 0]
        return -log_expit(margin).mean(1) + 0.5 * (penal * theta * theta).sum(-1)

    theta = np.zeros((n_layers, d + 1))
    current = loss(theta)
    for _ in range(max_iter):
        margin = sign * np.matmul(z, theta[..., None])[..., 0]  # (layer, m)
        p = expit(-margin)
        grad = np.matmul((-sign * p / m)[:, None, :], z)[:, 0] + penal * theta
        if np.abs(grad).max() < 1e-9:
            break
        weight = p * (1 - p) / m
        step = _newton_step(z, weight, grad, lam)
        slope = (grad * step).sum(-1)
        t = np.ones(n_layers)
        for _ in range(40):  # backtracking (Armijo) per layer
            trial = loss(theta - t[:, None] * step)
            bad = trial > current - 1e-4 * t * slope
            if not bad.any():
                break
            t = np.where(bad, t / 2, t)
        theta = theta - t[:, None] * step
        current = loss(theta)
    zt = np.concatenate([(x_test - mu) / sd, np.ones((len(x_test), n_layers, 1))], -1)
    return np.einsum("mld,ld->ml", zt, theta) > 0


def _newton_step(z: np.ndarray, weight: np.ndarray, grad: np.ndarray, lam: float) -> np.ndarray:
    """(layer, d + 1) solution s of H s = grad, H = zᵀ diag(weight) z + diag(λ, ..., λ, 0) the
    Hessian of :func:`_logistic_layers` (z: (layer, m, d + 1), its last column the intercept's
    ones; weight (layer, m) > 0).

    With more features than genomes (m < d: ``base``'s 768-dimensional vectors and a few hundred
    genomes) the (d + 1) x (d + 1) system is solved through the genomes' m x m one: with
    B = diag(√w) X, the feature block A = λI + BᵀB has A⁻¹v = (v − Bᵀ(λI + BBᵀ)⁻¹Bv) / λ
    (Woodbury), and the unpenalised intercept is eliminated by its Schur complement. The same
    Newton step, in O(m²d) instead of O(d³) per layer (20 s instead of 123 s for the
    one-vs-all probes of 256 genomes x 13 layers x 768 dimensions on two cores). Else the
    dense solve.
    """
    m, d = z.shape[1], z.shape[2] - 1
    if m >= d:
        return _dense_step(z, weight, grad, lam)
    x = z[..., :d]  # (layer, m, d)
    b = np.sqrt(weight)[..., None] * x  # (layer, m, d)
    gram = np.matmul(b, b.transpose(0, 2, 1))  # (layer, m, m)
    gram[:, np.arange(m), np.arange(m)] += lam
    cross = np.matmul(weight[:, None, :], x)[:, 0]  # (layer, d): Σ_i w_i x_i
    rhs = np.stack([grad[:, :d], cross], -1)  # (layer, d, 2)
    # A⁻¹ rhs = (rhs − Bᵀ (λI + BBᵀ)⁻¹ B rhs) / λ
    inner = np.linalg.solve(gram, np.matmul(b, rhs))
    solved = (rhs - np.matmul(b.transpose(0, 2, 1), inner)) / lam  # (layer, d, 2)
    schur = weight.sum(1) - (cross * solved[..., 1]).sum(1)  # c − bᵀA⁻¹b
    if not np.all(schur > 0):  # numerically singular: the dense solve decides
        return _dense_step(z, weight, grad, lam)
    step_b = (grad[:, d] - (cross * solved[..., 0]).sum(1)) / schur
    step_w = solved[..., 0] - solved[..., 1] * step_b[:, None]
    return np.concatenate([step_w, step_b[:, None]], -1)


def _dense_step(z: np.ndarray, weight: np.ndarray, grad: np.ndarray, lam: float) -> np.ndarray:
    """:func:`_newton_step` by the (d + 1) x (d + 1) solve."""
    d = z.shape[2] - 1
    hess = np.matmul(z.transpose(0, 2, 1), weight[..., None] * z)
    hess[:, np.arange(d), np.arange(d)] += lam
    return np.linalg.solve(hess, grad[..., None])[..., 0]


def kmeans_ari(
    x: np.ndarray, labels: np.ndarray, *, n_clusters: int | None = None, seed: int = 0
) -> np.ndarray:
    """Adjusted Rand index of k-means clusters (k = number of classes) against the classes.

    Returns
    -------
    (layer,) in [-0.5, 1], 1 = clusters equal classes, ~0 = chance
    """
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score

    x = _check(x, labels)
    k = n_clusters or len(np.unique(labels))
    out = []
    for layer in range(x.shape[1]):
        clusters = KMeans(k, n_init=10, random_state=seed).fit_predict(x[:, layer])
        out.append(adjusted_rand_score(labels, clusters))
    return np.array(out)


def mean_pairwise_cosine(x: np.ndarray) -> np.ndarray:
    """Anisotropy: the exact mean cosine similarity over all pairs of distinct genomes, per
    layer (Ethayarajh 2019; 0 for isotropic vectors, 1 when all point one way).

    With unit vectors ``u_i = x_i / ||x_i||`` (``u_i = 0`` for a zero vector, which counts as
    cosine 0), ``Σ_{i≠j} u_i·u_j = ||Σ_i u_i||² − Σ_i ||u_i||²``: one pass over the genomes, in
    float64, instead of n (n − 1) products or a sample of them.

    Returns
    -------
    (layer,); NaN with fewer than 2 genomes
    """
    x = _check(x)
    n = x.shape[0]
    if n < 2:
        return np.full(x.shape[1], np.nan)
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    unit = np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)
    total = unit.sum(0)  # (layer, d)
    self_terms = (norm[..., 0] > 0).sum(0)  # Σ ||u_i||² (1 per non-zero vector)
    return ((total * total).sum(-1) - self_terms) / (n * (n - 1))


def anisotropy(x: np.ndarray, *, n_pairs: int = 10_000, seed: int = 0) -> np.ndarray:
    """Mean cosine similarity between random pairs of distinct genomes, per layer (a
    Monte-Carlo estimate; :func:`mean_pairwise_cosine` is exact and cheaper).

    ``mean_{(i, j) random, i ≠ j} cos(x_i, x_j)``; 0 for isotropic vectors, 1 when all point
    one way (Ethayarajh 2019). Zero vectors count as cosine 0.

    Returns
    -------
    (layer,)
    """
    x = _check(x)
    n = x.shape[0]
    if n < 2:
        return np.full(x.shape[1], np.nan)
    rng = np.random.default_rng(seed)
    i = rng.integers(0, n, n_pairs)
    j = (i + rng.integers(1, n, n_pairs)) % n  # j != i
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    unit = np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)
    return np.einsum("pld,pld->pl", unit[i], unit[j]).mean(0)


def normality_pvalues(x: np.ndarray, n_components: int = 2, seed: int = 0) -> np.ndarray | None:
    """D'Agostino-Pearson K² normality test of the leading PCA coordinates, per layer.

    Returns
    -------
    (layer, component) p-values (small = not normal); None when scipy is missing or there are
    fewer than 20 genomes (the kurtosis test needs 20)
    """
    try:
        from scipy.stats import normaltest
    except ImportError:  # pragma: no cover - scipy ships with scikit-learn
        return None
    from sklearn.decomposition import PCA

    x = _check(x)
    if x.shape[0] < 20:
        return None
    k = min(n_components, x.shape[0], x.shape[2])
    return np.array([
        normaltest(PCA(n_components=k, random_state=seed).fit_transform(x[:, layer]), axis=0).pvalue
        for layer in range(x.shape[1])
    ])  # fmt: skip


@dataclass(frozen=True)
class ValueHistogram:
    """Fixed-edge histogram of values, streamed.

    Attributes
    ----------
    edges : (bins + 1,) bin edges
    counts : (bins,) values in [edges[b], edges[b+1]) (the last bin includes its right edge)
    below, above : values outside the edges
    """

    edges: Tensor
    counts: Tensor
    below: Tensor
    above: Tensor

    def combine(self, other: ValueHistogram) -> ValueHistogram:
        """Both batches together (edges must match)."""
        if not torch.equal(self.edges.cpu(), other.edges.cpu()):
            raise ValueError("cannot combine histograms with different edges")
        dev = self.counts.device
        return ValueHistogram(
            edges=self.edges,
            counts=self.counts + other.counts.to(dev),
            below=self.below + other.below.to(dev),
            above=self.above + other.above.to(dev),
        )


def summed_output_histogram(y: Tensor, mask: Tensor | None, edges: Tensor) -> ValueHistogram:
    """Histogram of the token-summed layer output: the values of ``Σ_{pos real} y_pos``.

    Parameters
    ----------
    y : (batch, pos, d_model) a layer output
    mask : (batch, pos) bool, True = real token
    edges : (bins + 1,) increasing bin edges

    Returns
    -------
    ValueHistogram over the batch x d_model values
    """
    keep = check_mask(mask, y.shape[0], y.shape[1], y.device)
    total = (y.double() * keep[..., None]).sum(1).flatten()  # (batch * d_model,)
    edges = edges.to(device=y.device, dtype=torch.float64)
    bins = edges.numel() - 1
    idx = torch.bucketize(total, edges, right=True) - 1
    idx = torch.where(total == edges[-1], bins - 1, idx)
    inside = (idx >= 0) & (idx < bins)
    counts = torch.zeros(bins, dtype=torch.int64, device=y.device)
    counts = counts.index_add(0, idx[inside], torch.ones_like(idx[inside]))
    return ValueHistogram(
        edges=edges,
        counts=counts,
        below=(total < edges[0]).sum(),
        above=(total > edges[-1]).sum(),
    )
