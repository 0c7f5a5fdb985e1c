"""Classifier training (science.md §1, trained from scratch or from a ``pretrain`` directory).

``train`` builds the vocabulary from the training split, a BERT classifier from a preset (or
from ``config.init_from``), and runs AdamW with linear warm-up and decay, gradient clipping and
class balancing. After every epoch (and when ``max_steps`` stops a run) it validates (loss,
accuracy, macro-F1), appends a row to ``history.tsv``, writes ``checkpoints/last.pt`` and, when
validation macro-F1 improved (or tied with a lower validation loss, so a saturated validation
set still selects), saves the model directory itself (``out_dir``: HF files and
``bertgeom_model.json``). ``manifest.json`` is written last.

Exact resume: epoch ``e`` visits rows in an order derived only from ``(seed, e)`` and the
checkpoint holds the model, optimiser, scheduler, position (epoch, batch, step), bookkeeping and
every RNG state, so an interrupted run resumed on the same device ends with the weights of an
uninterrupted one.

Under ``torchrun`` (several processes, :mod:`bertgeom.model.distributed`) each rank trains on
its slice of every global batch; rank 0 alone validates and writes, and the checkpoint holds
the world size and every rank's RNG states (resume needs the same world size).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bertgeom.config import TrainConfig
from bertgeom.errors import ArtifactError, ConfigError, TrainingError
from bertgeom.io.files import reading, sha256_file, write_tsv
from bertgeom.io.manifest import describe_inputs, write_manifest
from bertgeom.model import checkpoint as ckpt_io
from bertgeom.model import data, distributed, fastpath, loop
from bertgeom.model.checkpoint import CHECKPOINT, RESUMABLE_CHANGES
from bertgeom.model.distributed import World
from bertgeom.model.hardneg import hard_negatives
from bertgeom.model.metrics import macro_f1
from bertgeom.model.pretrain import pretrain, read_pretrain_meta
from bertgeom.model.snapshots import Snapshots
from bertgeom.model.store import MODEL_META, WEIGHTS, save_model_dir
from bertgeom.resources import CLASSES
from bertgeom.tokens.vocab import (
    TOKENIZER_FILES,
    Vocabulary,
    build_vocabulary,
    load_vocabulary,
)

__all__ = [
    "CHECKPOINT", "HISTORY", "HISTORY_COLUMNS", "RESUMABLE_CHANGES", "TrainResult", "evaluate",
    "pretrain", "train",
]  # fmt: skip

HISTORY = "history.tsv"
HISTORY_COLUMNS = (
    "epoch", "step", "train_loss", "val_loss", "val_accuracy", "val_macro_f1", "lr", "seconds",
    "spikes_per_s",
)  # fmt: skip


@dataclass(frozen=True)
class TrainResult:
    """What ``train`` did; ``history`` holds the rows of ``history.tsv`` as dicts."""

    out_dir: Path
    best_epoch: int
    best_val_macro_f1: float
    history: list[dict[str, float]]
    n_train: int
    n_val: int
    seconds: float


@dataclass
class _Progress:
    """Position and bookkeeping of a run (saved in the checkpoint)."""

    epoch: int = 0  # complete epochs
    batch: int = 0  # batches done in the current epoch
    step: int = 0  # optimiser steps
    best_f1: float = -1.0
    best_loss: float = math.inf  # validation loss of the best model: breaks ties in macro-F1
    best_epoch: int = 0
    bad_epochs: int = 0  # complete epochs since the best
    history: list[dict[str, float]] = field(default_factory=list)


@dataclass
class _Data:
    """Encoded splits: ids (n, T + 2) and class ids (n,)."""

    vocab: Vocabulary
    labels: tuple[str, ...]
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    n_positions: int
    weights: np.ndarray | None  # (n_classes,) loss weights when balance = "weights"


def _load_data(prepared_dir: Path, config: TrainConfig, vocab: Vocabulary | None) -> _Data:
    train_df = data.load_split(prepared_dir, "train")
    val_df = data.load_split(prepared_dir, "val")
    labels = data.present_labels([*train_df["label"], *val_df["label"]], CLASSES)
    in_train = sorted(set(train_df["label"]))
    if len(in_train) < 2:
        raise TrainingError(
            f"{data.spikes_path(prepared_dir)}: the train split holds one class "
            f"({', '.join(in_train)}); a classifier needs genomes of at least 2 classes "
            "(prepare more labelled genomes)"
        )
    seqs = data.sequences_for(train_df, config.token_mode)
    train_labels = list(train_df["label"])
    if config.hard_negatives > 0 and config.token_mode == "aligned" and "other" in labels:
        extra = hard_negatives(
            seqs,
            train_df["mutations"].fillna("").tolist(),
            train_labels,
            config.hard_negatives,
            config.seed,
            max_events=config.hard_negative_events,
        )
        seqs, train_labels = seqs + extra, train_labels + ["other"] * len(extra)
    if vocab is None:
        vocab = build_vocabulary([seqs], loop.kmer_spec(config), config.min_count)
    y_train = data.encode_labels(train_labels, labels)
    return _Data(
        vocab=vocab,
        labels=labels,
        x_train=vocab.encode(seqs),
        y_train=y_train,
        x_val=vocab.encode(data.sequences_for(val_df, config.token_mode)),
        y_val=data.encode_labels(val_df["label"], labels),
        n_positions=loop.n_positions_for(vocab, seqs),
        weights=data.class_weights(y_train, len(labels)) if config.balance == "weights" else None,
    )


def _pretrained_vocab(config: TrainConfig) -> Vocabulary | None:
    """The vocabulary of ``config.init_from`` (its tokenization must be the config's)."""
    if not config.init_from:
        return None
    vocab = load_vocabulary(config.init_from)
    if vocab.spec != loop.kmer_spec(config):
        raise ConfigError(
            f"config: init_from {config.init_from} was pre-trained with {vocab.spec}, "
            f"but this run asks for {loop.kmer_spec(config)}"
        )
    return vocab


def _build_model(config: TrainConfig, d: _Data, rt: loop.Runtime) -> Any:
    import torch
    from transformers import BertForSequenceClassification

    from bertgeom.model.presets import bert_config, build_classifier

    if not config.init_from:
        cfg = bert_config(config.preset, d.vocab.size, d.n_positions, d.labels)
        return build_classifier(cfg, config.seed, attn_implementation=rt.attn).to(rt.device)
    from transformers.utils import logging as hf_logging

    torch.manual_seed(config.seed)  # the new pooler and classification head
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the load report lists the expected MLM-head mismatch
    try:
        with reading(Path(config.init_from) / WEIGHTS, "pre-trained weights (safetensors)"):
            model = BertForSequenceClassification.from_pretrained(
                config.init_from,
                num_labels=len(d.labels),
                id2label=dict(enumerate(d.labels)),
                label2id={lab: i for i, lab in enumerate(d.labels)},
                problem_type="single_label_classification",
                attn_implementation=rt.attn,
            )
    finally:
        hf_logging.set_verbosity(verbosity)
    return model.to(rt.device)


def evaluate(
    model: Any, x: np.ndarray, y: np.ndarray, batch_size: int, rt: loop.Runtime
) -> dict[str, float]:
    """Mean cross-entropy, accuracy and macro-F1 of ``model`` on ids ``x`` (n, T), classes ``y``."""
    import torch
    import torch.nn.functional as F

    was_training = model.training
    model.eval()
    loss_sum, preds = 0.0, []
    with torch.inference_mode():
        for a in range(0, len(x), batch_size):
            batch = {k: v.to(rt.device) for k, v in data.collate(x[a : a + batch_size]).items()}
            target = torch.from_numpy(y[a : a + batch_size]).to(rt.device)
            with loop.autocast(rt):
                logits = fastpath.logits(model, **batch).float()  # (batch, n_classes)
            loss_sum += float(F.cross_entropy(logits, target, reduction="sum"))
            preds.append(logits.argmax(-1).cpu().numpy())
    model.train(was_training)
    pred = np.concatenate(preds)
    return {
        "val_loss": loss_sum / len(x),
        "val_accuracy": float(np.mean(pred == y)),
        "val_macro_f1": macro_f1(y, pred, int(model.config.num_labels)),
    }


@dataclass
class _Run:
    """Everything one training run mutates."""

    model: Any
    opt: Any
    sched: Any
    rt: loop.Runtime
    config: TrainConfig
    data: _Data
    state: _Progress
    n_batches: int
    forward: Any = None  # ids, mask -> logits (fastpath), or its DDP / torch.compile wrapper
    data_sha256: str = ""  # of the prepared spikes table: the checkpoint's data fingerprint
    world: World = field(default_factory=World)  # the torchrun processes (one by default)
    snapshots: Snapshots | None = None  # light weight snapshots (config.snapshots)


def _train_epoch(run: _Run, bar: Any) -> tuple[float, int, float]:
    """Train from ``state.batch`` to the end of epoch ``state.epoch`` or to ``max_steps``.

    Returns the mean loss, the number of spikes seen and the seconds spent (over all ranks:
    the global batches).
    """
    import torch

    cfg, st, d, rt, world = run.config, run.state, run.data, run.rt, run.world
    order = data.epoch_order(d.y_train, st.epoch, cfg.seed, cfg.balance)
    weight = None if d.weights is None else torch.from_numpy(d.weights).to(rt.device)
    losses: list[Any] = []  # on the device: read back for the bar every 10 steps and at the end
    seen, t0 = 0, time.perf_counter()
    run.model.train()
    while st.batch < run.n_batches and not (cfg.max_steps and st.step >= cfg.max_steps):
        if run.snapshots is not None:
            run.snapshots.maybe_save(run.model, st.step)
        rows = order[st.batch * cfg.batch_size : (st.batch + 1) * cfg.batch_size]
        idx = distributed.rank_rows(rows, world)
        empty = len(idx) == 0  # fewer rows than ranks: one row with weight 0 joins the step
        idx = rows[:1] if empty else idx
        batch = {k: v.to(rt.device) for k, v in data.collate(d.x_train[idx]).items()}
        target = torch.from_numpy(d.y_train[idx]).to(rt.device)
        with loop.autocast(rt):
            logits = run.forward(**batch).float()  # (batch, n_classes)
        w_rows = None if d.weights is None else d.weights[d.y_train[rows]].astype(np.float64)
        denominator = len(rows) if w_rows is None else float(w_rows.sum())  # global batch's
        loss = distributed.rank_loss(logits, target, weight, denominator, world, empty)
        loop.optimizer_step(run.model, run.opt, run.sched, loss, cfg.grad_clip)
        losses.append(distributed.mean_over_ranks(loss.detach(), world))
        st.batch, st.step, seen = st.batch + 1, st.step + 1, seen + len(rows)
        bar.update()
        if st.step % 10 == 0 or st.batch == run.n_batches:
            recent = float(torch.stack(losses[-20:]).double().mean())
            loop.check_loss(recent, st.step, cfg.lr)
            rate = seen / (time.perf_counter() - t0)
            bar.set_postfix(loss=f"{recent:.4f}", spikes_s=f"{rate:.1f}")
    mean = float(torch.stack(losses).double().mean()) if losses else math.nan
    if losses:
        loop.check_loss(mean, st.step, cfg.lr)
    return mean, seen, time.perf_counter() - t0


def _meta(run: _Run) -> dict[str, Any]:
    cfg, st, d = run.config, run.state, run.data
    preset = read_pretrain_meta(cfg.init_from)["preset"] if cfg.init_from else cfg.preset
    return {
        "labels": list(d.labels),
        "preset": preset,
        "train_config": dataclasses.asdict(cfg),
        "token": {"k": cfg.k, "stride": cfg.stride, "mode": cfg.token_mode},
        "best_epoch": st.best_epoch,
        "best_val_macro_f1": st.best_f1,
        "n_train": len(d.y_train),
        "n_val": len(d.y_val),
    }


def _end_period(run: _Run, out: Path, row: dict[str, float]) -> None:
    """Record a validation row, keep the best model, count epochs without improvement."""
    st = run.state
    epoch_done = st.batch == run.n_batches
    st.history.append(row)
    rows = [[r[c] for c in HISTORY_COLUMNS] for r in st.history]
    write_tsv(out / HISTORY, HISTORY_COLUMNS, rows)
    if (row["val_macro_f1"], -row["val_loss"]) > (st.best_f1, -st.best_loss):
        st.best_f1, st.best_loss = row["val_macro_f1"], row["val_loss"]
        st.best_epoch, st.bad_epochs = int(row["epoch"]), 0
        save_model_dir(run.model, run.data.vocab, _meta(run), out)
    elif epoch_done:
        st.bad_epochs += 1
    if epoch_done:
        st.epoch, st.batch = st.epoch + 1, 0


def _should_stop(config: TrainConfig, st: _Progress) -> bool:
    return (
        st.epoch >= config.epochs
        or bool(config.max_steps and st.step >= config.max_steps)
        or (config.patience > 0 and st.bad_epochs >= config.patience)
    )


def _parts(run: _Run) -> dict[str, Any]:
    return {"model": run.model, "optimizer": run.opt, "scheduler": run.sched}


def _setup(prepared: Path, out: Path, config: TrainConfig, resume: bool, world: World) -> _Run:
    """Data, model, optimiser and position of a new or resumed run."""
    import torch

    if not resume and (out / CHECKPOINT).exists():
        raise ArtifactError(f"{out / CHECKPOINT} exists: resume it, or choose a new output dir")
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    rt = distributed.place(loop.runtime(config), world)
    loop.seed_everything(config.seed)
    data_sha = sha256_file(data.spikes_path(prepared))
    ckpt = (
        ckpt_io.load_checkpoint(out / CHECKPOINT, config, data_sha, world_size=world.size)
        if resume
        else None
    )
    vocab = ckpt_io.checkpoint_vocabulary(ckpt) if ckpt else _pretrained_vocab(config)
    d = _load_data(prepared, config, vocab)
    model = _build_model(config, d, rt)
    distributed.seed_rank(config.seed, world)
    n_batches = math.ceil(len(d.y_train) / config.batch_size)
    opt, sched = loop.build_optimizer(model, config, config.epochs * n_batches)
    run = _Run(model, opt, sched, rt, config, d, _Progress(), n_batches, None, data_sha, world)
    # rank 0 alone writes snapshots (as every other file)
    run.snapshots = Snapshots.for_run(out, config, n_batches) if world.main else None
    if ckpt is not None:
        ckpt_io.restore_states(ckpt, _parts(run), d.labels, rank=world.rank)
        if rt.device.type != "cuda":  # a CUDA checkpoint resumed elsewhere: no fused kernel
            for group in opt.param_groups:
                group["fused"] = False
        run.state = _Progress(**ckpt["progress"])
    forward = functools.partial(fastpath.logits, model)  # logits only: see fastpath
    forward = distributed.wrap_forward(model, forward, world)  # DDP sees this forward
    run.forward = torch.compile(forward) if config.compile else forward
    return run


def train(
    prepared_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    config: TrainConfig,
    resume: bool = False,
    progress: bool = True,
    world: World | None = None,
) -> TrainResult:
    """Train a spike classifier; see the module docstring for what is written.

    Parameters
    ----------
    prepared_dir
        A ``bertgeom prepare`` output directory with labelled ``train`` and ``val`` splits.
    out_dir
        The model directory to write (created).
    config
        Tokenization, model size and optimisation.
    resume
        Continue from ``out_dir/checkpoints/last.pt``; only the options in
        ``RESUMABLE_CHANGES`` may differ from the interrupted run's.
    progress
        Show a progress bar (loss, spikes/s) on stderr.
    world
        This process among the ``torchrun`` processes (:func:`bertgeom.model.distributed.session`
        joins their group); None: one process. Only rank 0 writes ``out_dir``.
    """
    t_start, prepared, out = time.perf_counter(), Path(prepared_dir), Path(out_dir)
    world = world or World()
    run = _setup(prepared, out, config, resume, world)
    if world.main:
        out.mkdir(parents=True, exist_ok=True)
    total = config.epochs * run.n_batches
    bar = loop.progress_bar(total, run.state.step, "train", progress and world.main)
    with bar, loop.quiet_transformers():
        while not _should_stop(config, run.state):
            t0 = time.perf_counter()
            loss, seen, secs = _train_epoch(run, bar)
            if seen == 0:
                break
            rank_rng = distributed.gather_to_main(loop.rng_states(), world)
            if world.main:
                row = {"epoch": run.state.epoch + 1, "step": run.state.step, "train_loss": loss}
                row |= {"spikes_per_s": seen / secs, "lr": run.sched.get_last_lr()[0]}
                _end_validation(run, out, row, t0, rank_rng)
            # rank 0's position and bookkeeping, hence its early-stopping decision, everywhere
            run.state = _Progress(**distributed.from_main(dataclasses.asdict(run.state), world))
        if run.snapshots is not None:  # the final weights, whatever the schedule
            run.snapshots.save(run.model, run.state.step)
            run.snapshots.write_index(run.state.history)
    return _finish(prepared, out, run, time.perf_counter() - t_start)


def _end_validation(
    run: _Run, out: Path, row: dict[str, float], t0: float, rank_rng: list[Any] | None
) -> None:
    """Rank 0: validate, record the row, keep the best model, write the checkpoint."""
    config = run.config
    row |= evaluate(run.model, run.data.x_val, run.data.y_val, 2 * config.batch_size, run.rt)
    loop.check_loss(row["val_loss"], run.state.step, config.lr, "validation loss")
    row["seconds"] = time.perf_counter() - t0
    _end_period(run, out, row)
    ckpt_io.save_checkpoint(
        out / CHECKPOINT, _parts(run), dataclasses.asdict(run.state), config,
        run.data.vocab, run.data.labels, run.data_sha256, rank_rng=rank_rng,
    )  # fmt: skip


def _finish(prepared: Path, out: Path, run: _Run, seconds: float) -> TrainResult:
    st, d = run.state, run.data
    if run.world.main and not (out / WEIGHTS).is_file():
        raise ArtifactError(f"{out}: training stopped before its first validation; no model saved")
    outputs = ["config.json", WEIGHTS, *TOKENIZER_FILES, MODEL_META, HISTORY]
    outputs += run.snapshots.outputs() if run.snapshots is not None else []
    summary = {
        "best_epoch": st.best_epoch,
        "best_val_macro_f1": st.best_f1,
        "steps": st.step,
        "n_train": len(d.y_train),
        "n_val": len(d.y_val),
        "seconds": round(seconds, 1),
    }
    if run.world.main:
        inputs = describe_inputs([data.spikes_path(prepared)])
        write_manifest(out, "train", inputs, run.config, outputs, summary=summary)
    return TrainResult(
        out_dir=out,
        best_epoch=st.best_epoch,
        best_val_macro_f1=st.best_f1,
        history=list(st.history),
        n_train=len(d.y_train),
        n_val=len(d.y_val),
        seconds=seconds,
    )
