"""Throughput and peak memory of ``bertgeom analyze``, side by side with the model's own forward
pass with attentions returned.

Usage: python benchmarks/analyze.py --prepared PREPARED_DIR [--preset small] [--genomes 256 1024]
       [--device cuda] [--only cone,gates,...]

For each preset a randomly initialised classifier (speed does not depend on the weights) is saved
to a temporary model directory and analysed on class-stratified samples of the given sizes
(split "all"); peak memory is the process's peak RSS growth (CPU) or torch's peak allocated
memory (GPU), measured per run, so flat memory shows as equal figures across sample sizes.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path


def forward_rate(model_dir: Path, prepared: Path, n: int, batch: int, device: str) -> float:
    """Genomes/s of the bare model with ``output_attentions=True`` (eager), bf16 on GPU."""
    import torch

    from bertgeom.model.data import collate, load_split, sequences_for
    from bertgeom.model.store import load_model_dir

    bundle = load_model_dir(model_dir, device=device, attn_implementation="eager")
    df = load_split(prepared, "train").head(n)
    ids = bundle.vocab.encode(sequences_for(df, "aligned"))
    gpu = device.startswith("cuda")
    t = time.perf_counter()
    with torch.inference_mode(), torch.autocast("cuda", torch.bfloat16, enabled=gpu):
        for a in range(0, len(ids), batch):
            b = {k: v.to(device) for k, v in collate(ids[a : a + batch]).items()}
            bundle.model(**b, output_attentions=True)
    if gpu:
        torch.cuda.synchronize()
    return len(ids) / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prepared", required=True)
    ap.add_argument("--preset", nargs="+", default=["small"])
    ap.add_argument("--genomes", nargs="+", type=int, default=[64, 256])
    ap.add_argument("--batch", type=int, default=0, help="0 = 32 GPU / 8 CPU")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--only", default="")
    args = ap.parse_args()

    import torch

    from bertgeom.config import AnalyzeConfig
    from bertgeom.model.data import load_split, sequences_for
    from bertgeom.model.presets import bert_config, build_classifier
    from bertgeom.model.store import save_model_dir
    from bertgeom.pipeline import analyze
    from bertgeom.resources import CLASSES
    from bertgeom.tokens.kmers import KmerSpec
    from bertgeom.tokens.vocab import build_vocabulary

    device = (
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    gpu = device.startswith("cuda")
    batch = args.batch or (32 if gpu else 8)
    prepared = Path(args.prepared)
    train = load_split(prepared, "train")
    vocab = build_vocabulary([sequences_for(train, "aligned")], KmerSpec(), 1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for preset in args.preset:
            model_dir = Path(tmp) / preset
            model = build_classifier(
                bert_config(preset, vocab.size, vocab.n_positions(), list(CLASSES)), 0
            )
            save_model_dir(model, vocab, {"labels": list(CLASSES), "preset": preset}, model_dir)
            rows.append(
                (
                    preset,
                    "model forward, attentions returned",
                    max(args.genomes),
                    forward_rate(model_dir, prepared, max(args.genomes), batch, device),
                    None,
                )
            )
            for n in args.genomes:
                if gpu:
                    torch.cuda.reset_peak_memory_stats()
                rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                cfg = AnalyzeConfig(
                    split="all",
                    max_genomes=n,
                    batch_size=batch,
                    device=device,
                    all_genomes=True,
                    only=args.only,
                )
                s = analyze.run(
                    model_dir, prepared, Path(tmp) / f"out_{preset}_{n}", cfg, progress=False
                )
                mem = (
                    torch.cuda.max_memory_allocated() / 2**20
                    if gpu
                    else (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
                )
                rows.append(
                    (
                        preset,
                        f"analyze ({args.only or 'all measures'})",
                        s.n_genomes,
                        s.genomes_per_s,
                        mem,
                    )
                )
    where = torch.cuda.get_device_name() if gpu else f"CPU, {torch.get_num_threads()} threads"
    print(
        f"\nanalyze throughput on {where}, batch {batch} (genomes/s: the streamed pass;"
        " peak memory: GPU allocated or RSS growth)\n"
    )
    print(f"| {'preset':<7} | {'what':<44} | {'genomes':>7} | {'genomes/s':>9} | {'peak MiB':>8} |")
    print(f"|{'-' * 9}|{'-' * 46}|{'-' * 9}|{'-' * 11}|{'-' * 10}|")
    for preset, what, n, rate, mem in rows:
        m = "" if mem is None else f"{mem:,.0f}"
        print(f"| {preset:<7} | {what:<44} | {n:>7} | {rate:>9,.1f} | {m:>8} |")


if __name__ == "__main__":
    main()
