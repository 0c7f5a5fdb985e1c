"""``bertgeom models install RUN_DIR``: a trained run's model as a named, versioned, installed
model with float16 weights, evaluated as stored, and a model card.

From a run directory of ``bertgeom run`` (``prepared/`` and ``model/``), writes
``<models folder>/<name>/``: ``config.json`` and ``model.safetensors`` (float16: half the size;
loaded as float32 by bertgeom), the tokenizer files, ``ood.npz``, ``history.tsv``,
``bertgeom_model.json`` (the training metadata plus ``name``, ``version``, ``weights_dtype``,
``weights_sha256`` and ``card``, the facts of the card), ``test_predictions.tsv`` (per test
genome: ``seq_id``, ``predicted_class``, ``probability``) and ``README.md``, the model card.
The test metrics are measured on the stored float16 weights (``evaluate`` on the run's test
split). The folder is assembled beside its final name and renamed into place at the end.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bertgeom import __version__
from bertgeom.errors import ArtifactError
from bertgeom.io.files import read_tsv, sha256_file, write_json, write_text, write_tsv
from bertgeom.model.shipped import DEFAULT_MODEL, check_name, package_models_dir
from bertgeom.model.store import MODEL_META, WEIGHTS, load_model_dir, read_meta

#: Files copied from the trained model directory as they are.
COPIED = ("ood.npz", "history.tsv")
TEST_PREDICTIONS = "test_predictions.tsv"
#: Where the training data came from, unless the caller says (``--provenance``).
DEFAULT_PROVENANCE = "The genomes and labels listed below."


def run(
    run_dir: str | os.PathLike,
    name: str,
    version: str,
    out_root: str | os.PathLike | None = None,
    provenance: str = DEFAULT_PROVENANCE,
    commands: tuple[str, ...] = (),
    device: str = "auto",
    batch_size: int = 64,
    progress: bool = True,
) -> Path:
    """Install ``run_dir``'s model as ``name`` ``version`` under ``out_root`` (default: the
    package's models folder); returns the installed directory."""
    check_name(name)
    check_name(version, "model version")
    run_path = Path(run_dir)
    src, prepared = run_path / "model", run_path / "prepared"
    meta = read_meta(src)
    for needed in (prepared / "manifest.json", src / "manifest.json", src / "ood.npz"):
        if not needed.is_file():
            raise ArtifactError(f"{needed}: no such file (run prepare and train first)")
    root = Path(out_root) if out_root is not None else package_models_dir()
    root.mkdir(parents=True, exist_ok=True)
    dest, tmp = root / name, root / f".{name}.installing"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        _write_half_model(src, tmp)
        for f in COPIED:
            if (src / f).is_file():
                shutil.copy2(src / f, tmp / f)
        sha = sha256_file(tmp / WEIGHTS)
        meta |= {
            "name": name,
            "version": version,
            "weights_dtype": "float16",
            "weights_sha256": sha,
        }
        write_json(tmp / MODEL_META, meta)
        card = _card(run_path, tmp, meta, provenance, commands, device, batch_size)
        write_json(tmp / MODEL_META, meta | {"card": card})
        from bertgeom.report.model_card import render_card

        write_text(tmp / "README.md", render_card(card))
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _write_half_model(src: Path, out: Path) -> None:
    """The model's weights as float16 safetensors, its HF config and its tokenizer files."""
    from bertgeom.model.store import _quiet_transformers

    bundle = load_model_dir(src, device="cpu")
    with _quiet_transformers():
        bundle.model.half().save_pretrained(str(out), safe_serialization=True)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(out / WEIGHTS, 0o666 & ~umask)  # save_pretrained's temporary file mode otherwise
    bundle.vocab.save(out)


