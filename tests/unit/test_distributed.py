"""The torchrun world and its batch slices (no process group: bertgeom.model.distributed)."""

from __future__ import annotations

import numpy as np
import pytest

from bertgeom.cli import main
from bertgeom.errors import ConfigError
from bertgeom.model import distributed
from bertgeom.model.distributed import World


@pytest.mark.parametrize("n", [0, 1, 2, 3, 10, 11, 17])
@pytest.mark.parametrize("size", [1, 2, 3, 4])
def test_rank_slices_cover_the_global_batch_in_order(n, size):
    rows = np.arange(100, 100 + n)
    parts = [distributed.rank_rows(rows, World(rank=r, size=size)) for r in range(size)]
    assert np.array_equal(np.concatenate(parts), rows)  # every row once, in order
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1
    assert sizes == sorted(sizes, reverse=True)  # earlier ranks take the larger parts


def test_the_world_comes_from_the_launcher_environment(monkeypatch):
    for name in distributed.LAUNCH_ENV:
        monkeypatch.delenv(name, raising=False)
    assert distributed.launched() == World()
    assert World().main and not World().distributed
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    world = distributed.launched()
    assert world == World(rank=3, size=4, local_rank=1)
    assert world.distributed and not world.main
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(ConfigError, match="RANK=4, LOCAL_RANK=1 do not fit WORLD_SIZE=4"):
        distributed.launched()
    monkeypatch.setenv("WORLD_SIZE", "four")
    with pytest.raises(ConfigError, match="WORLD_SIZE='four' is not a whole number"):
        distributed.launched()


def test_one_process_needs_no_process_group():
    import torch

    with distributed.session("cpu") as world:
        assert world == World()
        assert not torch.distributed.is_initialized()
    value = torch.tensor([1.5])
    assert distributed.mean_over_ranks(value, world) is value
    assert distributed.gather_to_main({"a": 1}, world) == [{"a": 1}]
    assert distributed.from_main(7, world) == 7


def test_the_rank_loss_sums_to_the_global_mean():
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(0)
    logits, target = torch.randn(7, 3, generator=g), torch.tensor([0, 1, 2, 2, 1, 0, 0])
    weight = torch.tensor([0.5, 1.0, 2.0])
    whole = F.cross_entropy(logits, target, weight=weight)
    world = World(rank=0, size=3)
    denominator = float(weight[target].sum())
    shares = [
        distributed.rank_loss(logits[rows], target[rows], weight, denominator, world)
        for rows in (slice(0, 3), slice(3, 5), slice(5, 7))
    ]
    # DDP averages the ranks' gradients: the mean of the shares is the global batch's loss
    assert torch.allclose(sum(shares) / world.size, whole, rtol=1e-6)
    stand_in = distributed.rank_loss(logits[:1], target[:1], weight, denominator, world, True)
    assert float(stand_in) == 0.0
    single = distributed.rank_loss(logits, target, weight, denominator, World())
    assert torch.equal(single, whole)  # one process: the loss it always had


def test_commands_other_than_train_refuse_torchrun(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert main(["predict", str(tmp_path / "x.fasta"), "--out", str(tmp_path / "p.tsv")]) == 2
    err = capsys.readouterr().err
    assert err.strip() == (
        "error: bertgeom predict runs in one process; only `bertgeom train` runs under torchrun "
        "(WORLD_SIZE=2)"
    )
    assert not (tmp_path / "p.tsv").exists()
