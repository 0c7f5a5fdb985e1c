"""The methods section: definitions with formulas, thresholds, versions and resolved configs.

The definitions restate ``docs/science.md`` and the docstrings of ``bertgeom.geometry``; the
thresholds come from the gate module's defaults and the stages' manifests, so they are the values
this run used.
"""

from __future__ import annotations

import dataclasses
import inspect
import json

import pandas as pd

from bertgeom.genome.qc import QcThresholds
from bertgeom.report.artefacts import RunArtefacts
from bertgeom.report.html import Section, esc, fmt, json_block, para, table

#: (term, explanation, formula); plain text, escaped when rendered.
DEFINITIONS: tuple[tuple[str, str, str], ...] = (
    (
        "Stream points",
        "For encoder layer l (post-LN BERT): X the layer input, A_h the attention of head h "
        "(PAD keys masked, rows sum to 1 over the n real tokens), Z_h = A_h V_h the head "
        "output, C the concatenation of the heads, O = C W_O + b_O, U = LN1(X + O), F = "
        "MLP(U), Y = LN2(U + F) the layer output. Statistics run over the real tokens. "
        "Attention tables number encoder layers from 0; [CLS] and embedding tables number "
        "hidden states, 0 being the embedding output and l the output of the l-th layer.",
        "A_h = softmax(Q_h K_hᵀ / √d_head + mask),  Q_h = X W_Q^h + b_Q^h,  K_h = X W_K^h + b_K^h",
    ),
    (
        "Cone index",
        "For a set S of non-zero vectors (zero vectors are excluded and counted), the length of "
        "the sum of the unit vectors; divided by |S| it is the mean resultant length, 1 when "
        "all vectors point one way. Computed per genome over its token rows at each stream "
        "point (and per head for Z_h and A_h), and per class over the [CLS] vectors of its "
        "genomes at each hidden state.",
        "I_cone(S) = ‖ Σ_{x∈S} x / ‖x‖ ‖₂,   0 ≤ I_cone/|S| ≤ 1,   "
        "I_cone² = |S| + Σ_{i≠j} cos(x_i, x_j)",
    ),
    (
        "Gate scores (bertgeom's operational definitions of the paper's seven gates)",
        "Per genome and head, with n real tokens, [CLS] first and [SEP] last, w the contextual "
        "window, m the mean attention mass on content keys, s₁²/Σs² the share of the largest "
        "singular value of the attention restricted to content keys and p the key profile "
        "(mass each content key receives, normalised). The profile variability v across the G "
        "genomes of a class is their Jensen-Shannon divergence over its upper bound. The "
        "cluster score is the reciprocal attention R_ij = √(A_ij A_ji) sitting in contiguous "
        "blocks (found by dynamic programming) above a banded (Toeplitz) null T with the same "
        "distance profile, scaled by the reciprocity r = Σ R / n_rows.",
        "closed = mean_i (A_i,CLS + A_i,SEP)\n"
        "open = mean_i H(A_i) / ln n,   H(a) = −Σ_j a_j ln a_j\n"
        "backward = mean_i Σ_{k=1..w} A_i,i−k,   forward = mean_i Σ_{k=1..w} A_i,i+k\n"
        "focus = m · s₁²/Σs² · (1 − exp(H(p)) / n_keys)\n"
        "v = [H(p̄) − mean_g H(p_g)] / min(ln G, H(p̄))\n"
        "directional = mean_g focus_g · (1 − v),   instance = mean_g m_g · v\n"
        "cluster = r · gain / (1 − T(inside)),   gain = Σ_blocks [S(B×B) − T(B×B)],  S = R/ΣR",
    ),
    (
        "Gate label",
        "A head's label is the gate whose score exceeds its threshold t by the largest share of "
        "the room above it; “mixed” when no score reaches its threshold.",
        "label = argmax_g (score_g − t_g) / (1 − t_g)  over gates with score_g ≥ t_g",
    ),
    (
        "Per-head statistics",
        "Attention to [CLS] and to [SEP] (mean mass), mean attention distance in tokens, and "
        "the metastable-state size k (Ramsauer et al. 2020): the fewest keys whose mass "
        "reaches the coverage c, per row, averaged.",
        "distance_i = Σ_j A_ij |i − j|,   k_i = min{k : sum of the k largest A_ij ≥ c}",
    ),
    (
        "Directionality",
        "The bilinear form B_h scores query-key pairs; d_h measures its antisymmetric part (0 "
        "symmetric, 1 antisymmetric). The signature counts the positive and negative "
        "eigenvalues of S (and their share of Σ|λ|); principal angles compare the row spaces "
        "of the head's query and key blocks. On data, the same ratio for the token score "
        "matrix M = Q Kᵀ (score antisymmetry) and the asymmetry of the attention itself.",
        "B_h = W_Q^h (W_K^h)ᵀ,  S = (B + Bᵀ)/2,  N = (B − Bᵀ)/2,  d_h = ‖N‖_F / ‖B‖_F\n"
        "score antisymmetry = ‖(M − Mᵀ)/2‖_F / ‖M‖_F,  "
        "attention asymmetry = ‖A − Aᵀ‖_F / ‖A + Aᵀ‖_F\n"
        "cos θ_i = σ_i(Q_qᵀ Q_k),  Q_q, Q_k orthonormal bases of the query and key row spaces",
    ),
    (
        "Entropies and ranks",
        "Row entropy of attention normalised by its maximum ln n; von Neumann entropy of the "
        "Gram matrix of M ∈ {A, Z, C, Y}; numerical rank with the tolerance of "
        "numpy.matrix_rank; effective rank (Roy and Vetterli 2007) and stable rank from the "
        "singular values s_k of the genome's real block.",
        "S(ρ) = −Σ_k λ_k ln λ_k,  ρ = M Mᵀ / tr(M Mᵀ)  (λ_k ∝ s_k²)\n"
        "numerical rank = #{s_k > max(n, m) · eps · s₁}\n"
        "effective rank = exp(−Σ_k p_k ln p_k),  p_k = s_k / Σ s\n"
        "stable rank = Σ s_k² / s₁²",
    ),
    (
        "Domain enrichment (after Vig et al. 2021)",
        "Per (layer, class, head, domain): the share of the attention that content query rows "
        "give to content keys in the domain against the domain's share of content tokens, "
        "tested with a two-proportion z-test (x1 attention mass on the domain out of n1 "
        "attention mass on content keys; x2 domain tokens out of n2 content tokens), two-sided, "
        "Bonferroni-corrected over layers × heads. A token belongs to every domain its residues "
        "overlap; tokens in no leaf domain count as “no domain”.",
        "z = (p1 − p2) / √(p̂ (1 − p̂) (1/n1 + 1/n2)),  p̂ = (x1 + x2) / (n1 + n2),  "
        "significant: p < α / (layers × heads)",
    ),
    (
        "Embeddings",
        "One vector per genome and hidden state: the [CLS] vector and the mean of the token "
        "vectors. PCA explained variance and 2-D maps; silhouette of the classes (Euclidean); "
        "cross-validated k-nearest-neighbour accuracy; cross-validated linear-probe accuracy "
        "(standardisation, then multinomial logistic regression); one class against the rest "
        "(balanced accuracy, 0.5 = chance); adjusted Rand index of k-means (k = classes) "
        "against the classes; anisotropy, the mean cosine of random pairs of genomes. "
        "Cross-validation is stratified, with at most as many folds as the smallest class has "
        "genomes. Non-linear 2-D maps per hidden state: t-SNE (scikit-learn, Barnes-Hut, PCA "
        "initialisation, perplexity clipped to (n − 1) / 3 for n genomes) and, when umap-learn "
        "is installed, UMAP, on a seeded subsample of genomes.",
        "anisotropy = mean_{(i,j), i≠j} cos(x_i, x_j)",
    ),
    (
        "Stream-point flow",
        "The change of a per-layer summary s (the median cone index over genomes, mean over "
        "classes; the effective rank) between consecutive stream points of a layer.",
        "delta = s(q) − s(p),  relative = delta / |s(p)|  for p → q in X → C → O → U → F → Y",
    ),
    (
        "Classification metrics",
        "Accuracy; per-class precision, recall, specificity, F1 and one-vs-rest ROC-AUC; "
        "macro-F1 (mean of the per-class F1) and micro-F1; negative log-likelihood; the "
        "expected calibration error over equal-width bins of the top-class probability; the "
        "temperature T minimises the validation NLL of softmax(z / T).",
        "ECE = Σ_b (n_b / n) |acc_b − conf_b|,   NLL = −mean_i ln p_i,y_i",
    ),
)