def _card(
    run_path: Path,
    model_dir: Path,
    meta: dict[str, Any],
    provenance: str,
    commands: tuple[str, ...],
    device: str,
    batch_size: int,
) -> dict[str, Any]:
    """The facts of the model card; evaluates the stored weights on the test split."""
    from bertgeom.pipeline import evaluate

    eval_dir = run_path / "install_evaluate"
    metrics = evaluate.run(model_dir, run_path / "prepared", eval_dir, device=device,
                           batch_size=batch_size)  # fmt: skip
    raw = json.loads((eval_dir / "metrics.json").read_text(encoding="utf-8"))
    header, rows = read_tsv(eval_dir / "predictions.tsv")
    col = {c: i for i, c in enumerate(header)}
    write_tsv(
        model_dir / TEST_PREDICTIONS,
        ["seq_id", "predicted_class", "probability"],
        # the model's own calls (the card's metrics are the model's, before the constellation
        # check that predict applies)
        (
            [
                r[col["seq_id"]],
                r[col.get("model_class", col["predicted_class"])],
                r[col["probability"]],
            ]
            for r in rows
        ),
    )
    n_ood, n_flagged, method = _count_ood(model_dir, run_path / "prepared", device, batch_size)
    prep = json.loads((run_path / "prepared" / "manifest.json").read_text(encoding="utf-8"))
    train = json.loads((run_path / "model" / "manifest.json").read_text(encoding="utf-8"))
    cfg = meta["train_config"]
    bundle_cfg = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    vocab_size = len((model_dir / "vocab.txt").read_text(encoding="utf-8").splitlines())
    pcfg = prep["config"]
    qc_keys = [k for k in pcfg if k.startswith(("max_", "min_"))]
    return {
        "name": meta["name"],
        "version": meta["version"],
        "default": meta["name"] == DEFAULT_MODEL,
        "classes": list(meta["labels"]),
        "architecture": {
            "preset": meta["preset"],
            "layers": bundle_cfg["num_hidden_layers"],
            "hidden": bundle_cfg["hidden_size"],
            "heads": bundle_cfg["num_attention_heads"],
            "parameters": _n_parameters(model_dir),
            "k": meta["token"]["k"],
            "stride": meta["token"]["stride"],
            "token_mode": meta["token"]["mode"],
            "vocab_size": vocab_size,
        },
        "provenance": provenance,
        "inputs": prep["inputs"],
        "split": {
            "seed": pcfg["seed"],
            "val_fraction": pcfg["val_fraction"],
            "test_fraction": pcfg["test_fraction"],
            "per_class": prep["summary"]["per_class"],
        },
        "training": {
            "epochs": cfg["epochs"],
            "batch_size": cfg["batch_size"],
            "lr": cfg["lr"],
            "seed": cfg["seed"],
            "best_epoch": meta["best_epoch"],
            "best_val_macro_f1": meta["best_val_macro_f1"],
            "versions": {
                k: v
                for k, v in train.get("versions", {}).items()
                if k in ("python", "bertgeom", "torch", "transformers", "numpy", "mappy")
            },
        },
        "test": {
            "split": "test",
            "n": metrics.n,
            "accuracy": metrics.accuracy,
            "macro_f1": metrics.macro_f1,
            "micro_f1": metrics.micro_f1,
            "nll": metrics.nll,
            "ece": metrics.reliability.ece,
            "ece_uncalibrated": raw["uncalibrated"]["ece"],
            "n_ood": n_ood,
            "n_flagged": n_flagged,
            "per_class": [asdict(c) for c in metrics.per_class],
        },
        "calibration": {
            k: meta["calibration"][k]
            for k in ("temperature", "ood_threshold", "ood_quantile", "ood_min_confidence")
        }
        | {"ood_method": method},
        "qc": {k: pcfg[k] for k in qc_keys},
        "weights": {
            "file": WEIGHTS,
            "dtype": meta["weights_dtype"],
            "bytes": (model_dir / WEIGHTS).stat().st_size,
            "sha256": meta["weights_sha256"],
        },
        "commands": list(commands)
        or [
            f"bertgeom models install {run_path} --name {meta['name']} --version {meta['version']}"
        ],
        "bertgeom_version": __version__,
        "installed": _dt.datetime.now(_dt.UTC).date().isoformat(),
    }


def _n_parameters(model_dir: Path) -> int:
    from safetensors import safe_open

    with safe_open(str(model_dir / WEIGHTS), framework="np") as f:
        return sum(_prod(f.get_slice(k).get_shape()) for k in f.keys())  # noqa: SIM118


def _prod(shape: list[int]) -> int:
    out = 1
    for d in shape:
        out *= int(d)
    return out


def _count_ood(
    model_dir: Path, prepared: Path, device: str, batch_size: int
) -> tuple[int, int, str]:
    """Test genomes the stored model's detector calls out of distribution, test calls flagged
    (a note: detector or constellation check, as ``predict`` writes them), and the method."""
    import numpy as np

    from bertgeom.model.assess import assess_calls
    from bertgeom.model.data import load_split, sequences_for
    from bertgeom.model.infer import infer, resolve_device
    from bertgeom.model.metrics import softmax
    from bertgeom.model.openset import load_detectors

    dev = resolve_device(device)
    bundle = load_model_dir(model_dir, device=dev)
    df = load_split(prepared, "test")
    out = infer(bundle.model, bundle.vocab.encode(sequences_for(df, bundle.vocab.spec.mode)),
                batch_size, dev)  # fmt: skip
    probs = softmax(out.logits.astype(np.float64), bundle.temperature)
    detectors, default = load_detectors(str(model_dir / "ood.npz"))
    ood = detectors[default]
    checks = assess_calls(
        bundle.labels, probs, out.logits, out.cls, sequences_for(df, "aligned"),
        df.mutations.fillna("").tolist(), ood, bundle.temperature,
    )  # fmt: skip
    assert checks.ood is not None  # a detector was given
    return int(checks.ood.sum()), int(checks.flagged.sum()), ood.method
