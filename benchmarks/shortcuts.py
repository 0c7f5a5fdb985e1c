"""Does a model read a few sites as a class? Theta-like and Kappa-like spikes, called.

Usage: python benchmarks/shortcuts.py MODEL_DIR PREPARED_DIR [--genomes 60]

Plants the spike mutations of P.3 (Theta: E484K, N501Y and V1176F are three of Gamma's sites)
and of B.1.617.1 (Kappa: L452R and P681R are two of Delta's), codon by codon, into real "other"
test spikes of PREPARED_DIR (simulated, not sequenced genomes), and prints, per set, the model's
own calls, the calls after the constellation check, and how many are flagged. The right call for
both is "other".
"""

from __future__ import annotations

import argparse
from collections import Counter

import numpy as np

from bertgeom.genome.mutations import call_mutations
from bertgeom.io.spikes import read_spikes
from bertgeom.model.assess import assess_calls
from bertgeom.model.infer import infer
from bertgeom.model.metrics import softmax
from bertgeom.model.openset import load_detectors
from bertgeom.model.store import load_model_dir
from bertgeom.resources import genetic_code, spike_reference
from bertgeom.resources.variants import parse_mutation

SETS = {
    "Theta-like (P.3)": (
        "S:L141-", "S:G142-", "S:V143-", "S:E484K", "S:N501Y", "S:D614G", "S:P681H", "S:E1092K",
        "S:H1101Y", "S:V1176F",
    ),
    "Kappa-like (B.1.617.1)": (
        "S:T95I", "S:G142D", "S:E154K", "S:L452R", "S:E484Q", "S:D614G", "S:P681R", "S:Q1071H",
    ),
}  # fmt: skip


def plant(spike: str, mutations: tuple[str, ...], code: dict[str, str]) -> str:
    """``spike`` with each mutation written as the nearest codon (or a deleted codon)."""
    codons: dict[str, list[str]] = {}
    for codon, aa in sorted(code.items()):
        codons.setdefault(aa, []).append(codon)
    cols = list(spike)
    for text in mutations:
        m = parse_mutation(text)
        a = 3 * (m.position - 1)
        if m.kind == "del":
            cols[a : a + 3] = "---"
            continue
        here = "".join(cols[a : a + 3])
        cols[a : a + 3] = min(
            codons[m.alt], key=lambda c: sum(x != y for x, y in zip(c, here, strict=True))
        )
    return "".join(cols)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("prepared")
    p.add_argument("--genomes", type=int, default=60)
    args = p.parse_args()
    code, ref = genetic_code(), spike_reference()
    df = read_spikes(f"{args.prepared}/spikes.parquet", ["label", "split", "spike", "qc_status"])
    keep = (df.label == "other") & (df.split == "test") & (df.qc_status == "good")
    backgrounds = df[keep].spike.tolist()[: args.genomes]
    bundle = load_model_dir(args.model)
    detectors, default = load_detectors(f"{args.model}/ood.npz")
    for name, mutations in SETS.items():
        spikes = [plant(s, mutations, code) for s in backgrounds]
        calls = [",".join(call_mutations(s, [], ref, code).mutations) for s in spikes]
        out = infer(bundle.model, bundle.vocab.encode(spikes), 64, "cpu")
        probs = softmax(out.logits.astype(np.float64), bundle.temperature)
        checks = assess_calls(
            bundle.labels, probs, out.logits, out.cls, spikes, calls, detectors[default],
            bundle.temperature,
        )  # fmt: skip
        model = Counter(bundle.labels[k] for k in probs.argmax(axis=1))
        final = Counter(bundle.labels[k] for k in checks.calls)
        print(
            f"{name}: {len(spikes)} spikes; model {dict(model)}; after the constellation check "
            f"{dict(final)}; flagged {int(checks.flagged.sum())}"
        )


if __name__ == "__main__":
    main()
