"""``bertgeom analyze``: the geometry of a trained encoder, streamed over a split of genomes.

Reads a model directory (ours, or any HF BERT-family sequence classifier with our tokenizer
files) and a prepared dataset, plans the genomes (a class-stratified seeded sample in a seeded
order), streams them through the model once with the one stream driver
(:mod:`bertgeom.geometry.stream`) feeding the selected measures of the registry
(:mod:`bertgeom.geometry.measures`), and writes each measure's tables (Parquet and TSV), arrays,
figures and ``manifest.json``. Output files are listed in docs/formats.md.

Three ways to run the same plan, with equal outputs:

- :func:`run`: the whole stream in one process (checkpointed: an interrupted run resumes);
- :func:`run_shard`: shard ``k`` of ``n`` (a contiguous range of the plan, whole batches),
  whose state is saved to a file (``bertgeom analyze --shard K/N --state-out FILE``);
- :func:`merge`: the states of every shard merged in shard order, then written
  (``bertgeom analyze --merge FILE... --out DIR``).

With ``over_training`` (``--over-training``), :func:`run` also streams the plan's genomes
through every training snapshot of the model into ``OUT/over_training/``
(:mod:`bertgeom.pipeline.analyze_dynamics`).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bertgeom.config import AnalyzeConfig
from bertgeom.errors import ArtifactError, ConfigError, InputError
from bertgeom.heap import append_batch, fixed_mmap_threshold
from bertgeom.io.files import atomic_path, save_figure, write_json
from bertgeom.io.manifest import describe_inputs, write_manifest
from bertgeom.model.data import collate, encode_labels, load_split, sequences_for
from bertgeom.model.infer import resolve_device
from bertgeom.model.store import ModelBundle, load_model_dir, weights_file
from bertgeom.pipeline import analyze_resume as resume
from bertgeom.resources import CLASSES
from bertgeom.tokens.vocab import TOKENS_FILE

#: Format tag of the shard state files (``--state-out``).
STATE_FORMAT = "bertgeom-analyze-state/1"


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


@dataclass
class Plan:
    """Everything a stream over the planned genomes needs (see :func:`plan`)."""

    config: AnalyzeConfig  # batch size resolved
    bundle: ModelBundle
    df: pd.DataFrame  # id, label, mutations in stream order
    ids: np.ndarray  # (genome, T) int32 token ids
    y: np.ndarray  # (genome,) class ids
    classes: tuple[str, ...]
    to_class: np.ndarray  # class of each model output (-1: none)
    keep_maps: np.ndarray  # (genome,) bool
    info: Any  # RunInfo
    measures: list[Any]  # measure classes, in registry order
    options: dict[str, Any]  # resolved Options per measure name
    inputs: list[dict[str, Any]]
    device: str
    notes: list[str]

    @property
    def n(self) -> int:
        """Planned genomes."""
        return len(self.y)

    def fingerprint(self) -> dict[str, Any]:
        """What must be equal for a checkpoint to resume or for shard states to merge."""
        stream_options = {
            m.name: {k: v for k, v in vars(self.options[m.name]).items() if k in m.stream_options}
            for m in self.measures
        }
        return resume.fingerprint(
            self.config, stream_options, self.device, self.inputs, self.df.id.to_numpy()
        )


def plan(
    model_dir: str | os.PathLike, prepared_dir: str | os.PathLike, config: AnalyzeConfig
) -> Plan:
    """Load the model and the genomes, choose the measures and the genome order."""
    from bertgeom.geometry.domains import token_domains
    from bertgeom.geometry.measures import select
    from bertgeom.geometry.stream import run_info

    dev = resolve_device(config.device)
    config = replace(config, batch_size=config.batch_size or (64 if dev.startswith("cuda") else 16))
    measures = select(config.only)
    eager = any("A" in m.reads for m in measures)
    bundle = load_model_dir(model_dir, device=dev, attn_implementation="eager" if eager else "sdpa")
    df, ids = _load(prepared_dir, config, bundle)
    classes, to_class, notes = _classes(bundle.labels, df.label)
    if notes:  # predictions cannot be scored: statistics over all genomes
        config = replace(config, all_genomes=True)
    y = encode_labels(df.label, classes)
    aligned = bundle.vocab.spec.mode == "aligned"
    domains = token_domains(ids.shape[1] - 2, bundle.vocab.spec) if aligned else None
    kept = []
    for m in measures:
        if m.needs_domains and domains is None:
            # raw k-mers drift after indels: a token's residues are not known from its position
            notes.append(
                f"{m.name} skipped: the model reads raw k-mers (tokens do not sit at fixed "
                "residues)"
            )
        else:
            kept.append(m)
    info = run_info(bundle.model, classes, config.drop_special, domains, dev)
    model_files = [weights_file(model_dir)] + [
        Path(model_dir) / name for name in ("config.json", "vocab.txt", TOKENS_FILE)
    ]
    inputs = describe_inputs([Path(prepared_dir) / "spikes.parquet", *model_files])
    options = config.options()  # resolved and validated once
    keep = (
        _kept(y, options["maps"].keep, len(classes))
        if "maps" in {m.name for m in kept}
        else np.zeros(len(y), bool)
    )
    return Plan(
        config=config,
        bundle=bundle,
        df=df,
        ids=ids,
        y=y,
        classes=classes,
        to_class=to_class,
        keep_maps=keep,
        info=info,
        measures=kept,
        options=options,
        inputs=inputs,
        device=dev,
        notes=list(notes),
    )


def new_stream(p: Plan) -> Any:
    """A fresh stream of ``p``'s measures (empty states)."""
    from bertgeom.geometry.stream import Stream

    measures = [m(p.info, p.options[m.name]) for m in p.measures]
    return Stream(
        p.bundle.model.eval(), measures, p.info, p.to_class, bf16=p.device.startswith("cuda")
    )


