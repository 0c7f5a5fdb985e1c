"""Spike extraction throughput per core, side by side with whole-genome alignment.

Usage: python benchmarks/prepare.py [--genomes N] [--data ../shared/data]

Prints genomes/s per core (CPU time of one process) for:
- whole-genome mappy alignment alone (the usual way: index the whole reference);
- bertgeom's window alignment alone (spike window index, genome slice);
- bertgeom's full per-genome work (alignment with fallback, spike columns, normalisation,
  mutation calls, QC);
and the peak memory of `prepare` (a subprocess) on a small and a large input, to show it is
flat in the number of genomes.
"""

from __future__ import annotations

import argparse
import gzip
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def read_genomes(path: Path, limit: int) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    name = ""
    with gzip.open(path, "rt") as fh:
        for line in fh:
            if line.startswith(">"):
                name = line[1:].strip()
            else:
                out.append((name, line.strip().upper().replace("-", "").replace("_", "")))
                if len(out) >= limit:
                    break
    return out


def rate(fn, genomes) -> float:
    t = time.process_time()
    for _, seq in genomes:
        fn(seq)
    return len(genomes) / (time.process_time() - t)


def peak_rss_mb(cmd: list[str]) -> float:
    """Peak resident memory of a child process, in MB."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(before, after) / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--genomes", type=int, default=2000)
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data"))
    args = ap.parse_args()

    import mappy

    from bertgeom.genome.process import SpikeProcessor
    from bertgeom.resources import reference_genome

    data = Path(args.data)
    genomes = read_genomes(data / "genomes.fasta.gz", args.genomes)
    proc = SpikeProcessor()
    whole = mappy.Aligner(seq=reference_genome(), preset="asm20")
    rows = [
        ("whole-genome mappy alignment (asm20)", rate(lambda s: list(whole.map(s)), genomes)),
        ("bertgeom window alignment", rate(proc.aligner._align_window, genomes)),
        ("bertgeom full per-genome work", rate(lambda s: proc.process("g", s), genomes)),
    ]
    n_fallback = sum(proc.aligner.align(s).method != "window" for _, s in genomes)
    print(f"\nspike extraction, {len(genomes)} real genomes, one process (CPU time)\n")
    print(f"| {'path':<40} | {'genomes/s per core':>18} |")
    print(f"|{'-' * 42}|{'-' * 20}|")
    for name, r in rows:
        print(f"| {name:<40} | {r:>18,.0f} |")
    print(f"\nwhole-genome fallback used for {n_fallback} of {len(genomes)} genomes")

    exe = str(Path(sys.executable).with_name("bertgeom"))
    with tempfile.TemporaryDirectory() as tmp:
        small = Path(tmp) / "small.fasta"
        small.write_text("".join(f">{n}\n{s}\n" for n, s in genomes[:200]))
        mem_small = peak_rss_mb([exe, "prepare", str(small), "--out", f"{tmp}/a", "--quiet"])
        t = time.perf_counter()
        mem_all = peak_rss_mb(
            [
                exe,
                "prepare",
                str(data / "genomes.fasta.gz"),
                "--out",
                f"{tmp}/b",
                "--quiet",
                "--jobs",
                "2",
            ]
        )
        wall = time.perf_counter() - t
    print("\n| prepare run | peak RSS (MB) |\n|---|---|")
    print(f"| 200 genomes, 1 job | {mem_small:,.0f} |")
    print(f"| 6,504 genomes, 2 jobs (wall {wall:.1f} s) | {mem_all:,.0f} |")


if __name__ == "__main__":
    main()
