"""``bertgeom run --config pipeline.toml``: chain stages into one run directory.

The config has a ``[run]`` table (``dir``: the run directory; ``stages``: which stages, in
order, from simulate, prepare, train, evaluate, analyze, report; ``inputs`` / ``labels``: the
genomes and labels for ``prepare`` when ``simulate`` is not run) and one table per stage with
that stage's options (``[simulate]``, ``[prepare]``, ``[train]``, ``[analyze]``; ``[evaluate]``
takes ``split`` and ``batch_size``). Stage outputs go to fixed sub-folders of the run
directory: ``data``, ``prepared``, ``model``, ``evaluate``, ``analyze`` and ``report.html``.

A stage is skipped when it is up to date: its ``manifest.json`` exists, records the same
resolved config, and the sha256 of every input it records still matches. An interrupted
``train`` resumes from its last checkpoint. ``src/bertgeom/resources/demo.toml`` is the demo's
config and an example.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bertgeom.config import (
    AnalyzeConfig,
    PrepareConfig,
    SimulateConfig,
    TrainConfig,
    read_toml,
    resolve,
)
from bertgeom.errors import ConfigError
from bertgeom.io.files import sha256_file
from bertgeom.io.outputs import check_output_path, check_outputs

STAGES = ("simulate", "prepare", "train", "evaluate", "analyze", "report")
FOLDERS = {
    "simulate": "data",
    "prepare": "prepared",
    "train": "model",
    "evaluate": "evaluate",
    "analyze": "analyze",
}


def up_to_date(out_dir: Path, config: Any) -> bool:
    """Whether ``out_dir/manifest.json`` records ``config`` and unchanged inputs and outputs."""
    path = out_dir / "manifest.json"
    if not path.is_file():
        return False
    try:  # a damaged manifest: the stage runs again
        manifest = json.loads(path.read_text(encoding="utf-8"))
        recorded = manifest.get("config") or {}
        if dataclasses.is_dataclass(config):
            # configs with nested options save them resolved (every option of every measure)
            resolved = getattr(config, "resolved", None)
            mine = resolved() if resolved is not None else dataclasses.asdict(config)
            if json.loads(json.dumps(mine, default=str)) != recorded:
                return False
        elif any(recorded.get(k) != v for k, v in dict(config).items()):  # options given match
            return False
        for item in manifest.get("inputs", []) + [
            {"path": str(out_dir / o["path"]), "sha256": o["sha256"]}
            for o in manifest.get("outputs", [])
        ]:
            p = Path(item["path"])
            if not p.is_file() or sha256_file(p) != item["sha256"]:
                return False
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False
    return True


def _stage_runners(
    doc: dict[str, Any], run_dir: Path, progress: bool, say: Callable[[str], None]
) -> dict[str, Callable]:
    from bertgeom.pipeline import analyze, evaluate, prepare, simulate, train

    d = {k: run_dir / v for k, v in FOLDERS.items()}
    run_cfg = doc.get("run", {})
    sim = resolve(SimulateConfig, doc.get("simulate"), source="[simulate]")
    prep = resolve(PrepareConfig, doc.get("prepare"), source="[prepare]")
    tr = resolve(TrainConfig, doc.get("train"), source="[train]")
    an = resolve(AnalyzeConfig, doc.get("analyze"), source="[analyze]")
    ev = dict(doc.get("evaluate", {}))
    unknown = set(ev) - {"split", "batch_size"}
    if unknown:
        raise ConfigError(f"[evaluate]: unknown keys {sorted(unknown)} (valid: batch_size, split)")
    if "simulate" in run_cfg.get("stages", STAGES):
        genomes, labels = (
            [d["simulate"] / simulate.GENOMES_FILE],
            d["simulate"] / simulate.LABELS_FILE,
        )
    else:
        genomes = [Path(p) for p in run_cfg.get("inputs", [])]
        labels = Path(run_cfg["labels"]) if run_cfg.get("labels") else None
        if not genomes:
            raise ConfigError("[run]: 'inputs' (genome files) is needed when simulate is not run")
        check_outputs([*genomes, labels], d.values())  # before any stage runs

    def run_train() -> None:
        import shutil

        from bertgeom.model.checkpoint import StaleCheckpointError
        from bertgeom.model.train import CHECKPOINT

        ckpt = d["train"] / CHECKPOINT
        if ckpt.is_file():
            try:  # an interrupted run with this config and data: continue it exactly
                train.run(d["prepare"], d["train"], tr, resume=True, progress=progress)
                return
            except StaleCheckpointError as err:  # config or data changed: train again
                say(f"train: not resuming ({err}); training from scratch")
                shutil.rmtree(ckpt.parent)
        train.run(d["prepare"], d["train"], tr, resume=False, progress=progress)

    return {
        "simulate": (sim, lambda: simulate.run(d["simulate"], sim, progress=progress)),
        "prepare": (
            prep,
            lambda: prepare.run(genomes, d["prepare"], prep, labels_path=labels, progress=progress),
        ),
        "train": (tr, run_train),
        "evaluate": (
            ev,
            lambda: evaluate.run(
                d["train"],
                d["prepare"],
                d["evaluate"],
                split=ev.get("split", "test"),
                batch_size=int(ev.get("batch_size", 64)),
            ),
        ),
        "analyze": (
            an,
            lambda: analyze.run(d["train"], d["prepare"], d["analyze"], an, progress=progress),
        ),
    }


def run(
    config_path: str | os.PathLike,
    run_dir: str | os.PathLike | None = None,
    progress: bool = True,
    force: bool = False,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Run the stages of ``config_path`` (``run_dir`` overrides ``[run] dir``); returns the
    run directory."""
    say = log or (lambda msg: print(msg, file=sys.stderr))
    doc = read_toml(config_path)
    if run_dir is not None:
        doc.setdefault("run", {})["dir"] = str(run_dir)
    unknown = set(doc) - {"run", *STAGES}
    if unknown:
        raise ConfigError(
            f"{config_path}: unknown tables {sorted(unknown)} (valid: run, {', '.join(STAGES)})"
        )
    run_cfg = doc.get("run", {})
    if "dir" not in run_cfg:
        raise ConfigError(f"{config_path}: [run] needs 'dir', the run directory")
    stages = list(run_cfg.get("stages", STAGES))
    bad = [s for s in stages if s not in STAGES]
    if bad:
        raise ConfigError(f"{config_path}: unknown stages {bad} (valid: {', '.join(STAGES)})")
    out_root = Path(run_cfg["dir"])
    check_output_path(out_root)
    out_root.mkdir(parents=True, exist_ok=True)
    runners = _stage_runners(doc, out_root, progress, say)
    for stage in stages:
        if stage == "report":
            from bertgeom.pipeline import report

            report.run(out_root, out_root / "report.html")
            say(f"report: {out_root / 'report.html'}")
            continue
        config, fn = runners[stage]
        out = out_root / FOLDERS[stage]
        if not force and up_to_date(out, config):
            say(f"{stage}: up to date ({out})")
            continue
        say(f"{stage}: running -> {out}")
        fn()
    return out_root
