"""Throughput of ``bertgeom analyze`` against the model's own forward pass, in one process.

Usage: python benchmarks/analyze.py --prepared PREPARED_DIR [--preset small base | --model DIR]
       [--genomes 256] [--batch 16] [--device cuda] [--only cone,gates,...]
       [--memory 1000 10000] [--threads 2] [--clock wall|cpu] [--no-breakdown]

Per preset (a randomly initialised classifier: speed does not depend on the weights) on a
class-stratified sample of ``--genomes`` genomes (split "all"), in this one process and on the
same batches:

1. the forward pass with attentions returned (eager attention; bf16 autocast on a GPU): the
   baseline, timed after one warm-up batch;
2. ``analyze``'s stream with the chosen measures (every default one unless ``--only``), its
   genomes/s and the ratio analyze / forward, and the seconds each measure's stream work took
   (``Stream(profile=True)``: the device is synchronised around each call, so on a GPU the
   per-measure split is indicative and the total is measured in a separate, unprofiled pass;
   ``--no-breakdown`` skips the profiled pass);
3. the post-stream work of each measure (``finish``: tables, probes, maps), timed separately.

``--memory N ...`` adds peak-memory rows: one ``analyze`` run per sample size, each in a fresh
process (peak RSS growth on the CPU, torch's peak allocated memory on a GPU), so flat memory
shows as equal figures across sizes.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

#: The benchmark's timer (``--clock``): wall time, or the process's CPU time (``cpu``: with
#: ``--threads 1`` it is the work done, whatever else the machine runs).
CLOCK = time.perf_counter


def build_models(prepared: Path, presets: list[str], tmp: Path) -> list[tuple[str, Path]]:
    """A randomly initialised classifier per preset, with the data's vocabulary, saved."""
    from bertgeom.model.data import load_split, sequences_for
    from bertgeom.model.presets import bert_config, build_classifier
    from bertgeom.model.store import save_model_dir
    from bertgeom.resources import CLASSES
    from bertgeom.tokens.kmers import KmerSpec
    from bertgeom.tokens.vocab import build_vocabulary

    train = load_split(prepared, "train")
    vocab = build_vocabulary([sequences_for(train, "aligned")], KmerSpec(), 1)
    out = []
    for preset in presets:
        model_dir = tmp / preset
        config = bert_config(preset, vocab.size, vocab.n_positions(), list(CLASSES))
        save_model_dir(
            build_classifier(config, 0), vocab, {"labels": list(CLASSES), "preset": preset},
            model_dir,
        )  # fmt: skip
        out.append((preset, model_dir))
    return out


def forward_seconds(model_dir: Path, p, device: str) -> float:
    """Seconds of the bare forward pass with attentions (eager) over the plan's batches."""
    import numpy as np
    import torch

    from bertgeom.model.data import collate
    from bertgeom.model.store import load_model_dir

    model = load_model_dir(model_dir, device=device, attn_implementation="eager").model.eval()
    gpu, batch = device.startswith("cuda"), p.config.batch_size
    batches = [
        {k: v.to(device) for k, v in collate(p.ids[a : a + batch].astype(np.int64)).items()}
        for a in range(0, p.n, batch)
    ]

    def one(b):
        with torch.autocast("cuda", torch.bfloat16, enabled=gpu):
            model(**b, output_attentions=True)

    with torch.inference_mode():
        one(batches[0])  # warm-up
        if gpu:
            torch.cuda.synchronize()
        t = CLOCK()
        for b in batches:
            one(b)
        if gpu:
            torch.cuda.synchronize()
    return CLOCK() - t


def analyze_in_process(model_dir: Path, prepared: Path, args, device: str) -> dict:
    """Forward, stream (profiled and not), and post-stream timings in this process."""
    import torch

    from bertgeom.config import AnalyzeConfig
    from bertgeom.geometry.measures.base import Genomes
    from bertgeom.pipeline import analyze

    cfg = AnalyzeConfig(
        split="all", max_genomes=args.genomes, batch_size=args.batch, device=device,
        all_genomes=True, only=args.only,
    )  # fmt: skip
    p = analyze.plan(model_dir, prepared, cfg)
    forward = forward_seconds(model_dir, p, device)
    warm = analyze.new_stream(p)  # warm-up: one batch through the hooks and measures
    analyze.stream_genomes(p, warm, 0, min(p.config.batch_size, p.n), progress=False)
    stream = analyze.new_stream(p)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t = CLOCK()
    state = analyze.stream_genomes(p, stream, 0, p.n, progress=False)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    streaming = CLOCK() - t
    per_measure: dict[str, float] = {}
    if args.breakdown:
        profiled = analyze.new_stream(p)
        profiled.profile = True
        profiled.clock = CLOCK
        analyze.stream_genomes(p, profiled, 0, p.n, progress=False)
        per_measure = profiled.times
    import numpy as np

    preds = np.concatenate(state.preds)
    genomes = Genomes(p.df.id.to_numpy(), p.y, np.ones(p.n, bool), True, cfg.seed)
    finish: dict[str, float] = {}
    tables: dict = {}
    for m in stream.measures:
        t = CLOCK()
        tables |= m.finish(genomes)
        finish[m.name] = CLOCK() - t
    for m in stream.measures:
        t = CLOCK()
        tables |= m.derive(tables)
        finish[m.name] += CLOCK() - t
    del preds
    return {
        "n": p.n,
        "forward": forward,
        "stream": streaming,
        "per_measure": per_measure,
        "finish": finish,
        "batch": p.config.batch_size,
    }


