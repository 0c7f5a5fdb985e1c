"""Masked k-mer modelling: pre-train a BERT encoder on spikes without using their labels.

Data: every spike of a prepared directory that is not QC-bad and not in the test split
(unlabelled genomes included; the test split is left out so evaluation stays honest). The
vocabulary comes from the same spikes; ``train --init_from`` reuses it. Masking follows BERT:
each k-mer token is chosen with probability ``mask_prob`` and then becomes [MASK] (80 %), a
random k-mer (10 %) or stays (10 %); special tokens are never chosen. The loss is computed on
the chosen positions only (the output layer never sees the other ~85 %).

Output directory: an HF ``BertForMaskedLM`` (``config.json``, ``model.safetensors``), the
tokenizer files, ``bertgeom_pretrain.json``, ``history.tsv`` and ``manifest.json``. It is not a
classifier directory (no ``bertgeom_model.json``). No resume: pre-training runs are short.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from bertgeom.config import TrainConfig
from bertgeom.errors import ArtifactError
from bertgeom.io.files import write_json, write_tsv
from bertgeom.io.manifest import describe_inputs, write_manifest
from bertgeom.model import data, loop
from bertgeom.model.store import WEIGHTS
from bertgeom.resources import CLASSES
from bertgeom.tokens.vocab import TOKENIZER_FILES, Vocabulary, build_vocabulary

PRETRAIN_META = "bertgeom_pretrain.json"
HISTORY = "history.tsv"
HISTORY_COLUMNS = (
    "epoch", "step", "train_loss", "masked_accuracy", "lr", "seconds", "spikes_per_s",
)  # fmt: skip


def read_pretrain_meta(directory: str | os.PathLike) -> dict[str, Any]:
    """``bertgeom_pretrain.json`` of a pre-training directory."""
    path = Path(directory) / PRETRAIN_META
    if not path.is_file():
        raise ArtifactError(f"{path}: no such file (not a `bertgeom pretrain` output directory)")
    from bertgeom.io.files import read_json
    from bertgeom.io.manifest import verify_artifact

    meta = read_json(verify_artifact(path), "bertgeom pre-training metadata file")
    if not isinstance(meta, dict) or "preset" not in meta:
        raise ArtifactError(f"{path}: damaged or not a bertgeom pre-training metadata file")
    return meta


def mlm_loss(model: Any, batch: dict[str, Any], targets: Any) -> tuple[Any, int, int]:
    """Cross-entropy of the masked positions only.

    Returns
    -------
    tuple
        ``(loss, n_correct, n_masked)``.
    """
    import torch.nn.functional as F

    hidden = model.bert(**batch).last_hidden_state  # (batch, pos, d_model)
    chosen = targets != data.IGNORE_INDEX  # (batch, pos)
    logits = model.cls(hidden[chosen]).float()  # (n_masked, vocab)
    target = targets[chosen]
    loss = F.cross_entropy(logits, target)
    return loss, int((logits.argmax(-1) == target).sum()), int(target.numel())


def _build(config: TrainConfig, vocab: Vocabulary, n_positions: int, rt: loop.Runtime) -> Any:
    import torch
    from transformers import BertForMaskedLM

    from bertgeom.model.presets import bert_config

    cfg = bert_config(config.preset, vocab.size, n_positions, CLASSES)
    torch.manual_seed(config.seed)
    model = BertForMaskedLM._from_config(cfg, attn_implementation=rt.attn)
    return model.to(rt.device)


def _epoch(
    model: Any,
    opt: Any,
    sched: Any,
    x: np.ndarray,
    epoch: int,
    step: int,
    config: TrainConfig,
    rt: loop.Runtime,
    bar: Any,
) -> dict[str, float]:
    """One pre-training epoch (or up to ``max_steps``); returns its history row. ``model`` may
    be a ``torch.compile`` wrapper."""
    import torch

    order = data.epoch_order(np.zeros(len(x), np.int64), epoch, config.seed, "none")
    losses, correct, masked, seen, t0 = [], 0, 0, 0, time.perf_counter()
    model.train()
    for b in range(math.ceil(len(x) / config.batch_size)):
        if config.max_steps and step >= config.max_steps:
            break
        ids = x[order[b * config.batch_size : (b + 1) * config.batch_size]]
        rng = np.random.default_rng([config.seed, epoch, b])
        inputs, targets = data.mask_tokens(ids, rng, config.mask_prob, model.config.vocab_size)
        batch = {k: v.to(rt.device) for k, v in data.collate(inputs).items()}
        width = batch["input_ids"].shape[1]
        tgt = torch.from_numpy(data.fit_width(targets, width, data.IGNORE_INDEX)).to(rt.device)
        with loop.autocast(rt):
            loss, ok, n = mlm_loss(model, batch, tgt)
        loop.optimizer_step(model, opt, sched, loss, config.grad_clip)
        losses.append(float(loss.detach()))
        loop.check_loss(losses[-1], step + 1, config.lr, "masked k-mer loss")
        correct, masked, seen, step = correct + ok, masked + n, seen + len(ids), step + 1
        bar.update()
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}", acc=f"{correct / max(masked, 1):.3f}")
    secs = time.perf_counter() - t0
    return {
        "epoch": epoch + 1,
        "step": step,
        "train_loss": float(np.mean(losses)) if losses else math.nan,
        "masked_accuracy": correct / max(masked, 1),
        "lr": sched.get_last_lr()[0],
        "seconds": secs,
        "spikes_per_s": seen / secs,
    }


def pretrain(
    prepared_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    config: TrainConfig,
    progress: bool = True,
) -> Path:
    """Pre-train an encoder by masked k-mer modelling; returns ``out_dir``.

    Uses ``preset``, the tokenization options, ``epochs``, ``batch_size``, the optimiser
    options, ``mask_prob``, ``seed``, ``max_steps``, ``device``, ``precision``, ``threads`` and
    ``compile``
    of ``config`` (``balance``, ``patience`` and ``init_from`` do not apply).
    """
    import torch

    out, prepared = Path(out_dir), Path(prepared_dir)
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    rt = loop.runtime(config)
    loop.seed_everything(config.seed)
    seqs = data.sequences_for(data.load_pretraining_rows(prepared), config.token_mode)
    vocab = build_vocabulary([seqs], loop.kmer_spec(config), config.min_count)
    x = vocab.encode(seqs)
    model = _build(config, vocab, loop.n_positions_for(vocab, seqs), rt)
    n_batches = math.ceil(len(x) / config.batch_size)
    opt, sched = loop.build_optimizer(model, config, config.epochs * n_batches)
    out.mkdir(parents=True, exist_ok=True)
    history: list[dict[str, float]] = []
    bar = loop.progress_bar(config.epochs * n_batches, 0, "pretrain", progress)
    # the compile wrapper shares the model's parameters; the plain model is what is saved
    forward = torch.compile(model) if config.compile else model
    with bar, loop.quiet_transformers():
        for epoch in range(config.epochs):
            step = history[-1]["step"] if history else 0
            if config.max_steps and step >= config.max_steps:
                break
            history.append(_epoch(forward, opt, sched, x, epoch, int(step), config, rt, bar))
            _save(model, vocab, config, history, len(x), out)
    inputs = describe_inputs([data.spikes_path(prepared)])
    outputs = ["config.json", WEIGHTS, *TOKENIZER_FILES, PRETRAIN_META, HISTORY]
    write_manifest(out, "pretrain", inputs, config, outputs, summary=history[-1])
    return out


def _save(
    model: Any,
    vocab: Vocabulary,
    config: TrainConfig,
    history: list[dict[str, float]],
    n_spikes: int,
    out: Path,
) -> None:
    tmp = out / ".saving"
    tmp.mkdir(exist_ok=True)
    model.save_pretrained(str(tmp), safe_serialization=True)
    for name in ("config.json", WEIGHTS):
        os.replace(tmp / name, out / name)
    for leftover in tmp.iterdir():
        leftover.unlink()
    tmp.rmdir()
    vocab.save(out)
    write_tsv(out / HISTORY, HISTORY_COLUMNS, [[r[c] for c in HISTORY_COLUMNS] for r in history])
    meta = {
        "preset": config.preset,
        "train_config": dataclasses.asdict(config),
        "token": {"k": config.k, "stride": config.stride, "mode": config.token_mode},
        "n_spikes": n_spikes,
        "epochs_done": len(history),
        "final_train_loss": history[-1]["train_loss"],
        "final_masked_accuracy": history[-1]["masked_accuracy"],
    }
    write_json(out / PRETRAIN_META, meta)
