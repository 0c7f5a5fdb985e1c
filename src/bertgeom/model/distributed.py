"""Data-parallel training under ``torchrun`` (PyTorch DDP): the world, its slices and collectives.

``torchrun --nproc-per-node N -m bertgeom train ...`` starts N processes (ranks) whose
environment holds ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``. Each rank joins one process group
(NCCL on CUDA, gloo on CPU), runs on ``cuda:LOCAL_RANK`` when the run is on CUDA, and trains on
its slice of every global batch; DDP averages the gradients. What keeps the trajectory the one
of a single process with the same ``--batch-size`` (to rounding):

- every rank computes the same class-balanced epoch order (:func:`bertgeom.model.data.epoch_order`)
  and takes a contiguous slice of each global batch (:func:`rank_rows`);
- a rank's loss is its sum over its rows divided by the global row count (or the global sum of
  class weights), times the world size, because DDP averages over ranks (:func:`rank_loss`);
- a rank whose slice is empty (a last batch with fewer rows than ranks) still runs forward and
  backward, on one row with weight 0, so the gradient all-reduce never waits for it;
- rank 0 alone validates and writes files; its progress (position, best epoch, epochs without
  improvement, hence the early-stopping decision) is broadcast to the others.

Dropout draws differ per rank (each rank's torch generator is seeded from ``(seed, rank)``), so
with dropout the run is not the single-process one draw for draw; it is reproducible, and a
resume at the same world size is exact because checkpoints keep every rank's RNG states.

Without ``torchrun`` (or with one process) nothing here imports ``torch.distributed`` and
training is the single-process path unchanged.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from bertgeom.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np

#: How long a rank waits in a collective for the others (rank 0 validates and saves alone).
TIMEOUT = datetime.timedelta(minutes=60)
#: Environment variables ``torchrun`` sets for every rank.
LAUNCH_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class World:
    """This process's place among the training processes.

    Attributes
    ----------
    rank
        0 .. ``size`` - 1; rank 0 validates and writes.
    size
        Number of processes (1: no process group).
    local_rank
        Rank on this node: the CUDA device index.
    """

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Whether this process writes files and validates (rank 0)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """Whether there is more than one process."""
        return self.size > 1


def launched() -> World:
    """The world ``torchrun`` describes in the environment (a single process when unset).

    Raises
    ------
    ConfigError
        A launcher variable that is not a number, or a rank outside the world.
    """
    values = {}
    for name in LAUNCH_ENV:
        text = os.environ.get(name, "")
        try:
            values[name] = int(text) if text else 0
        except ValueError:
            raise ConfigError(f"environment: {name}={text!r} is not a whole number") from None
    size = values["WORLD_SIZE"] or 1
    if not 0 <= values["RANK"] < size or values["LOCAL_RANK"] < 0:
        raise ConfigError(
            f"environment: RANK={values['RANK']}, LOCAL_RANK={values['LOCAL_RANK']} do not fit "
            f"WORLD_SIZE={size}"
        )
    return World(rank=values["RANK"], size=size, local_rank=values["LOCAL_RANK"])


def check_command(command: str | None) -> None:
    """Refuse to run a command other than ``train`` in several processes (each would write the
    same outputs)."""
    if command not in (None, "train") and launched().distributed:
        raise ConfigError(
            f"bertgeom {command} runs in one process; only `bertgeom train` runs under torchrun "
            f"(WORLD_SIZE={os.environ.get('WORLD_SIZE')})"
        )


@contextlib.contextmanager
def session(device: str) -> Iterator[World]:
    """Join the process group of a ``torchrun`` launch for the block and leave it at the end,
    also on an error or a signal.

    ``device`` is the config's (``auto``: CUDA when available): NCCL on CUDA, gloo elsewhere.
    A group the caller initialised already is used as it is and left to the caller. A single
    process yields ``World()`` and imports nothing.
    """
    world = launched()
    if not world.distributed:
        yield world
        return
    import torch
    import torch.distributed as dist

    cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    owned = not dist.is_initialized()
    if owned:
        if cuda:
            if world.local_rank >= torch.cuda.device_count():
                raise ConfigError(
                    f"torchrun: LOCAL_RANK {world.local_rank} but this node has "
                    f"{torch.cuda.device_count()} CUDA devices (--nproc-per-node at most that)"
                )
            torch.cuda.set_device(world.local_rank)
        dist.init_process_group("nccl" if cuda else "gloo", timeout=TIMEOUT)
    if dist.get_world_size() != world.size or dist.get_rank() != world.rank:
        raise ConfigError(
            f"torch.distributed: rank {dist.get_rank()} of {dist.get_world_size()}, but the "
            f"environment says rank {world.rank} of {world.size}"
        )
    try:
        yield world
    finally:
        if owned:
            with contextlib.suppress(Exception):  # a peer already gone: nothing to say goodbye to
                dist.destroy_process_group()


def place(rt: Any, world: World) -> Any:
    """``rt`` (a :class:`bertgeom.model.loop.Runtime`) on this rank's device: ``cuda:LOCAL_RANK``
    for a CUDA run with several processes, else unchanged."""
    if not world.distributed or rt.device.type != "cuda":
        return rt
    import torch

    if rt.device.index not in (None, world.local_rank):
        raise ConfigError(
            f"config: device {rt.device} under torchrun; each rank uses cuda:LOCAL_RANK "
            "(give --device cuda or auto)"
        )
    return replace(rt, device=torch.device("cuda", world.local_rank))


def seed_rank(seed: int, world: World) -> None:
    """Give each rank its own torch generator (dropout draws) derived from ``(seed, rank)``;
    a single process keeps the generator it has."""
    if not world.distributed:
        return
    import numpy as np
    import torch

    torch.manual_seed(int(np.random.SeedSequence([seed, world.rank]).generate_state(1)[0]))


def rank_rows(rows: np.ndarray, world: World) -> np.ndarray:
    """This rank's contiguous part of a global batch ``rows`` (n,): sizes differ by at most one,
    earlier ranks take the larger parts, and a rank beyond ``n`` gets none."""
    if not world.distributed:
        return rows
    n, k = len(rows), world.size
    start = world.rank * (n // k) + min(world.rank, n % k)
    return rows[start : start + n // k + (world.rank < n % k)]


def rank_loss(
    logits: Any, target: Any, weight: Any, denominator: float, world: World, empty: bool = False
) -> Any:
    """The loss this rank back-propagates for a global batch.

    Parameters
    ----------
    logits, target
        (rows, classes) and (rows,) of this rank's slice.
    weight
        (classes,) cross-entropy weights, or None.
    denominator
        The global batch's row count, or the sum of the weights of its targets.
    world
        One process: PyTorch's weighted mean, the single-process loss. Several: this rank's
        sum times ``world.size / denominator``, so DDP's average of the gradients is the
        gradient of the global batch's mean.
    empty
        The rows are a stand-in for an empty slice: the loss is 0 (and so is the gradient).
    """
    import torch.nn.functional as F

    if not world.distributed:
        return F.cross_entropy(logits, target, weight=weight)
    total = F.cross_entropy(logits, target, weight=weight, reduction="sum")
    return total * (0.0 if empty else world.size / denominator)


def mean_over_ranks(value: Any, world: World) -> Any:
    """The mean of a tensor over the ranks (each rank's loss share times ``size`` in, the
    global batch's loss out); unchanged for one process."""
    if not world.distributed:
        return value
    import torch.distributed as dist

    out = value.clone()
    dist.all_reduce(out)
    return out / world.size


def gather_to_main(obj: Any, world: World) -> list[Any] | None:
    """Every rank's ``obj`` in rank order on rank 0 (None elsewhere); ``[obj]`` for one process."""
    if not world.distributed:
        return [obj]
    import torch.distributed as dist

    out: list[Any] | None = [None] * world.size if world.main else None
    dist.gather_object(obj, out, dst=0)
    return out


def from_main(obj: Any, world: World) -> Any:
    """Rank 0's ``obj`` (picklable) on every rank."""
    if not world.distributed:
        return obj
    import torch.distributed as dist

    box = [obj if world.main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def wrap_forward(model: Any, forward: Any, world: World) -> Any:
    """``forward(input_ids, attention_mask)`` inside a module that DDP wraps, for several
    processes (``forward`` itself for one). ``model`` is the module owning the parameters."""
    if not world.distributed:
        return forward
    import torch
    from torch.nn.parallel import DistributedDataParallel

    class _Forward(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            return forward(input_ids=input_ids, attention_mask=attention_mask)

    on_cuda = next(model.parameters()).is_cuda
    return DistributedDataParallel(
        _Forward(),
        device_ids=[torch.cuda.current_device()] if on_cuda else None,
        forward_sync_buffers=False,  # constant buffers (position ids): no broadcast per step
    )
