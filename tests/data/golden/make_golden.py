import sys, shutil
from pathlib import Path
from bertgeom.config import PrepareConfig, AnalyzeConfig
from bertgeom.pipeline import prepare, analyze
shared = Path("/work/shared/data")
root = Path(sys.argv[1]); root.mkdir(parents=True, exist_ok=True)
prep = root / "prepared"
if not (prep / "spikes.parquet").exists():
    prepare.run([shared / "ci_genomes.fasta.gz"], prep, PrepareConfig(jobs=1), labels_path=shared / "labels.tsv", progress=False)
from bertgeom.model.data import load_split, sequences_for
from bertgeom.model.presets import bert_config, build_classifier
from bertgeom.model.store import save_model_dir
from bertgeom.resources import CLASSES
from bertgeom.tokens.kmers import KmerSpec
from bertgeom.tokens.vocab import build_vocabulary
model_dir = root / "model"
if not model_dir.exists():
    train = load_split(prep, "train")
    vocab = build_vocabulary([sequences_for(train, "aligned")], KmerSpec(), 1)
    labels = [c for c in CLASSES if (train.label == c).any()]
    model = build_classifier(bert_config("tiny", vocab.size, vocab.n_positions(), labels), 0)
    save_model_dir(model, vocab, {"labels": labels, "preset": "tiny"}, model_dir)
for name, cfg in {
    "all": AnalyzeConfig(split="all", all_genomes=True, max_genomes=12, spectra_genomes=4, batch_size=6, keep_maps=1, map_methods="pca", compat=True),
    "correct": AnalyzeConfig(split="all", all_genomes=False, max_genomes=16, spectra_genomes=8, batch_size=5, keep_maps=1, map_methods="pca", drop_special=True, gate_thresholds="open=0.85,cluster=0.5"),
}.items():
    out = root / f"out_{name}"
    shutil.rmtree(out, ignore_errors=True)
    s = analyze.run(model_dir, prep, out, cfg, progress=False)
    print(name, s.n_genomes, s.n_correct, sorted(p.name for p in out.glob("*.parquet")))