def _definitions() -> str:
    items = "".join(
        f'<dt>{esc(term)}</dt><dd>{esc(text)}<span class="formula">{esc(formula)}</span></dd>'
        for term, text, formula in DEFINITIONS
    )
    return f'<dl class="defs">{items}</dl>\n'


def _thresholds(run: RunArtefacts) -> pd.DataFrame:
    from bertgeom.geometry.embeddings import knn_accuracy
    from bertgeom.geometry.gates import GateOptions, GateThresholds

    rows: list[tuple[str, str, object, str]] = []
    for f in dataclasses.fields(GateThresholds):
        rows.append(("gate label", f"{f.name} threshold", f.default, "gates module default"))
    cfg = run.analyze.config
    opts = GateOptions()
    rows += [
        ("gates", "contextual window w", cfg.get("window", opts.window),
         "analyze config" if "window" in cfg else "gates module default"),
        ("per-head statistics", "metastable coverage c", opts.coverage, "gates module default"),
        ("gates", "Lanczos steps for s₁ (focus)", opts.iterations,
         "gates module default"),
        ("domains", "family-wise α", cfg.get("alpha", 0.05),
         "analyze config" if "alpha" in cfg else "analyze default"),
        ("embeddings", "k-NN neighbours",
         inspect.signature(knn_accuracy).parameters["n_neighbors"].default,
         "embeddings module default"),
    ]  # fmt: skip
    for key, name in (
        ("perplexity", "t-SNE perplexity"),
        ("n_neighbors", "UMAP neighbours"),
        ("map_genomes", "genomes in t-SNE / UMAP maps (at most)"),
    ):
        if key in cfg:
            rows.append(("embeddings", name, cfg[key], "analyze config"))
    for key in (f.name for f in dataclasses.fields(QcThresholds)):
        if key in run.prepared.config:
            rows.append(("QC", key, run.prepared.config[key], "prepare config"))
    calib = (run.model.documents.get("bertgeom_model") or {}).get("calibration") or {}
    for key in ("temperature", "ood_threshold", "ood_quantile", "ood_min_confidence"):
        if key in calib:
            rows.append(("calibration", key, calib[key], "fitted by train (model directory)"))
    return pd.DataFrame(
        [(a, b, fmt(c), d) for a, b, c, d in rows],
        columns=["measure", "parameter", "value", "source"],
    )


