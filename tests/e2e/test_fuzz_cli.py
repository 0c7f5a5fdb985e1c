"""Fuzzing the CLI: damaged artefacts and hostile arguments for every subcommand.

Whatever the input, ``bertgeom`` must end with exit status 0 or 2, write at most one ``error:``
line (other lines on standard error are warnings), never a traceback, and leave its inputs
byte for byte as they were. Options and their kinds come from the argument parser itself, so
a new option is fuzzed without editing this file. Most cases run ``bertgeom.cli.main``
in-process (a subprocess costs ~2 s to start); a few run the real command.

Example counts are kept small (the module runs in about two minutes on two CPU cores);
``BERTGEOM_FUZZ_EXAMPLES`` raises them for a longer local session.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bertgeom.cli import build_parser, main
from bertgeom.io.manifest import write_manifest

SCALE = int(os.environ.get("BERTGEOM_FUZZ_EXAMPLES", "1"))
FUZZ = settings(
    deadline=None,
    derandomize=True,  # the same examples in CI every time
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    database=None,
)

#: Options left out of the argument fuzz, with why: valid values of these make a run long
#: (a full training, thousands of tokens, a process per job), or change an input on purpose
#: (``evaluate --refit`` refits the model's calibration), or are flags with no value.
SLOW_OR_WRITING = {
    "train": {"--preset", "--epochs", "--max-steps", "--k", "--stride", "--compile", "--quiet"},
    "pretrain": {"--preset", "--epochs", "--max-steps", "--k", "--stride", "--compile", "--quiet"},
    "evaluate": {"--refit"},
    # --engine ray starts a local Ray cluster (tests/integration/test_scaleout_ray.py covers it)
    "predict": {"--quiet", "--engine"},
    "prepare": {"--quiet"},
    "analyze": {"--max-genomes", "--keep-maps", "--map-methods", "--compat", "--quiet", "--engine"},
    "simulate": {"--per-class", "--quiet"},
    "run": {"--quiet", "--force"},
    "demo": {"--out", "--quiet", "--force"},  # any valid --out runs the whole demo
    "analyze-encoder": {"--quiet", "--embeddings-maps"},
}


def tree_sha(*paths: Path) -> str:
    h = hashlib.sha256()
    for path in paths:
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for p in files:
            h.update(str(p).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def call(args: list[str]) -> tuple[int, str]:
    """``main(args)`` with standard output and error captured; (status, stderr)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:  # argparse
            code = int(exc.code or 0)
    return code, err.getvalue()


def check_outcome(code: int, err: str, args: list[str]) -> None:
    assert code in (0, 2), (args, code, err)
    assert "Traceback" not in err, (args, err)
    lines = err.splitlines()
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors) == (1 if code == 2 else 0), (args, err)
    others = [ln for ln in lines if not ln.startswith("error: ")]
    assert all("warning" in ln or ln.startswith("note: ") for ln in others), (args, err)


def _tiny_encoder(out: Path) -> Path:
    """A randomly initialised 2-layer BertModel (no head) with a word tokenizer."""
    import torch
    import transformers

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "dog", "ran", "a", "cat", "sat"]
    words += ["cold", "rain", "fell"]
    cfg = transformers.BertConfig(
        vocab_size=len(words), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=16,
    )  # fmt: skip
    torch.manual_seed(0)
    transformers.BertModel(cfg).save_pretrained(out)
    transformers.BertTokenizer(vocab={w: i for i, w in enumerate(words)}).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def inputs(tiny_model, ci_prepared, shared_data, tmp_path_factory):
    """Read-only inputs: a model with its manifest, a prepared folder, a FASTA, labels."""
    root = tmp_path_factory.mktemp("fuzz_inputs")
    model = root / "model"
    shutil.copytree(tiny_model, model, ignore=shutil.ignore_patterns("manifest.json"))
    write_manifest(model, "train", [], {}, sorted(p.name for p in model.iterdir() if p.is_file()))
    prepared = root / "prepared"
    shutil.copytree(ci_prepared, prepared)
    with gzip.open(shared_data / "ci_genomes.fasta.gz", "rt") as fh:
        lines = fh.read().splitlines()
    fasta = root / "in.fasta"
    fasta.write_text("\n".join(lines[:4]) + "\n")
    labels = root / "labels.tsv"
    labels.write_text(f"seq_id\tclass\n{lines[0][1:]}\talpha\n{lines[2][1:]}\tdelta\n")
    config = root / "c.toml"
    config.write_text("[prepare]\njobs = 1\n")
    encoder, texts = _tiny_encoder(root / "encoder"), root / "texts.tsv"
    texts.write_text("the dog ran\tpets\na cat sat\tpets\ncold rain fell\tweather\n")
    return {
        "model": model,
        "prepared": prepared,
        "fasta": fasta,
        "labels": labels,
        "config": config,
        "encoder": encoder,
        "texts": texts,
    }