def memory_once(model_dir: str, prepared: str, out: str, n: int, batch: int, device: str,
                only: str) -> tuple[int, float, float]:  # fmt: skip
    """One analyze run in this (fresh) process: (genomes, genomes/s, peak memory MiB)."""
    import torch

    from bertgeom.config import AnalyzeConfig
    from bertgeom.pipeline import analyze

    gpu = device.startswith("cuda")
    rss0 = _resident_kib("VmRSS")
    cfg = AnalyzeConfig(
        split="all", max_genomes=n, batch_size=batch, device=device, all_genomes=True,
        only=only, measures={"embeddings": {"maps": "pca"}},
    )  # fmt: skip
    s = analyze.run(Path(model_dir), Path(prepared), Path(out), cfg, progress=False)
    mem = (
        torch.cuda.max_memory_allocated() / 2**20 if gpu else (_resident_kib("VmHWM") - rss0) / 1024
    )
    return s.n_genomes, s.genomes_per_s, mem


def _resident_kib(field: str) -> int:
    """This process's resident size (``VmRSS``) or its peak (``VmHWM``) in KiB.

    From /proc/self/status: the peak of this process image only. ``getrusage``'s ``ru_maxrss``
    is not: Linux carries it across fork and exec, so a child started by a large benchmark
    process reports the parent's peak (every run then read 0 MiB of growth). Off Linux,
    ``ru_maxrss`` (KiB on Linux, bytes on macOS; only the peak is known there).
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1])
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak = peak // 1024 if sys.platform == "darwin" else peak
    return peak if field == "VmHWM" else 0


def in_child(*args: object) -> tuple[int, float, float]:
    """``memory_once`` in a spawned process, so each run's peak memory is its own."""
    import multiprocessing as mp

    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(memory_once, args)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prepared", required=True)
    ap.add_argument("--preset", nargs="+", default=["small"])
    ap.add_argument("--model", default="", help="a trained model directory instead of presets")
    ap.add_argument("--genomes", type=int, default=256)
    ap.add_argument("--batch", type=int, default=0, help="0 = 64 GPU / 16 CPU")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--only", default="")
    ap.add_argument("--memory", nargs="*", type=int, default=[], help="sample sizes")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    ap.add_argument(
        "--no-breakdown", dest="breakdown", action="store_false",
        help="skip the second, profiled stream (the per-measure table): half the time for base",
    )  # fmt: skip
    ap.add_argument(
        "--clock", choices=("wall", "cpu"), default="wall",
        help="wall time, or this process's CPU time (with --threads 1 on a loaded machine)",
    )  # fmt: skip
    args = ap.parse_args()
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter

    import torch

    from bertgeom.heap import fixed_mmap_threshold

    # the heap policy of ``bertgeom analyze`` (blocks of 1 MiB and more mapped and unmapped on
    # their own: resident memory flat over batches), for the forward pass and the stream alike
    fixed_mmap_threshold()
    if args.threads:
        torch.set_num_threads(args.threads)

    device = (
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    args.batch = args.batch or (64 if device.startswith("cuda") else 16)
    prepared = Path(args.prepared)
    where = torch.cuda.get_device_name() if device.startswith("cuda") else (
        f"CPU, {torch.get_num_threads()} threads, {args.clock} clock"
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        models = (
            [(Path(args.model).name, Path(args.model))]
            if args.model
            else build_models(prepared, args.preset, Path(tmp))
        )
        for name, model_dir in models:
            r = analyze_in_process(model_dir, prepared, args, device)
            n = r["n"]
            fwd, strm = n / r["forward"], n / r["stream"]
            post = sum(r["finish"].values())
            print(f"\n{name} on {where}, {n} genomes, batch {r['batch']}, measures: "
                  f"{args.only or 'every default'}\n")  # fmt: skip
            print("| what | genomes/s | ratio to forward |")
            print("| --- | ---: | ---: |")
            print(f"| forward pass, attentions returned | {fwd:,.1f} | 1.00 |")
            print(f"| analyze streaming | {strm:,.1f} | {strm / fwd:.3f} |")
            print(f"| post-stream tables (finish) | {post:,.1f} s in all | |")
            total = sum(r["per_measure"].values())
            if r["per_measure"]:  # (skipped with --no-breakdown)
                print("\n| measure | stream s | ms per genome | x forward | finish s |")
                print("| --- | ---: | ---: | ---: | ---: |")
                for m, sec in sorted(r["per_measure"].items(), key=lambda kv: -kv[1]):
                    print(f"| {m} | {sec:.2f} | {1e3 * sec / n:.2f} | {sec / r['forward']:.2f} "
                          f"| {r['finish'].get(m, 0.0):.2f} |")  # fmt: skip
                print(f"| (all measures) | {total:.2f} | {1e3 * total / n:.2f} | "
                      f"{total / r['forward']:.2f} | {post:.2f} |")  # fmt: skip
            if args.memory:
                print("\n| genomes | genomes/s | peak MiB (each run in its own process) |")
                print("| ---: | ---: | ---: |")
                for size in args.memory:
                    out = str(Path(tmp) / f"mem_{name}_{size}")
                    got, rate, mem = in_child(
                        str(model_dir), str(prepared), out, size, args.batch, device, args.only
                    )
                    print(f"| {got} | {rate:,.1f} | {mem:,.0f} |")


if __name__ == "__main__":
    main()
