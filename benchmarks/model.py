"""Tokenization, inference and training throughput per preset, side by side with the research
code's way (fp32, eager attention, batch 4, padded to 512, per-token Python tokenization).

Usage: python benchmarks/model.py --prepared PREPARED_DIR [--preset small base] [--device cuda]

Prints one table: spikes/s for each (preset, stage, way). Models are randomly initialised from
the preset (speed does not depend on the weights); the spikes are real ones from the prepared
directory. CPU runs use the threads torch is given (set OMP_NUM_THREADS / --threads).
"""

from __future__ import annotations

import argparse
import functools
import time
from pathlib import Path

import numpy as np


def research_tokenize(
    seqs: list[str], vocab: dict[str, int], k: int = 12, stride: int = 9, max_len: int = 512
) -> np.ndarray:
    """The research code's tokenization: a Python loop per token, padded to 512."""
    out = np.zeros((len(seqs), max_len), dtype=np.int64)
    for i, seq in enumerate(seqs):
        padded = seq + "N" * (-len(seq) % k)
        ids = (
            [2]
            + [vocab.get(padded[p : p + k], 1) for p in range(0, len(padded) - k + 1, stride)]
            + [3]
        )
        out[i, : len(ids)] = ids[:max_len]
    return out


def hf_logits(model, x, mask):
    """The HF forward pass's logits (the research code's way)."""
    return model(input_ids=x, attention_mask=mask).logits


def timed(fn, n_items: int, repeat: int = 1) -> float:
    """Items per second of ``fn`` (best of ``repeat``)."""
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return n_items / best


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def infer_rate(model, forward, ids, batch: int, device: str, bf16: bool, steps: int) -> float:
    """Spikes/s of ``forward(input_ids, attention_mask) -> logits`` on one repeated batch."""
    import torch

    x = torch.as_tensor(ids[:batch], device=device)
    mask = (x != 0).long()
    model.eval()
    with torch.inference_mode(), torch.autocast("cuda", torch.bfloat16, enabled=bf16):
        forward(x, mask)  # warm-up
        sync(device)
        t = time.perf_counter()
        for _ in range(steps):
            forward(x, mask)
        sync(device)
    return steps * len(x) / (time.perf_counter() - t)


def collection_rate(model, ids, batch: int, device: str) -> float:
    """Genomes/s of :func:`bertgeom.model.infer.infer` over a whole collection: identical spikes
    are computed once (real collections repeat spikes)."""
    from bertgeom.model.infer import infer

    t = time.perf_counter()
    infer(model, ids, batch, device)
    sync(device)
    return len(ids) / (time.perf_counter() - t)