def shard_range(n: int, batch_size: int, shard: int, n_shards: int) -> tuple[int, int]:
    """Genomes [lo, hi) of shard ``shard`` (0-based) of ``n_shards``: contiguous runs of whole
    batches, so every batch equals the one a single stream sees."""
    if not 0 <= shard < n_shards:
        raise ConfigError(f"shard {shard + 1}/{n_shards}: K must be in 1..N")
    n_batches = -(-n // batch_size)
    lo = shard * n_batches // n_shards
    hi = (shard + 1) * n_batches // n_shards
    return min(lo * batch_size, n), min(hi * batch_size, n)


@dataclass
class _Progress:
    """Streaming position: predictions so far (per batch) and seconds."""

    preds: list[np.ndarray]
    seconds: float = 0.0
    pending: int = 0


def stream_genomes(
    p: Plan,
    stream: Any,
    lo: int,
    hi: int,
    progress: bool = True,
    checkpoint: Path | None = None,
) -> _Progress:
    """Stream genomes [lo, hi) of the plan into ``stream`` (resuming from, and writing, the
    checkpoint in ``checkpoint`` when given); returns the predictions and seconds."""
    import torch

    from bertgeom.progress import progress as progress_reporter

    fp = p.fingerprint() | {"range": [lo, hi]}
    state = _Progress(preds=[])
    if checkpoint is not None:
        done = resume.load(checkpoint, fp, stream)
        if done is not None:
            state = _Progress(preds=done.preds, seconds=done.seconds)
    start = lo + stream.n_done
    every = 60.0 * p.config.checkpoint_minutes
    t0 = last = time.perf_counter()
    before = state.seconds
    saved = stream.n_done
    batch_size, dev = p.config.batch_size, p.device
    bar = progress_reporter(
        total=hi - lo, desc="analyze", unit="genome", enabled=progress, initial=start - lo
    )

    def save() -> None:
        nonlocal last, saved
        assert checkpoint is not None
        state.seconds = before + time.perf_counter() - t0
        resume.save(checkpoint, fp, stream, state.preds, state.seconds)
        last, saved = time.perf_counter(), stream.n_done

    try:
        with bar, stream, torch.inference_mode():
            for a in range(start, hi, batch_size):
                b = min(a + batch_size, hi)
                batch = {k: v.to(dev) for k, v in collate(p.ids[a:b].astype(np.int64)).items()}
                labels = torch.as_tensor(p.y[a:b], device=dev)
                pred = stream.batch(batch, labels, torch.as_tensor(p.keep_maps[a:b]))
                state.pending = append_batch(state.preds, pred.cpu().numpy(), state.pending)
                bar.update(b - a)
                if checkpoint is not None and b < hi and time.perf_counter() - last >= every:
                    save()
    except BaseException:  # interrupted (Ctrl-C, SIGTERM) or failed: keep the finished batches
        if checkpoint is not None and stream.n_done > saved and stream.abort():
            try:
                save()
            except Exception as err:  # the original exception matters more
                print(f"analyze: no checkpoint written ({err})", file=sys.stderr)
        raise
    state.seconds = before + time.perf_counter() - t0
    return state


def run(
    model_dir: str | os.PathLike,
    prepared_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    config: AnalyzeConfig,
    progress: bool = True,
) -> AnalyzeSummary:
    """Analyse ``model_dir`` on ``config.split`` of ``prepared_dir`` into ``out_dir`` (the
    folder is refused when it is or holds an input; one run writes it at a time; the outputs
    of an earlier analysis there are removed first, so no stale table survives)."""
    from bertgeom.io.outputs import check_target, writing

    check_target(out_dir, [model_dir, prepared_dir], stage="analyze")
    fixed_mmap_threshold()  # resident memory flat over batches (see bertgeom.heap)
    if config.over_training:  # before any work: a model without snapshots fails at once
        from bertgeom.model.snapshots import read_snapshots

        read_snapshots(model_dir)
    p = plan(model_dir, prepared_dir, config)
    with writing(out_dir, inputs=[model_dir, prepared_dir], stage="analyze") as out:
        stream = new_stream(p)
        state = stream_genomes(p, stream, 0, p.n, progress, checkpoint=out)
        extra: tuple[list[str], dict[str, Any]] = ([], {})
        if p.config.over_training:  # every snapshot, into out/over_training/
            from bertgeom.pipeline import analyze_dynamics

            extra = analyze_dynamics.run(p, model_dir, out, progress)
        summary = write_outputs(
            p, stream, _joined(state.preds), state.seconds, out, extra_outputs=extra[0],
            extra_summary=extra[1],
        )  # fmt: skip
        resume.remove(out)
    return summary


def run_shard(
    model_dir: str | os.PathLike,
    prepared_dir: str | os.PathLike,
    state_out: str | os.PathLike,
    config: AnalyzeConfig,
    shard: tuple[int, int],
    progress: bool = True,
) -> tuple[int, int]:
    """Stream shard ``shard = (k, n)`` (0-based k) of the plan and save its state to
    ``state_out`` (a ``torch.save`` file); returns the shard's genome range."""
    import torch

    from bertgeom.io.outputs import check_target

    check_target(state_out, [model_dir, prepared_dir], kind="file")
    _one_process(config)
    fixed_mmap_threshold()
    p = plan(model_dir, prepared_dir, config)
    payload = shard_state(p, shard, progress)
    with atomic_path(state_out) as tmp:
        torch.save(payload, tmp)
    return payload["range"][0], payload["range"][1]


def shard_state(p: Plan, shard: tuple[int, int], progress: bool = True) -> dict[str, Any]:
    """Stream shard ``shard = (k, n)`` (0-based k) of plan ``p``; its state, as ``--state-out``
    saves it (format :data:`STATE_FORMAT`)."""
    import torch

    lo, hi = shard_range(p.n, p.config.batch_size, *shard)
    stream = new_stream(p)
    state = stream_genomes(p, stream, lo, hi, progress)
    return {
        "format": STATE_FORMAT,
        "fingerprint": p.fingerprint(),
        "shard": list(shard),
        "range": [lo, hi],
        "preds": torch.from_numpy(_joined(state.preds).astype(np.int64)),
        "seconds": state.seconds,
        "stream": stream.state_dict(),
    }


def merge(
    model_dir: str | os.PathLike,
    prepared_dir: str | os.PathLike,
    state_files: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    config: AnalyzeConfig,
) -> AnalyzeSummary:
    """Merge the shard states in ``state_files`` (any order; every shard of one plan, made with
    the same model, data and options) and write the outputs as one run would."""
    import torch

    from bertgeom.io.outputs import check_target, writing

    inputs = [model_dir, prepared_dir, *state_files]
    check_target(out_dir, inputs, stage="analyze")
    _one_process(config)
    p = plan(model_dir, prepared_dir, config)
    fp = p.fingerprint()
    parts = []
    for f in state_files:
        try:
            s = torch.load(f, map_location="cpu", weights_only=True)
            fmt = s.get("format") if isinstance(s, dict) else None
        except Exception as err:
            raise InputError(f"{f}: not an analyze state file ({type(err).__name__})") from None
        if fmt != STATE_FORMAT:
            raise InputError(f"{f}: not an analyze state file (format {fmt!r})")
        if s["fingerprint"] != fp:
            changed = sorted(k for k in fp if s["fingerprint"].get(k) != fp[k])
            raise InputError(
                f"{f}: made from another plan ({', '.join(changed)} differ): rerun the shard "
                "with the same model, data and options"
            )
        parts.append((int(s["range"][0]), int(s["range"][1]), str(f), s))
    total, preds, seconds = merge_states(p, parts)
    with writing(out_dir, inputs=inputs, stage="analyze") as out:
        return write_outputs(p, total, preds, seconds, out, shards=len(parts))


def merge_states(
    p: Plan, parts: list[tuple[int, int, str, dict[str, Any]]]
) -> tuple[Any, np.ndarray, float]:
    """Merge shard states ``(lo, hi, name, state)`` of plan ``p`` (any order; they must cover
    its genomes once) in genome order; the merged stream, the predictions and the seconds."""
    parts = sorted(parts, key=lambda x: x[0])
    at = 0
    for lo, hi, name, _ in parts:
        if lo != at:
            what = "overlaps the previous shard" if lo < at else f"leaves genomes {at}-{lo} out"
            raise InputError(f"{name}: genomes {lo}-{hi} {what}")
        at = hi
    if at != p.n:
        raise InputError(f"the shards cover genomes 0-{at} of {p.n}: a shard is missing")
    total = new_stream(p)
    preds, seconds = [], 0.0
    for _, _, _, s in parts:
        one = new_stream(p)
        one.load_state_dict(s["stream"])
        total.merge(one)
        preds.append(s["preds"].numpy())
        seconds += float(s["seconds"])
    return total, _joined(preds), seconds


def _one_process(config: AnalyzeConfig) -> None:
    if config.over_training:
        raise ConfigError("over_training runs in one process: not with --shard or --merge")


def _joined(preds: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(preds) if preds else np.zeros(0, np.int64)


@dataclass(frozen=True)
class FigureContext:
    """What measures' figures may need beyond the tables."""

    classes: tuple[str, ...]
    spec: Any  # the model's KmerSpec (token -> residues)
    all_genomes: bool


def measure_tables(
    p: Plan, stream: Any, preds: np.ndarray
) -> tuple[dict[str, Any], dict[str, Any], np.ndarray, np.ndarray]:
    """The ``genomes`` table and every measure's finished (and derived) tables, the measures'
    arrays, and per genome whether it was classified correctly and is in the statistics."""
    from bertgeom.geometry.measures.base import Arrays, Genomes

    if len(preds) != p.n:
        raise ArtifactError(f"{len(preds)} predictions for {p.n} genomes")
    correct = p.to_class[preds] == p.y
    included = np.ones(p.n, bool) if p.config.all_genomes else correct
    genomes = Genomes(
        ids=p.df.id.to_numpy(),
        labels=p.y,
        included=included,
        all_genomes=p.config.all_genomes,
        seed=p.config.seed,
    )
    tables: dict[str, Any] = {
        "genomes": pd.DataFrame(
            {
                "seq_id": genomes.ids,
                "class": np.asarray(p.classes)[p.y],
                "predicted": np.asarray(p.bundle.labels)[preds],
                "correct": correct,
                "included": included,
                "mutations": p.df.mutations.to_numpy(),
            }
        )
    }
    arrays: dict[str, Arrays] = {}
    for m in stream.measures:
        for name, value in m.finish(genomes).items():
            (arrays if isinstance(value, Arrays) else tables)[name] = value
    for m in stream.measures:
        tables |= m.derive(tables)
    return tables, arrays, correct, included


def write_outputs(
    p: Plan,
    stream: Any,
    preds: np.ndarray,
    seconds: float,
    out: Path,
    shards: int = 1,
    extra_outputs: Sequence[str] = (),
    extra_summary: dict[str, Any] | None = None,
) -> AnalyzeSummary:
    """Every measure's tables, arrays and figures, the genomes table and the manifest (which
    also lists ``extra_outputs``, files already written into ``out``, and holds
    ``extra_summary``)."""
    tables, arrays, correct, included = measure_tables(p, stream, preds)
    written: list[str] = []
    parquet_only = {t for m in stream.measures for t in m.parquet_only}
    for name, table in tables.items():
        written += _write_table(out, name, table, tsv=name not in parquet_only)
    for name, value in arrays.items():
        written += _write_arrays(out, name, value)
    ctx = FigureContext(p.classes, p.bundle.vocab.spec, p.config.all_genomes)
    written += _write_figures(out, stream.measures, tables, ctx)
    written += list(extra_outputs)
    notes = [*p.notes, *(n for m in stream.measures for n in m.notes)]
    extra = {m.name: m.summary for m in stream.measures if m.summary}
    write_manifest(
        out,
        "analyze",
        p.inputs,
        p.config.resolved(),
        written,
        summary={
            "n_genomes": p.n,
            "n_correct": int(correct.sum()),
            "seconds": seconds,
            "device": p.device,
            "shards": shards,
            "measures": [m.name for m in stream.measures],
            **({"notes": notes} if notes else {}),
            **extra,
            **(extra_summary or {}),
        },
    )
    return AnalyzeSummary(
        p.n,
        int(correct.sum()),
        int(included.sum()),
        seconds,
        p.n / max(seconds, 1e-9),
        tuple(written),
        tuple(notes),
    )


def _write_arrays(out: Path, name: str, value: Any) -> list[str]:
    with atomic_path(out / f"{name}.npz") as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **value.arrays)  # float16 attention barely compresses; zlib cost 10x
    write_json(out / f"{name}.json", value.describe)
    return [f"{name}.npz", f"{name}.json"]


def _write_figures(
    out: Path, measures: Sequence[Any], tables: dict[str, Any], ctx: FigureContext
) -> list[str]:
    import matplotlib.pyplot as plt

    written = []
    (out / "figures").mkdir(exist_ok=True)
    for m in measures:
        for name, fig in m.figures(tables, ctx):
            save_figure(fig, out / "figures" / f"{name}.png")
            plt.close(fig)
            written.append(f"figures/{name}.png")
    return written


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