# --- damaged artefacts -------------------------------------------------------------------------

DAMAGES = ("truncate", "empty", "garbage", "bitflip", "delete", "folder", "append")


def damage(path: Path, how: str, where: float, seed: int) -> None:
    data = path.read_bytes() if path.is_file() else b""
    cut = int(len(data) * where)
    if how == "truncate":
        path.write_bytes(data[:cut])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "garbage":
        path.write_bytes(hashlib.sha256(str(seed).encode()).digest() * (1 + seed % 64))
    elif how == "bitflip" and data:
        flipped = bytearray(data)
        flipped[min(cut, len(data) - 1)] ^= 1 << (seed % 8)
        path.write_bytes(bytes(flipped))
    elif how == "delete":
        path.unlink()
    elif how == "folder":
        path.unlink()
        path.mkdir()
    elif how == "append":
        path.write_bytes(data + b"\xff\xfe\x00garbage")


MODEL_FILES = (
    "model.safetensors", "config.json", "vocab.txt", "tokenizer_config.json",
    "bertgeom_tokens.json", "bertgeom_model.json", "manifest.json",
)  # fmt: skip


@given(
    name=st.sampled_from(MODEL_FILES),
    how=st.sampled_from(DAMAGES),
    where=st.floats(0, 1),
    seed=st.integers(0, 2**16),
    drop_manifest=st.booleans(),
)
@settings(FUZZ, max_examples=28 * SCALE)
def test_a_damaged_model_folder_is_one_line_or_a_valid_run(
    inputs, name, how, where, seed, drop_manifest
):
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "model"
        shutil.copytree(inputs["model"], model)
        if drop_manifest and name != "manifest.json":
            (model / "manifest.json").unlink()
        damage(model / name, how, where, seed)
        before = tree_sha(model, inputs["fasta"])
        args = ["predict", model, inputs["fasta"], "--out", Path(tmp) / "p.tsv", "--quiet"]
        code, err = call(args)
        check_outcome(code, err, args)
        assert tree_sha(model, inputs["fasta"]) == before
        if code == 2:
            assert not (Path(tmp) / "p.tsv").exists()


@given(
    name=st.sampled_from(("spikes.parquet", "manifest.json", "counts.tsv")),
    how=st.sampled_from(DAMAGES),
    where=st.floats(0, 1),
    seed=st.integers(0, 2**16),
    stage=st.sampled_from(("evaluate", "train")),
)
@settings(FUZZ, max_examples=10 * SCALE)
def test_a_damaged_prepared_folder_is_one_line_or_a_valid_run(
    inputs, name, how, where, seed, stage
):
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared"
        shutil.copytree(inputs["prepared"], prepared)
        damage(prepared / name, how, where, seed)
        before = tree_sha(prepared, inputs["model"])
        out = Path(tmp) / "out"
        if stage == "evaluate":
            args = ["evaluate", inputs["model"], prepared, "--out", out]
        else:
            args = ["train", prepared, "--out", out, "--preset", "tiny", "--k", "21"]
            args += ["--stride", "21", "--max-steps", "1", "--epochs", "1", "--quiet"]
        code, err = call(args)
        check_outcome(code, err, args)
        assert tree_sha(prepared, inputs["model"]) == before
        if code == 2:
            assert not out.exists() or any(out.iterdir())  # no empty folder left behind


