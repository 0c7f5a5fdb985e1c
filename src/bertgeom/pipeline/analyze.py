"""``bertgeom analyze``: the geometry of a trained encoder, streamed over a split of genomes.

Reads a model directory (ours, or any HF BERT-family sequence classifier with our tokenizer
files) and a prepared dataset; runs the model once per batch with hooks (eager attention, bf16
autocast on GPU) and feeds every stream point to the accumulators; writes tidy tables (Parquet
and TSV), the class-mean attention maps (``maps.npz``), figures and ``manifest.json``. Output
files are listed in docs/formats.md.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bertgeom.config import AnalyzeConfig
from bertgeom.errors import ArtifactError
from bertgeom.heap import append_batch, fixed_mmap_threshold
from bertgeom.io.files import atomic_path, save_figure, write_json
from bertgeom.io.manifest import describe_inputs, write_manifest
from bertgeom.model.data import collate, encode_labels, load_split, sequences_for
from bertgeom.model.infer import resolve_device
from bertgeom.model.store import ModelBundle, load_model_dir, weights_file
from bertgeom.pipeline import analyze_resume as resume
from bertgeom.resources import CLASSES
from bertgeom.tokens.vocab import TOKENS_FILE


@dataclass(frozen=True)
class AnalyzeSummary:
    """What ``analyze`` did."""

    n_genomes: int
    n_correct: int
    n_included: int
    seconds: float
    genomes_per_s: float
    outputs: tuple[str, ...]
    notes: tuple[str, ...] = ()


def stratified_counts(sizes: np.ndarray, total: int) -> np.ndarray:
    """Per-class sample sizes summing to ``min(total, sizes.sum())``, proportional to ``sizes``
    by largest remainders, with every class represented when ``total`` allows it."""
    sizes = np.asarray(sizes, dtype=np.int64)
    if total >= sizes.sum():
        return sizes.copy()
    present = sizes > 0
    base = np.zeros_like(sizes)
    if total >= int(present.sum()):  # one each first: no class vanishes from a small sample
        base[present] = 1
    rest = total - int(base.sum())
    room = sizes - base
    want = rest * room / max(int(room.sum()), 1)
    extra = np.minimum(np.floor(want).astype(np.int64), room)
    left = rest - int(extra.sum())
    order = np.lexsort((np.arange(len(sizes)), -(want - np.floor(want))))  # largest remainder
    for c in order:
        if left == 0:
            break
        if extra[c] < room[c]:
            extra[c] += 1
            left -= 1
    return base + extra


def select_genomes(df: pd.DataFrame, max_genomes: int, seed: int) -> pd.DataFrame:
    """A class-stratified seeded sample of at most ``max_genomes`` rows (all when 0), in a
    seeded shuffled order, so "the first N" never means one class."""
    rng = np.random.default_rng(seed)
    if max_genomes and len(df) > max_genomes:
        groups = [g for _, g in df.groupby("label", sort=True)]
        counts = stratified_counts(np.array([len(g) for g in groups]), max_genomes)
        df = pd.concat(
            [g.sample(n=int(n), random_state=seed) for g, n in zip(groups, counts, strict=True)]
        )
    return df.iloc[rng.permutation(len(df))].reset_index(drop=True)


def run(
    model_dir: str | os.PathLike,
    prepared_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    config: AnalyzeConfig,
    progress: bool = True,
) -> AnalyzeSummary:
    """Analyse ``model_dir`` on ``config.split`` of ``prepared_dir`` into ``out_dir``."""
    from bertgeom.geometry.accumulate import AccumulatorOptions, GeometryAccumulator
    from bertgeom.geometry.domains import token_domains
    from bertgeom.geometry.gates import GateOptions

    fixed_mmap_threshold()  # resident memory flat over batches (see bertgeom.heap)
    dev = resolve_device(config.device)
    # saved with the outputs as resolved
    config = replace(config, batch_size=config.batch_size or (64 if dev.startswith("cuda") else 16))
    bundle = load_model_dir(model_dir, device=dev, attn_implementation="eager")
    df, ids = _load(prepared_dir, config, bundle)
    classes, to_class, notes = _classes(bundle.labels, df.label)
    if notes:  # predictions cannot be scored: statistics over all genomes
        config = replace(config, all_genomes=True)
    notes = list(notes)
    y = encode_labels(df.label, classes)
    n_tokens = ids.shape[1] - 2
    families = config.families
    if bundle.vocab.spec.mode != "aligned" and "domains" in families:
        # raw k-mers drift after indels: a token's residues are not known from its position
        families = tuple(f for f in families if f != "domains")
        notes.append(
            "domains skipped: the model reads raw k-mers (tokens do not sit at fixed residues)"
        )
    acc = GeometryAccumulator(
        bundle.model,
        len(classes),
        token_domains(n_tokens, bundle.vocab.spec) if "domains" in families else None,
        AccumulatorOptions(
            families=families,
            drop_special=config.drop_special,
            spectra_genomes=config.spectra_genomes,
            gate_options=GateOptions(
                window=config.window, coverage=config.coverage, drop_special=config.drop_special
            ),
            svd_driver="gesvda" if dev.startswith("cuda") else None,
            compat=config.compat,
        ),
    )
    keep_maps = _kept(y, config.keep_maps, len(classes))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model_files = [weights_file(model_dir)] + [
        Path(model_dir) / name for name in ("config.json", "vocab.txt", TOKENS_FILE)
    ]
    inputs = describe_inputs([Path(prepared_dir) / "spikes.parquet", *model_files])
    stream = _Stream(
        fingerprint=resume.fingerprint(config, dev, inputs, df.id.to_numpy()),
        out=out,
        every_s=60.0 * config.checkpoint_minutes,
    )
    batch = config.batch_size
    pred, seconds = _stream(bundle, acc, ids, y, to_class, keep_maps, batch, dev, progress, stream)
    correct = to_class[pred] == y
    included = np.ones(len(y), bool) if config.all_genomes else correct
    genomes = _Genomes(df, y, classes, np.asarray(bundle.labels)[pred], correct, included)
    written, extra = _write_outputs(out, acc, bundle, genomes, keep_maps, config)
    if notes:
        extra["notes"] = [*notes, *extra.get("notes", [])]
    write_manifest(
        out,
        "analyze",
        inputs,
        config,
        written,
        summary={
            "n_genomes": len(y),
            "n_correct": int(correct.sum()),
            "seconds": seconds,
            "device": dev,
            **extra,
        },
    )
    resume.remove(out)
    return AnalyzeSummary(
        len(y),
        int(correct.sum()),
        int(included.sum()),
        seconds,
        len(y) / max(seconds, 1e-9),
        tuple(written),
        tuple(extra.get("notes", ())),
    )


def _classes(
    model_labels: tuple[str, ...], data_labels: Any
) -> tuple[tuple[str, ...], np.ndarray, list[str]]:
    """The classes statistics are grouped by, the class of each model output (-1: none), and
    notes.

    Normally the model's own labels. A checkpoint trained elsewhere may name its outputs
    otherwise (``LABEL_0`` ...): then the classes are the data's labels, predictions that name
    no class count as wrong, and the caller uses all genomes (noted in the manifest).
    """
    present = sorted(set(data_labels))
    if set(present) <= set(model_labels):
        return model_labels, np.arange(len(model_labels)), []
    classes = tuple(c for c in CLASSES if c in present) + tuple(
        c for c in present if c not in CLASSES
    )
    to_class = np.array([classes.index(m) if m in classes else -1 for m in model_labels])
    missing = sorted(set(present) - set(model_labels))
    note = (
        f"the model's labels ({', '.join(model_labels)}) do not include the data's classes "
        f"{', '.join(missing)}: statistics use all genomes, grouped by the data's classes"
    )
    return classes, to_class, [note]


@dataclass(frozen=True)
class _Genomes:
    """The analysed genomes, in streaming order."""

    df: pd.DataFrame  # id, label, mutations
    y: np.ndarray  # class ids (in ``classes``)
    classes: tuple[str, ...]
    predicted: np.ndarray  # the model's predicted labels (str)
    correct: np.ndarray
    included: np.ndarray  # in the class statistics


def _load(
    prepared_dir: str | os.PathLike, config: AnalyzeConfig, bundle: ModelBundle
) -> tuple[pd.DataFrame, np.ndarray]:
    """The selected genomes (``id``, ``label``, ``mutations``) and their token ids.

    Only the spike column the model reads is loaded, and it is dropped once encoded; ids are
    kept as int32: what the run holds for its inputs is ~2 KB per genome, not ~15.
    """
    mode = bundle.vocab.spec.mode
    columns = ("id", "label", "mutations", "spike" if mode == "aligned" else "raw_spike")
    splits = ("train", "val", "test") if config.split == "all" else (config.split,)
    df = pd.concat([load_split(prepared_dir, s, columns) for s in splits], ignore_index=True)
    if df.empty:
        raise ArtifactError(f"{prepared_dir}: no labelled genomes in split {config.split}")
    df = select_genomes(df, config.max_genomes, config.seed)
    ids = bundle.vocab.encode(sequences_for(df, mode)).astype(np.int32)
    return df[["id", "label", "mutations"]].copy(), ids


def _kept(y: np.ndarray, per_class: int, n_classes: int) -> np.ndarray:
    """The first ``per_class`` genomes of each class (in the shuffled order)."""
    keep = np.zeros(len(y), bool)
    for c in range(n_classes):
        keep[np.flatnonzero(y == c)[:per_class]] = True
    return keep


@dataclass(frozen=True)
class _Stream:
    """Checkpointing of the stream (see ``analyze_resume``)."""

    fingerprint: dict[str, Any]
    out: Path
    every_s: float


def _stream(
    bundle: ModelBundle,
    acc: Any,
    ids: np.ndarray,
    y: np.ndarray,
    to_class: np.ndarray,
    keep_maps: np.ndarray,
    batch_size: int,
    device: str,
    progress: bool,
    ckpt: _Stream,
) -> tuple[np.ndarray, float]:
    """Feed every batch to ``acc``, resuming from a checkpoint of this run if there is one;
    returns the model's predictions (output indices) and the seconds spent streaming (over all
    sessions). ``to_class`` maps output indices to classes of ``y`` (-1: none)."""
    import torch
    from tqdm import tqdm

    from bertgeom.geometry.capture import Capture

    done = resume.load(ckpt.out, ckpt.fingerprint, acc, device)
    mapping = torch.as_tensor(to_class, device=device)
    start, preds, before = (done.start, done.preds, done.seconds) if done else (0, [], 0.0)
    t0 = last = time.perf_counter()
    saved = start  # genomes in the newest checkpoint
    pending = 0  # per-batch prediction arrays trailing ``preds``
    model = bundle.model.eval()
    use_bf16 = device.startswith("cuda")
    bar = tqdm(
        total=len(ids),
        initial=start,
        unit="genome",
        desc="analyze",
        disable=not progress,
        file=sys.stderr,
        dynamic_ncols=True,
    )

    def save() -> None:
        nonlocal last, saved
        resume.save(ckpt.out, ckpt.fingerprint, acc, preds, before + time.perf_counter() - t0)
        last, saved = time.perf_counter(), acc.n_done

    try:
        with bar, Capture(model, acc.on_layer), torch.inference_mode():
            for a in range(start, len(ids), batch_size):
                rows = ids[a : a + batch_size].astype(np.int64)
                batch = {k: v.to(device) for k, v in collate(rows).items()}
                labels = torch.as_tensor(y[a : a + batch_size], device=device)
                acc.begin_batch(
                    batch["attention_mask"].bool(),
                    labels,
                    torch.as_tensor(keep_maps[a : a + batch_size]),
                )
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_bf16):
                    logits = model(**batch).logits
                pred = logits.argmax(-1)
                right = mapping[pred] == labels
                # ahead of acc.n_done until end_batch ends
                pending = append_batch(preds, pred.cpu().numpy(), pending)
                acc.end_batch(torch.where(right, labels, labels + acc.n_classes))
                bar.update(len(labels))
                if acc.n_done < len(ids) and time.perf_counter() - last >= ckpt.every_s:
                    save()
    except BaseException:  # interrupted (Ctrl-C, SIGTERM) or failed: keep the finished batches
        if acc.n_done > saved and acc.abort_batch():
            try:
                save()
            except Exception as err:  # the original exception matters more
                print(f"analyze: no checkpoint written ({err})", file=sys.stderr)
        raise
    seconds = before + time.perf_counter() - t0
    return (np.concatenate(preds) if preds else np.zeros(0, np.int64)), seconds


def _write_table(out: Path, name: str, table: pd.DataFrame, tsv: bool = True) -> list[str]:
    if table is None or table.empty:
        return []
    with atomic_path(out / f"{name}.parquet") as tmp:
        table.to_parquet(tmp, index=False)
    names = [f"{name}.parquet"]
    if tsv:
        with atomic_path(out / f"{name}.tsv") as tmp:
            table.to_csv(tmp, sep="\t", index=False, float_format="%.6g")
        names.append(f"{name}.tsv")
    return names


def _write_outputs(
    out: Path,
    acc: Any,
    bundle: ModelBundle,
    g: _Genomes,
    keep_maps: np.ndarray,
    config: AnalyzeConfig,
) -> tuple[list[str], dict[str, Any]]:
    """Tables, maps and figures; returns the file names and extra manifest summary entries
    (``notes`` on skipped or clipped embedding maps, ``map_seconds`` per method)."""
    from bertgeom.geometry import tables

    names, ids, y, included, df = g.classes, g.df.id.to_numpy(), g.y, g.included, g.df
    extra: dict[str, Any] = {}
    classes = np.asarray(names)[y]
    written: list[str] = []
    t: dict[str, pd.DataFrame] = {"genomes": pd.DataFrame({
        "seq_id": ids, "class": classes, "predicted": g.predicted,
        "correct": g.correct, "included": included, "mutations": df.mutations.to_numpy(),
    })}  # fmt: skip
    t |= tables.measure_tables(
        acc, ids, y, included, names, config.all_genomes, config.seed, config.thresholds
    )
    if "cone" in t:
        written += _write_table(out, "cone", t.pop("cone"), tsv=False)
    if "embedding_maps" in t and "pca" not in config.maps:
        del t["embedding_maps"]
    methods = [m for m in config.maps if m != "pca"]
    if acc.wants("embeddings") and methods:
        t["nonlinear_maps"], notes, map_seconds = tables.nonlinear_map_table(
            acc, ids, y, included, names, methods, seed=config.seed,
            max_genomes=config.map_genomes, perplexity=config.perplexity,
            n_neighbors=config.n_neighbors,
        )  # fmt: skip
        extra = {"notes": notes, "map_seconds": map_seconds}
    if acc.wants("domains"):
        t["domains"] = tables.domains_table(acc, names, config.all_genomes, config.alpha)
        if acc.wants("maps"):
            t["rollout"] = tables.rollout_table(acc, names, config.all_genomes)
    for name, table in t.items():
        written += _write_table(out, name, table)
    written += _write_maps(out, acc, ids, classes, keep_maps, names, config.all_genomes)
    written += _write_figures(out, t, acc, bundle, names, config)
    return written, extra


def _write_maps(
    out: Path,
    acc: Any,
    ids: np.ndarray,
    classes: np.ndarray,
    keep_maps: np.ndarray,
    names: tuple[str, ...],
    all_genomes: bool,
) -> list[str]:
    from bertgeom.geometry import tables

    mean = tables.class_mean_maps(acc, all_genomes)
    if mean is None and not acc.kept_maps:
        return []
    arrays: dict[str, Any] = {"classes": np.asarray(names)}
    if mean is not None:
        arrays["class_mean"] = mean.astype(np.float16)  # (layer, head, class, q, k)
    if acc.kept_maps:
        width = max(m.shape[-1] for m in acc.kept_maps)
        pad = [
            np.pad(m, ((0, 0), (0, 0), (0, width - m.shape[-2]), (0, width - m.shape[-1])))
            for m in acc.kept_maps
        ]
        arrays["genome_maps"] = np.stack(pad)  # (genome, layer, head, q, k)
        # real positions of each genome's maps ([CLS] + tokens + [SEP]); rows past it are 0
        arrays["genome_lengths"] = np.array(
            [int((m[0, 0].sum(-1) > 0).sum()) for m in acc.kept_maps], dtype=np.int32
        )
        arrays["genome_ids"] = ids[keep_maps].astype(str)  # not object: no pickle to load
        arrays["genome_classes"] = classes[keep_maps]
    with atomic_path(out / "maps.npz") as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)  # float16 attention barely compresses; zlib cost 10x the time
    write_json(
        out / "maps.json",
        {
            "class_mean": "(layer, head, class, q_pos, k_pos) float16",
            "genome_maps": "(genome, layer, head, q_pos, k_pos) float16; PAD rows and columns 0",
            "genome_lengths": "(genome,) int32 real positions of each genome's maps",
            "genome_ids": "(genome,) ids of the genomes in genome_maps",
            "genome_classes": "(genome,) their true classes",
            "classes": "(class,) the class dimension of class_mean",
        },
    )
    return ["maps.npz", "maps.json"]


def _write_figures(
    out: Path,
    t: dict[str, pd.DataFrame],
    acc: Any,
    bundle: ModelBundle,
    names: tuple[str, ...],
    config: AnalyzeConfig,
) -> list[str]:
    from bertgeom.pipeline.analyze_figures import close_figure, figures

    written = []
    (out / "figures").mkdir(exist_ok=True)
    for name, fig in figures(t, acc, bundle, names, config):
        save_figure(fig, out / "figures" / f"{name}.png")
        close_figure(fig)
        written.append(f"figures/{name}.png")
    return written
