"""The command line as a cluster user meets it: help with defaults on every option, -v/-q,
``python -m bertgeom``, ``--version --verbose`` and shell completion from the parser."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bertgeom.cli import build_parser, main
from bertgeom.completion import completion_script

SRC = Path(__file__).resolve().parents[2] / "src"


def walk(parser, path=()):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from walk(child, (*path, name))


def test_every_option_has_help_that_states_its_default():
    missing, no_default = [], []
    for path, parser in walk(build_parser()):
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
                continue
            name = " ".join([*path, action.dest])
            if not action.help:
                missing.append(name)
            elif (
                action.option_strings
                and action.dest != "version"
                and "default" not in action.help
                and "required" not in action.help
            ):
                no_default.append(name)
    assert not missing, f"no help: {missing}"
    assert not no_default, f"help without its default: {no_default}"


def test_quiet_and_verbose_go_before_or_after_the_command(tmp_path, capsys):
    out = tmp_path / "sim"
    assert main(["-qq", "simulate", "--out", str(out), "--per-class", "1"]) == 0
    assert capsys.readouterr() == ("", "")  # nothing but the files
    assert main(["simulate", "--out", str(out), "--per-class", "1", "-qq"]) == 0
    assert capsys.readouterr() == ("", "")
    assert main(["-q", "simulate", "--out", str(out), "--per-class", "1"]) == 0
    assert capsys.readouterr() == (
        "simulated 8 genomes -> " + f"{out}/genomes.fasta.gz, labels.tsv, truth.tsv\n",
        "",
    )  # no progress
    assert main(["simulate", "--out", str(out), "--per-class", "1"]) == 0
    captured = capsys.readouterr()
    assert "simulated 8 genomes" in captured.out
    assert captured.err.startswith("simulate: done, 8/8 genomes (100%)")  # a log: plain line


def test_version_and_version_verbose(capsys):
    from bertgeom import __version__

    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"bertgeom {__version__}\n"
    assert main(["--version", "--verbose"]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = [ln.split()[0] for ln in lines]
    assert names[:5] == ["bertgeom", "python", "torch", "transformers", "mappy"]
    assert lines[-1].startswith("default model sc2-spike-small: ")


def test_python_dash_m_runs_the_cli():
    env = os.environ | {"PYTHONPATH": str(SRC)}
    done = subprocess.run(
        [sys.executable, "-m", "bertgeom", "--version"], capture_output=True, text=True, env=env,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0 and done.stdout.startswith("bertgeom ")


def test_no_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main([])
    assert exc.value.code == 2
    assert "a COMMAND is required" in capsys.readouterr().err


def bash_complete(script, words):
    """COMPREPLY of the generated function for the words typed so far (the last is partial)."""
    line = " ".join(f"'{w}'" for w in words)
    code = (
        f"{script}\nCOMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; "
        '_bertgeom_complete; printf "%s\\n" "${COMPREPLY[@]}"'
    )
    done = subprocess.run(["bash", "-c", code], capture_output=True, text=True, check=True)
    return done.stdout.split()


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_bash_completion_is_generated_from_the_parser(tmp_path, capsys):
    assert main(["completion", "bash"]) == 0
    script = capsys.readouterr().out
    assert script == completion_script(build_parser(), "bash")
    path = tmp_path / "bertgeom.bash"
    path.write_text(script)
    subprocess.run(["bash", "-n", str(path)], check=True)
    assert bash_complete(script, ["bertgeom", "pre"]) == ["prepare", "pretrain", "predict"]
    assert bash_complete(script, ["bertgeom", "predict", "--output-f"]) == ["--output-format"]
    assert bash_complete(script, ["bertgeom", "predict", "--output-format", ""]) == [
        "tsv", "csv", "ndjson", "json",
    ]  # fmt: skip
    assert "--name" in bash_complete(script, ["bertgeom", "models", "install", "--"])
    # every subcommand and every option of predict is offered
    top = set(bash_complete(script, ["bertgeom", ""]))
    for path, _ in walk(build_parser()):
        if len(path) == 1:
            assert path[0] in top
    offered = set(bash_complete(script, ["bertgeom", "predict", "-"]))
    predict = dict(walk(build_parser()))[("predict",)]
    assert {o for a in predict._actions for o in a.option_strings} <= offered


def test_zsh_completion_wraps_the_bash_script(capsys):
    assert main(["completion", "zsh"]) == 0
    script = capsys.readouterr().out
    assert "bashcompinit" in script and "complete -o filenames -F _bertgeom_complete" in script