def test_a_damaged_ood_detector_is_one_line(inputs, tmp_path):
    import numpy as np

    cases = {
        "text": b"not an npz",
        "pickled": None,
        "nan": {"centroids": np.full((2, 32), np.nan)},
        "shape": {"centroids": np.zeros((2, 7))},
    }
    for what, content in cases.items():
        model = tmp_path / f"m_{what}"
        shutil.copytree(inputs["model"], model)
        (model / "manifest.json").unlink()
        path = model / "ood.npz"
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            arrays = {
                "centroids": np.zeros((2, 32)),
                "precision": np.eye(32),
                "threshold": np.array(1.0),
                "min_confidence": np.array(0.5),
            } | (content or {"centroids": np.array([object()], dtype=object)})
            with open(path, "wb") as fh:
                np.savez(fh, **arrays)
        args = ["predict", model, inputs["fasta"], "--out", tmp_path / "p.tsv", "--quiet"]
        code, err = call(args)
        assert code == 2, (what, err)
        check_outcome(code, err, args)
        assert f"{path}: " in err


# --- hostile arguments -------------------------------------------------------------------------


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _options(command: str) -> list[argparse.Action]:
    parser = _subcommands()[command]
    skip = SLOW_OR_WRITING.get(command, set())
    return [
        a
        for a in parser._actions
        if a.option_strings
        and a.option_strings[0] not in skip
        and a.nargs != 0
        and a.option_strings[0] not in ("-h", "--help")
    ]


NUMBERS = ("0", "-1", "-0", "nan", "inf", "-inf", "1e999", "-1e-300", "2e-5", "x", "", "0x10")
INTEGERS = ("0", "-1", "-9223372036854775809", str(2**64), "1.5", "x", "", "1e3", "007")


def _text(inputs: dict[str, Path], tmp: Path) -> st.SearchStrategy[str]:
    # relative values resolve inside the example's own folder (the test changes into it);
    # nothing above it ("/", "..") is offered: a valid output there would really be written
    return st.sampled_from(
        [
            "", "-", ".", "bogus", "cuda:99", "mps", "a" * 300, "x\ty", "é", "\x00",
            "/nonexistent/dir/x", str(tmp / "new" / "deep"), str(tmp / "a_file"), str(tmp),
            *(str(p) for p in inputs.values()), str(inputs["model"] / "config.json"),
        ]
    )  # fmt: skip


def _value(action: argparse.Action, inputs: dict[str, Path], tmp: Path) -> st.SearchStrategy:
    if action.choices:
        return st.sampled_from([*action.choices, "bogus", ""])
    if action.type is int:
        hostile = st.integers(-(2**70), -1) | st.integers(2**31, 2**70)
        return st.one_of(st.sampled_from(INTEGERS), hostile.map(str))
    if action.type is float:
        return st.one_of(
            st.sampled_from(NUMBERS), st.floats(allow_nan=True, allow_infinity=True).map(repr)
        )
    return _text(inputs, tmp)


def _baseline(command: str, inputs: dict[str, Path], out: Path) -> list[str]:
    """A valid, cheap command line that the fuzzed option is appended to (argparse: last
    one wins)."""
    m, p, f = (str(inputs[k]) for k in ("model", "prepared", "fasta"))
    fast = ["--preset", "tiny", "--k", "21", "--stride", "21", "--max-steps", "1", "--epochs", "1"]
    return {
        "prepare": ["prepare", f, "--out", str(out), "--quiet"],
        "train": ["train", p, "--out", str(out), *fast, "--quiet"],
        "pretrain": ["pretrain", p, "--out", str(out), *fast, "--quiet"],
        "evaluate": ["evaluate", m, p, "--out", str(out)],
        "predict": ["predict", m, f, "--out", str(out), "--quiet"],
        "analyze": [
            *("analyze", m, p, "--out", str(out), "--quiet", "--max-genomes", "4"),
            *("--map-methods", "", "--keep-maps", "0", "--only", "cone"),
        ],
        "report": ["report", str(inputs["prepared"].parent), "--out", str(out) + ".html"],
        "analyze-encoder": [
            *("analyze-encoder", str(inputs["encoder"]), str(inputs["texts"])),
            *("--out", str(out), "--quiet", "--only", "cone"),
        ],
        "simulate": ["simulate", "--out", str(out), "--per-class", "1", "--quiet"],
        "run": ["run", "--config", str(inputs["config"]), "--quiet"],
        "demo": ["demo", "--out", str(out), "--quiet"],
    }[command]


#: Fewer examples for the commands whose valid runs are slow.
EXAMPLES = {"train": 6, "pretrain": 3, "analyze": 3, "evaluate": 6, "simulate": 3}


