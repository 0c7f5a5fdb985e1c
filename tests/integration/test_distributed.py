"""``bertgeom train`` under ``torchrun`` with 2 ranks on CPU (gloo), tiny preset, a few steps.

One launch keeps this module short (starting torch in 3 processes costs more than the
training): tests/integration/ddp_runs.py runs six trainings in one process group, the last as
``python -m bertgeom`` runs (``runpy``), and records every rank's file writes.
The CI data give 34 training rows (31 genomes, 3 hard negatives): with ``--batch-size 11`` an
epoch is 11, 11, 11 and 1 rows, so each rank's slices are uneven and the last batch leaves
rank 1 without a row.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import BertConfig

import bertgeom
from bertgeom.config import TrainConfig
from bertgeom.errors import ConfigError
from bertgeom.model import presets
from bertgeom.model.train import CHECKPOINT, HISTORY
from bertgeom.pipeline import train as train_stage

pytestmark = [
    pytest.mark.distributed,
    pytest.mark.skipif(
        not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
        reason="torch.distributed with gloo is not available in this torch build",
    ),
]

RUNS = Path(__file__).with_name("ddp_runs.py")
LAUNCH_TIMEOUT = 400  # seconds: a hang (a rank left waiting) fails instead of blocking CI
#: the options of every run; k = stride = 21 keeps the rows short (tests/integration/test_train)
COMMON = dict(preset="tiny", k=21, stride=21, threads=1, batch_size=11, lr=5e-3, epochs=2)
EXACT = {  # run name -> its config (dropout 0: comparable with one process)
    "sampler": TrainConfig(**COMMON, max_steps=6, patience=0),
    "weights": TrainConfig(**COMMON, max_steps=4, patience=0, balance="weights"),
}
WITH_DROPOUT = TrainConfig(**COMMON, patience=0)  # whole, then interrupted at 6 and resumed


def _argv(prepared: Path, out: Path, config: TrainConfig, tmp: Path, resume: bool = False):
    """``bertgeom train`` options for ``config`` (the keys without a flag in a TOML file)."""
    toml = tmp / f"{out.name}.toml"
    toml.write_text(f'[train]\npatience = {config.patience}\nbalance = "{config.balance}"\n')
    argv = ["-q", "train", str(prepared), "--out", str(out), "--config", str(toml)]
    for flag in ("preset", "k", "stride", "threads", "batch_size", "lr", "epochs", "max_steps"):
        argv += [f"--{flag.replace('_', '-')}", str(getattr(config, flag))]
    return [*argv, "--resume"] if resume else argv


def _env() -> dict[str, str]:
    src = str(Path(bertgeom.__file__).resolve().parents[1])
    path = os.environ.get("PYTHONPATH")
    return os.environ | {"PYTHONPATH": f"{src}{os.pathsep}{path}" if path else src}


def _torchrun(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    done = subprocess.run(
        [*cmd, *args], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=LAUNCH_TIMEOUT
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


#: lr 1e-30 leaves the weights as they are, so epoch 2 cannot improve: patience 1 stops there
EARLY_STOP = TrainConfig(**(COMMON | {"batch_size": 17, "lr": 1e-30, "epochs": 5}), patience=1)


@pytest.fixture(scope="module")
def launch(ci_prepared, tmp_path_factory):
    """The six runs of ddp_runs.py: the outputs folder, each rank's report, the launch's
    stdout."""
    tmp = tmp_path_factory.mktemp("ddp")
    outs, reports = tmp / "outs", tmp / "reports"
    outs.mkdir()
    reports.mkdir()
    runs = [
        {"argv": _argv(ci_prepared, outs / name, config, tmp), "dropout": 0.0}
        for name, config in EXACT.items()
    ]
    parts = dataclasses.replace(WITH_DROPOUT, max_steps=6)
    runs += [
        {"argv": _argv(ci_prepared, outs / "whole", WITH_DROPOUT, tmp)},
        {"argv": _argv(ci_prepared, outs / "parts", parts, tmp)},
        {"argv": _argv(ci_prepared, outs / "parts", WITH_DROPOUT, tmp, resume=True)},
        {"argv": _argv(ci_prepared, outs / "early", EARLY_STOP, tmp)[1:], "module": True},
    ]
    plan = tmp / "plan.json"
    plan.write_text(json.dumps({"report_dir": str(reports), "watch": [str(outs)], "runs": runs}))
    done = _torchrun(str(RUNS), str(plan), cwd=tmp)
    ranks = [json.loads((reports / f"rank{r}.json").read_text()) for r in range(2)]
    return outs, ranks, done.stdout


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return torch.load(out / CHECKPOINT, weights_only=True)["model"]


def _history(out: Path) -> list[list[float]]:
    lines = (out / HISTORY).read_text().splitlines()[1:]
    return [[float(v) for v in line.split("\t")] for line in lines]


@pytest.mark.parametrize("name", EXACT)
def test_two_ranks_follow_the_single_process_trajectory(launch, ci_prepared, tmp_path, name):
    outs, _, _ = launch
    config = EXACT[name]
    no_dropout = dataclasses.replace(
        presets.PRESETS["tiny"], hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(presets.PRESETS, "tiny", no_dropout)
        train_stage.run(ci_prepared, tmp_path / "one", config, progress=False)
    one, two = _weights(tmp_path / "one"), _weights(outs / name)
    assert one.keys() == two.keys()
    for key in one:
        if key.endswith("attention.self.key.bias"):
            # its exact gradient is 0 (a key bias adds the same score to every key of a query,
            # and softmax ignores that), so it holds rounding noise that AdamW's normalised
            # steps grow to ~1e-6 in any two runs that round differently
            assert float(two[key].abs().max()) < 1e-5, key
            continue
        assert torch.allclose(one[key], two[key], atol=1e-6, rtol=0), key
    start = presets.build_classifier(BertConfig.from_pretrained(outs / name), config.seed)
    moved = max(float((two[k] - v).abs().max()) for k, v in start.state_dict().items())
    assert moved > 1e-3  # a trajectory, not the initialisation
    h1, h2 = _history(tmp_path / "one"), _history(outs / name)
    assert [r[:2] for r in h1] == [r[:2] for r in h2]  # epoch, step
    # train loss, val loss, accuracy, macro-F1, lr
    assert torch.allclose(torch.tensor(h1)[:, 2:7], torch.tensor(h2)[:, 2:7], rtol=1e-5, atol=0)
    files = sorted(p.relative_to(outs / name) for p in (outs / name).rglob("*"))
    assert files == sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*"))


def test_only_rank_zero_writes(launch):
    outs, ranks, _ = launch
    assert [r["statuses"] for r in ranks] == [[0] * 6, [0] * 6]
    assert ranks[1]["writes"] == []
    written = {w.split()[1] for w in ranks[0]["writes"]}  # the hook does see rank 0's
    assert str(outs / "sampler" / "checkpoints" / "last.pt") in written
    assert str(outs / "parts" / "manifest.json") in written


def test_interrupted_and_resumed_run_equals_the_uninterrupted_one(launch):
    outs, _, _ = launch
    whole, parts = _weights(outs / "whole"), _weights(outs / "parts")
    for key in whole:
        assert torch.equal(whole[key], parts[key]), key
    assert [r[1] for r in _history(outs / "parts")] == [4, 6, 8]
    ckpt = torch.load(outs / "parts" / CHECKPOINT, weights_only=True)
    assert ckpt["world_size"] == 2
    a, b = (s["torch"] for s in ckpt["rank_rng"])
    assert not torch.equal(a, b)  # each rank its own dropout draws
    assert torch.equal(ckpt["rng"]["torch"], a)


def test_resume_with_another_world_size_is_refused(launch, ci_prepared):
    outs, _, _ = launch
    before = sorted((outs / "whole").rglob("*"))
    with pytest.raises(ConfigError, match=r"written by 2 processes .* resumed by 1 process"):
        train_stage.run(ci_prepared, outs / "whole", WITH_DROPOUT, resume=True, progress=False)
    assert sorted((outs / "whole").rglob("*")) == before


def test_python_m_bertgeom_stops_early_on_every_rank(launch):
    outs, ranks, stdout = launch
    assert [r["statuses"][-1] for r in ranks] == [0, 0]  # and the launch did not time out
    assert [r[:2] for r in _history(outs / "early")] == [[1, 2], [2, 4]]
    said = [line for line in stdout.splitlines() if line.startswith("trained tiny on 34 genomes")]
    assert len(said) == 6  # once per run (rank 0): one line each, not one per rank
    assert said[-1].endswith(f"-> {outs / 'early'}")
    assert (outs / "early" / "manifest.json").is_file()