def train_rate(
    model, forward, ids, labels, batch: int, device: str, bf16: bool, steps: int
) -> float:
    import torch

    x = torch.as_tensor(ids[:batch], device=device)
    y = torch.as_tensor(labels[:batch], device=device)
    mask = (x != 0).long()
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)

    def step() -> None:
        with torch.autocast("cuda", torch.bfloat16, enabled=bf16):
            loss = torch.nn.functional.cross_entropy(forward(x, mask).float(), y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()
    sync(device)
    t = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return steps * len(x) / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prepared", required=True)
    ap.add_argument("--preset", nargs="+", default=["tiny", "small"])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--genomes", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=0, help="our batch (0 = 256 GPU / 32 CPU)")
    ap.add_argument("--steps", type=int, default=0, help="timed steps (0 = 20 GPU / 3 CPU)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument(
        "--compile",
        choices=("auto", "yes", "no"),
        default="auto",
        help="add torch.compile rows (auto: on GPU only; CPU compilation takes minutes)",
    )
    args = ap.parse_args()

    import torch

    from bertgeom.io.spikes import read_spikes
    from bertgeom.model.fastpath import logits as fast_logits
    from bertgeom.model.presets import bert_config, build_classifier
    from bertgeom.tokens.kmers import KmerSpec
    from bertgeom.tokens.vocab import build_vocabulary

    if args.threads:
        torch.set_num_threads(args.threads)
    device = (
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    gpu = device.startswith("cuda")
    batch = args.batch or (256 if gpu else 32)
    steps = args.steps or (20 if gpu else 3)
    df = read_spikes(Path(args.prepared) / "spikes.parquet", ["spike", "raw_spike", "qc_status"])
    df = df[df.qc_status != "bad"].head(args.genomes)
    aligned, raw = df.spike.tolist(), df.raw_spike.tolist()
    vocab = build_vocabulary([aligned], KmerSpec(), 1)
    raw_vocab = build_vocabulary([raw], KmerSpec(mode="raw"), 1)
    lookup = {t: i for i, t in enumerate(raw_vocab.tokens)}
    rows = [
        (
            "all",
            "tokenize",
            "bertgeom (vectorised)",
            timed(lambda: vocab.encode(aligned), len(df), 3),
        ),
        (
            "all",
            "tokenize",
            "research code (per token)",
            timed(lambda: research_tokenize(raw, lookup), len(df)),
        ),
    ]
    ours = vocab.encode(aligned)
    research = research_tokenize(raw, lookup)
    labels = np.arange(len(df)) % 8
    for preset in args.preset:
        ways = [
            ("bertgeom", "sdpa", gpu, ours, batch, False),
            ("research code", "eager", False, research, 4, False),
        ]
        if args.compile == "yes" or (args.compile == "auto" and gpu):
            ways.insert(1, ("bertgeom + torch.compile", "sdpa", gpu, ours, batch, True))
        for way, impl, bf16, ids, bs, compiled in ways:
            cfg = bert_config(
                preset,
                max(vocab.size, raw_vocab.size),
                512 if ids is research else vocab.n_positions(),
                [f"c{i}" for i in range(8)],
            )
            model = build_classifier(cfg, 0, impl).to(device)
            if ids is research:  # the HF forward pass
                forward = functools.partial(hf_logits, model)
            else:  # ours: bertgeom.model.fastpath (what train, evaluate and predict run)
                forward = functools.partial(fast_logits, model)
            if compiled:
                forward = torch.compile(forward)
            n_steps = steps if bs > 4 else steps * 4
            rows.append(
                (
                    preset,
                    "inference",
                    way,
                    infer_rate(model, forward, ids, bs, device, bf16, n_steps),
                )
            )
            if ids is ours and not compiled:
                rows.append(
                    (
                        preset,
                        "inference",
                        "bertgeom, repeats once [1]",
                        collection_rate(model, ids, bs, device),
                    )
                )
            rows.append(
                (
                    preset,
                    "training",
                    way,
                    train_rate(
                        model,
                        forward,
                        ids,
                        labels,
                        min(bs, 64 if gpu else 16),
                        device,
                        bf16,
                        n_steps,
                    ),
                )
            )
            del model
            if gpu:
                torch.cuda.empty_cache()
    name = torch.cuda.get_device_name() if gpu else f"CPU, {torch.get_num_threads()} threads"
    print(
        f"\nthroughput in spikes/s on {name}; ours: batch {batch}, "
        f"{'bf16 autocast + SDPA' if gpu else 'fp32 + SDPA'}, padded to the batch maximum\n"
    )
    print(f"| {'preset':<7} | {'stage':<10} | {'way':<27} | {'spikes/s':>10} |")
    print(f"|{'-' * 9}|{'-' * 12}|{'-' * 29}|{'-' * 12}|")
    for preset, stage, way, rate in rows:
        print(f"| {preset:<7} | {stage:<10} | {way:<27} | {rate:>10,.1f} |")
    distinct = len(np.unique(ours, axis=0))
    print(
        f"\n[1] genomes/s over all {len(ours):,} spikes through bertgeom.model.infer.infer, "
        f"which computes each of the {distinct:,} distinct token rows once"
    )


if __name__ == "__main__":
    main()