@pytest.mark.parametrize("command", sorted(_subcommands()))
def test_hostile_arguments_are_one_line_or_a_valid_run(inputs, command):
    options = _options(command)
    if not options:
        pytest.skip(f"{command} has no value options to fuzz")

    @settings(FUZZ, max_examples=EXAMPLES.get(command, 10) * SCALE)
    @given(data=st.data())
    def fuzz(data):
        with tempfile.TemporaryDirectory() as tmp_name:
            tmp = Path(tmp_name)
            (tmp / "a_file").write_text("x\n")
            action = data.draw(st.sampled_from(options), label="option")
            value = data.draw(_value(action, inputs, tmp), label="value")
            args = [*_baseline(command, inputs, tmp / "out"), action.option_strings[0], value]
            # what the command reads; an --out naming a folder of the same stage is its output
            read = [p for p in inputs.values() if action.dest != "out" or str(p) != value]
            before = tree_sha(*read)
            with contextlib.chdir(tmp):
                code, err = call(args)
            check_outcome(code, err, args)
            assert tree_sha(*read) == before, args

    fuzz()


@given(
    positional=st.sampled_from(["model", "genomes"]),
    value=st.sampled_from(
        ["", "/", "/dev/null", "/nonexistent", "empty", "binary", "folder"]
    ),  # inputs only
)
@settings(FUZZ, max_examples=12 * SCALE)
def test_hostile_positional_inputs_are_one_line(inputs, positional, value):
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "empty").write_bytes(b"")
        (tmp / "binary").write_bytes(bytes(range(256)) * 4)
        (tmp / "folder").mkdir()
        path = str(tmp / value) if value in ("empty", "binary", "folder") else value
        model = path if positional == "model" else str(inputs["model"])
        genomes = path if positional == "genomes" else str(inputs["fasta"])
        args = ["predict", model, genomes, "--out", str(tmp / "p.tsv"), "--quiet"]
        with contextlib.chdir(tmp):
            code, err = call(args)
        check_outcome(code, err, args)
        assert code == 2


# --- the real command, in a subprocess ---------------------------------------------------------


def _command(*args: object) -> list[str]:
    return [sys.executable, "-m", "bertgeom.cli", *map(str, args)]


def _env() -> dict[str, str]:
    src = str(Path(__file__).resolve().parents[2] / "src")
    return os.environ | {"PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}


def test_the_command_prints_one_line_for_a_truncated_model(inputs, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(inputs["model"], model)
    (model / "manifest.json").unlink()
    data = (model / "model.safetensors").read_bytes()
    (model / "model.safetensors").write_bytes(data[: len(data) // 2])
    cmd = _command("predict", model, inputs["fasta"], "--out", tmp_path / "p.tsv", "--quiet")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"error: {model / 'model.safetensors'}: damaged")
    assert len(proc.stderr.splitlines()) == 1


def test_predict_into_a_closed_pipe_ends_quietly(inputs):
    cmd = _command("predict", inputs["model"], inputs["fasta"], "--out", "-", "--quiet")
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first row (`| head -0`)
    with os.fdopen(write, "wb") as out:
        proc = subprocess.run(
            cmd, stdout=out, stderr=subprocess.PIPE, text=True, env=_env(), timeout=300
        )
    assert proc.returncode == 0, proc.stderr
    assert all("warning" in ln for ln in proc.stderr.splitlines()), proc.stderr


def test_two_concurrent_prepares_into_one_folder_never_corrupt_it(shared_data, tmp_path):
    from bertgeom.io.manifest import read_manifest, verify_artifact

    out = tmp_path / "prep"
    cmd = _command("prepare", shared_data / "ci_genomes.fasta.gz", "--out", out, "--quiet")
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env())
        for _ in range(2)
    ]
    results = [(p.wait(timeout=600), p.stderr.read().decode()) for p in procs]
    for p in procs:
        p.stdout.close()
        p.stderr.close()
    assert sorted(code for code, _ in results)[0] == 0, results  # one wins (or both, in turn)
    for code, err in results:
        assert code in (0, 2) and "Traceback" not in err, err
        if code == 2:
            assert "another bertgeom run" in err and len(err.splitlines()) == 1, err
    for item in read_manifest(out)["outputs"]:
        verify_artifact(out / item["path"])  # what is there is what one run wrote
    assert sorted(p.name for p in out.iterdir()) == [
        "counts.tsv",
        "manifest.json",
        "spikes.parquet",
    ]
