"""Throughput and peak memory of ``bertgeom analyze``, side by side with the model's own forward
pass with attentions returned.

Usage: python benchmarks/analyze.py --prepared PREPARED_DIR [--preset small | --model MODEL_DIR]
       [--genomes 256 1024] [--device cuda] [--only cone,gates,...] [--per-family]

For each preset a randomly initialised classifier (speed does not depend on the weights) is saved
to a temporary model directory and analysed on class-stratified samples of the given sizes
(split "all"), each run in a fresh process; peak memory is that process's peak RSS growth
(CPU) or torch's peak allocated memory (GPU), so flat memory shows as equal figures across
sample sizes. ``--per-family`` adds one run per measure family alone (where the time goes).
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


def analyze_once(
    model_dir: str, prepared: str, out: str, n: int, batch: int, device: str, only: str
) -> tuple[int, float, float]:
    """One analyze run in this (fresh) process: (genomes, genomes/s, peak memory MiB).

    Peak memory: torch's peak allocated bytes on GPU, else the process's peak RSS growth over
    what it held before the run (the imports and the model's first load included in neither).
    """
    import torch

    from bertgeom.config import AnalyzeConfig
    from bertgeom.pipeline import analyze

    gpu = device.startswith("cuda")
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    cfg = AnalyzeConfig(
        split="all",
        max_genomes=n,
        batch_size=batch,
        device=device,
        all_genomes=True,
        only=only,
        map_methods="pca",
    )
    s = analyze.run(Path(model_dir), Path(prepared), Path(out), cfg, progress=False)
    mem = (
        torch.cuda.max_memory_allocated() / 2**20
        if gpu
        else (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
    )
    return s.n_genomes, s.genomes_per_s, mem


def in_child(*args: object) -> tuple[int, float, float]:
    """``analyze_once`` in a spawned process, so each run's peak memory is its own."""
    import multiprocessing as mp

    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(analyze_once, args)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prepared", required=True)
    ap.add_argument("--preset", nargs="+", default=["small"])
    ap.add_argument("--model", default="", help="a trained model directory instead of presets")
    ap.add_argument("--genomes", nargs="+", type=int, default=[64, 256])
    ap.add_argument("--batch", type=int, default=0, help="0 = 64 GPU / 8 CPU")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--only", default="")
    ap.add_argument("--per-family", action="store_true", help="also time each measure family alone")
    args = ap.parse_args()

    import torch

    from bertgeom.model.data import load_split, sequences_for
    from bertgeom.model.presets import bert_config, build_classifier
    from bertgeom.model.store import save_model_dir
    from bertgeom.resources import CLASSES
    from bertgeom.tokens.kmers import KmerSpec
    from bertgeom.tokens.vocab import build_vocabulary

    device = (
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    gpu = device.startswith("cuda")
    batch = args.batch or (64 if gpu else 8)
    prepared = Path(args.prepared)
    families = ["cone", "gates", "domains", "direction", "spectra", "embeddings", "maps"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        models: list[tuple[str, Path]] = []
        if args.model:
            models.append((Path(args.model).name, Path(args.model)))
        else:
            train = load_split(prepared, "train")
            vocab = build_vocabulary([sequences_for(train, "aligned")], KmerSpec(), 1)
            for preset in args.preset:
                model_dir = Path(tmp) / preset
                model = build_classifier(
                    bert_config(preset, vocab.size, vocab.n_positions(), list(CLASSES)), 0
                )
                meta = {"labels": list(CLASSES), "preset": preset}
                save_model_dir(model, vocab, meta, model_dir)
                models.append((preset, model_dir))
        for name, model_dir in models:
            n_max = max(args.genomes)
            rate = forward_rate(model_dir, prepared, n_max, batch, device)
            rows.append((name, "model forward, attentions returned", n_max, rate, None))
            runs = [(args.only or "all measures", args.only, n) for n in args.genomes]
            if args.per_family:
                runs += [(f"only {f}", f, min(args.genomes)) for f in families]
            for what, only, n in runs:
                out = str(Path(tmp) / f"out_{name}_{n}_{only or 'all'}")
                got, rate, mem = in_child(
                    str(model_dir), str(prepared), out, n, batch, device, only
                )
                rows.append((name, f"analyze ({what})", got, rate, mem))
    where = torch.cuda.get_device_name() if gpu else f"CPU, {torch.get_num_threads()} threads"
    print(
        f"\nanalyze throughput on {where}, batch {batch} (genomes/s: the streamed pass;"
        " peak memory: GPU allocated or RSS growth, each run in its own process)\n"
    )
    print(f"| {'model':<7} | {'what':<44} | {'genomes':>7} | {'genomes/s':>9} | {'peak MiB':>8} |")
    print(f"|{'-' * 9}|{'-' * 46}|{'-' * 9}|{'-' * 11}|{'-' * 10}|")
    for name, what, n, rate, mem in rows:
        m = "" if mem is None else f"{mem:,.0f}"
        print(f"| {name:<7} | {what:<44} | {n:>7} | {rate:>9,.1f} | {m:>8} |")


if __name__ == "__main__":
    main()
