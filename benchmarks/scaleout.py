"""predict on a local Ray cluster against the local path: genomes/s and the fixed start-up cost.

Usage: python benchmarks/scaleout.py [--genomes N] [--shard-size S] [--cpus C] [--model DIR]
                                     [--data ../shared/data]

Takes the first N real genomes of ``genomes.fasta.gz``; without ``--model`` builds an untrained
``tiny`` classifier on the 48 CI genomes (inference is then cheap and the figures show the
engine and alignment, which is what scales with CPUs). Prints, for the same input and model:
``predict`` local (one process), ``--engine ray`` with 1 and 2 model workers on a local cluster
of C CPUs, each with its wall time and genomes/s, whether its table equals the local one, and
the fixed costs: starting the cluster, and a one-record run (actor start and model load).
Compare rows with each other: other jobs share this machine.
"""

from __future__ import annotations

import argparse
import gzip
import sys
import tempfile
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def first_genomes(data: Path, n: int, out: Path) -> Path:
    with gzip.open(data / "genomes.fasta.gz", "rt") as fh, open(out, "w") as dst:
        k = 0
        for line in fh:
            if line.startswith(">"):
                if k == n:
                    break
                k += 1
            dst.write(line)
    return out


def tiny_model(data: Path, work: Path) -> Path:
    from bertgeom.config import PrepareConfig
    from bertgeom.model.data import load_split, sequences_for
    from bertgeom.model.presets import bert_config, build_classifier
    from bertgeom.model.store import save_model_dir
    from bertgeom.pipeline import prepare
    from bertgeom.resources import CLASSES
    from bertgeom.tokens.kmers import KmerSpec
    from bertgeom.tokens.vocab import build_vocabulary

    prepare.run([data / "ci_genomes.fasta.gz"], work / "prep", PrepareConfig(jobs=1),
                labels_path=data / "labels.tsv", progress=False)  # fmt: skip
    train = load_split(work / "prep", "train")
    vocab = build_vocabulary([sequences_for(train, "aligned")], KmerSpec(), 1)
    labels = [c for c in CLASSES if (train.label == c).any()]
    model = build_classifier(bert_config("tiny", vocab.size, vocab.n_positions(), labels), 0)
    save_model_dir(model, vocab, {"labels": labels, "preset": "tiny"}, work / "tiny")
    return work / "tiny"


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--genomes", type=int, default=256)
    ap.add_argument("--shard-size", type=int, default=32)
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--model")
    ap.add_argument("--data", type=Path, default=SHARED)
    args = ap.parse_args()

    import ray

    from bertgeom.config import PrepareConfig
    from bertgeom.pipeline import predict
    from bertgeom.scale.predict import ScaleOptions

    work = Path(tempfile.mkdtemp(prefix="bertgeom-scaleout-"))
    model = Path(args.model) if args.model else tiny_model(args.data, work)
    fasta = first_genomes(args.data, args.genomes, work / "genomes.fasta")
    one = first_genomes(args.data, 1, work / "one.fasta")
    cfg = PrepareConfig(jobs=1, dedupe="keep-first")

    def run(out: str, genomes: Path = fasta, **scale) -> float:
        opts = ScaleOptions(**scale) if scale else None
        return timed(lambda: predict.run(model, [genomes], work / out, cfg, device="cpu",
                                         progress=False, scale=opts))  # fmt: skip

    rows = [("local (one process)", run("local.tsv"), "local.tsv")]

    def start_cluster() -> None:
        for attempt in range(3):  # Ray waits 30 s for its raylet: too short on a loaded machine
            try:
                ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False,
                         logging_level="ERROR")  # fmt: skip
                return
            except Exception as err:
                print(f"ray.init failed ({err}); retrying", file=sys.stderr)
                ray.shutdown()
                if attempt == 2:
                    raise

    start = timed(start_cluster)
    first = run("one.tsv", one, engine="ray", shard_size=1)
    for n in (1, 2):
        name = f"ray{n}.tsv"
        seconds = run(name, engine="ray", shard_size=args.shard_size, workers=n)
        rows.append((f"--engine ray, {n} model worker(s)", seconds, name))
    ray.shutdown()
    local = (work / "local.tsv").read_bytes()
    print(f"predict, {args.genomes} real genomes, model {model.name}, shards of "
          f"{args.shard_size}, local Ray cluster of {args.cpus} CPUs\n")  # fmt: skip
    print("| run | wall s | genomes/s | table equal to local |")
    print("| --- | ---: | ---: | --- |")
    for label, seconds, out in rows:
        same = (work / out).read_bytes() == local
        print(f"| {label} | {seconds:.1f} | {args.genomes / seconds:.1f} | {same} |")
    print(
        f"\nfixed costs: cluster start {start:.1f} s; a one-record run on it (actor start, "
        f"model load, one shard) {first:.1f} s"
    )
    print(f"(scratch files in {work})", file=sys.stderr)


if __name__ == "__main__":
    main()
