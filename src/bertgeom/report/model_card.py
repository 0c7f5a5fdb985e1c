"""The model card (``README.md`` of an installed model) as Markdown, from the facts gathered by
``bertgeom models install`` (:mod:`bertgeom.pipeline.ship`): a pure function of a dict."""

from __future__ import annotations

from typing import Any

from bertgeom.model.openset import METHOD_TEXT


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return out


def _f(x: float | None, digits: int = 4) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def render_card(card: dict[str, Any]) -> str:
    """The Markdown model card of ``card`` (the ``card`` entry of ``bertgeom_model.json``)."""
    t = card["test"]
    arch = card["architecture"]
    lines = [
        f"# {card['name']} {card['version']}",
        "",
        f"SARS-CoV-2 variant classifier of the spike gene: bertgeom's `{arch['preset']}` BERT "
        f"({arch['layers']} layers, hidden {arch['hidden']}, {arch['heads']} heads, "
        f"{arch['parameters']:,} parameters) over k-mer tokens (k={arch['k']}, stride "
        f"{arch['stride']}, `{arch['token_mode']}` mode, {arch['vocab_size']:,} tokens), trained "
        f"from scratch. Classes: {', '.join(f'`{c}`' for c in card['classes'])} (`other` = "
        "every lineage that is none of the seven named variants).",
        "",
        (
            "Use: `bertgeom predict genomes.fasta.gz` (this is the default model), or "
            if card.get("default")
            else "Use: "
        )
        + f"`bertgeom predict --model {card['name']}@{card['version']} ...`; every row names the "
        "model and its version. A variant-level classifier, not a Pango lineage assigner; "
        "recombinants were not in the training data (expect `ood` = true or a low margin).",
        "",
        "## Training data and provenance",
        "",
        card["provenance"],
        "",
    ]
    lines += _table(
        ["input", "bytes", "sha256"],
        [[f"`{i['path']}`", f"{i['bytes']:,}", f"`{i['sha256']}`"] for i in card["inputs"]],
    )
    split = card["split"]
    lines += [
        "",
        "## Split",
        "",
        f"Seeded (seed {split['seed']}), stratified by class over labelled genomes that are not "
        f"QC-bad: validation {split['val_fraction']}, test {split['test_fraction']} of each "
        "class; genomes with identical spikes stay in one split (so no test spike was seen in "
        "training).",
        "",
    ]
    lines += _table(
        ["class", "genomes", "train", "val", "test"],
        [[c, n["n"], n["train"], n["val"], n["test"]] for c, n in split["per_class"].items()],
    )
    tr = card["training"]
    lines += [
        "",
        "## Training",
        "",
        f"{tr['epochs']} epochs, batch {tr['batch_size']}, peak learning rate {tr['lr']}, seed "
        f"{tr['seed']}, AdamW with warm-up and class-balanced sampling; best validation "
        f"macro-F1 {_f(tr['best_val_macro_f1'])} at epoch {tr['best_epoch']}. Versions: "
        + ", ".join(f"{k} {v}" for k, v in tr["versions"].items())
        + ".",
        "",
        f"## Test metrics ({t['n']:,} test genomes, weights as shipped)",
        "",
        f"Accuracy {_f(t['accuracy'])}, macro-F1 {_f(t['macro_f1'])}, micro-F1 "
        f"{_f(t['micro_f1'])}, log loss {_f(t['nll'])}.",
        "",
    ]
    lines += _table(
        ["class", "support", "precision", "recall", "specificity", "F1", "ROC-AUC"],
        [
            [
                c["label"], c["support"], _f(c["precision"]), _f(c["recall"]),
                _f(c["specificity"]), _f(c["f1"]), _f(c["roc_auc"]),
            ]
            for c in t["per_class"]
        ],
    )  # fmt: skip
    cal = card["calibration"]
    method = cal.get("ood_method", "mahalanobis_class")
    lines += [
        "",
        "## Calibration and out-of-distribution flag",
        "",
        f"Temperature {_f(cal['temperature'])} (fitted on the validation split). Expected "
        f"calibration error on the test split (15 equal-width bins): {_f(t['ece'])} calibrated, "
        f"{_f(t['ece_uncalibrated'])} before scaling.",
        "",
        f"`ood` is true when the score of the `{method}` detector "
        f"({METHOD_TEXT.get(method, method)}) exceeds "
        f"{_f(cal['ood_threshold'], 2)} (the {cal['ood_quantile']} quantile over the correctly "
        f"classified validation genomes) or the calibrated probability is below "
        f"{cal['ood_min_confidence']}: {t['n_ood']} of {t['n']} test genomes. A call is flagged "
        "(`note`) by the constellation check, or by `ood` unless the constellation confirms it "
        "(every covered core defining site of the class carried, none contradicted): "
        f"{t.get('n_flagged', t['n_ood'])} of {t['n']} test calls flagged.",
        "",
        "## QC thresholds",
        "",
        "Genomes are aligned and QC'd before classification; a `bad` genome is `Unassigned`. "
        "The thresholds used for training and by `predict` (unless its `--config` says "
        "otherwise):",
        "",
    ]
    lines += _table(["threshold", "value"], [[f"`{k}`", v] for k, v in card["qc"].items()])
    w = card["weights"]
    lines += [
        "",
        "## Weights and how they were made",
        "",
        f"`{w['file']}`: {w['dtype']}, {w['bytes']:,} bytes, sha256 `{w['sha256']}` (trained in "
        "float32; the test metrics above are those of the stored weights, loaded as float32). "
        f"Every `predict` row carries `model_id` = `{w['sha256'][:12]}`. Per-genome test "
        "predictions: `test_predictions.tsv` (`seq_id`, `predicted_class`, `probability`).",
        "",
        "Made with:",
        "",
        "```sh",
        *card["commands"],
        "```",
        "",
        f"bertgeom {card['bertgeom_version']}, installed {card['installed']}.",
    ]
    return "\n".join(lines) + "\n"