def _versions(run: RunArtefacts) -> pd.DataFrame | None:
    cols = {
        s.command.split()[-1]: (s.manifest or {}).get("versions") or {}
        for s in run.stages.values()
        if s.present and s.manifest
    }
    if not cols:
        return None
    names = list(dict.fromkeys(k for v in cols.values() for k in v))
    frame = pd.DataFrame({stage: [v.get(n, "") for n in names] for stage, v in cols.items()})
    frame.insert(0, "package", names)
    return frame


def methods_section(run: RunArtefacts) -> Section:
    """Definitions and formulas, thresholds, software versions, every stage's config."""
    body = "<h3>Definitions</h3>" + para(
        "Definitions marked in the code as bertgeom's operational definitions (the gates, the "
        "cluster score, directionality on data, domain membership) make the paper's named "
        "concepts measurable; their thresholds are listed below."
    )
    token = (run.model.documents.get("bertgeom_model") or {}).get("token") or {}
    if token:
        body += para(
            f"Tokens: k-mers of k = {esc(token.get('k'))} nucleotides with stride "
            f"{esc(token.get('stride'))} ({esc(token.get('mode', ''))} mode) over the spike in "
            "reference coordinates, between [CLS] and [SEP]."
        )
    body += _definitions()
    body += "<h3>Thresholds and parameters</h3>" + table(_thresholds(run), max_rows=100)
    versions = _versions(run)
    body += "<h3>Software versions</h3>"
    body += table(versions) if versions is not None else para("No stage manifest was found.")
    body += "<h3>Configuration of each stage</h3>"
    for stage in run.stages.values():
        if not stage.present:
            continue
        if stage.manifest is None:
            body += para(f"<code>{esc(stage.name)}/</code>: no readable manifest.json.")
            continue
        command = " ".join(str(c) for c in stage.manifest.get("command") or [])
        body += f"<h4>{esc(stage.command)}</h4>"
        if command:
            body += para(f"Command line: <code>{esc(command)}</code>")
        config = json.dumps(stage.manifest.get("config") or {}, indent=2, default=str)
        body += json_block(config)
    return Section("Methods", body)
