"""Several ``bertgeom train`` runs in one ``torchrun`` launch (for test_distributed.py).

    python -m torch.distributed.run --standalone --nproc-per-node 2 ddp_runs.py PLAN.json

PLAN is a JSON object: ``report_dir``, ``watch`` (folders in which every rank's file writes are
recorded) and ``runs``, each ``{"argv": [...], "dropout": null or a probability, "module":
false}``: ``dropout`` sets the ``tiny`` preset's for that run (0 makes a run comparable with one
process draw for draw); ``module`` runs it as ``python -m bertgeom ARGV`` does (``runpy``, so
``bertgeom/__main__.py`` runs), else through ``bertgeom.cli.main``. The process group is joined
once here and reused by every run (torch cannot re-join a group in one process reliably).
Each rank writes ``rank<r>.json`` into ``report_dir``: the exit status of every run and the
writes it made into the watched folders (an audit hook sees ``open`` for writing, renames,
removals, new folders).
"""

from __future__ import annotations

import dataclasses
import json
import os
import runpy
import sys
from pathlib import Path
from typing import Any

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
PATH_EVENTS = {  # event -> positions of its path arguments
    "os.rename": (0, 1),
    "os.replace": (0, 1),
    "os.remove": (0,),
    "os.rmdir": (0,),
    "os.mkdir": (0,),
    "os.truncate": (0,),
    "os.link": (0, 1),
    "os.symlink": (0, 1),
    "os.chmod": (0,),
    "os.utime": (0,),
    "shutil.copyfile": (0, 1),
    "shutil.rmtree": (0,),
    "shutil.move": (0, 1),
}


def _watcher(folders: list[Path], writes: list[str]) -> Any:
    roots = [str(f.resolve()) for f in folders]

    def inside(path: Any) -> str | None:
        if not isinstance(path, str | bytes | os.PathLike):
            return None  # a file descriptor
        text = os.path.abspath(os.fsdecode(path))
        return text if any(text == r or text.startswith(r + os.sep) for r in roots) else None

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event == "open":
            path, mode, flags = args
            writing = any(c in mode for c in "wax+") if isinstance(mode, str) else (
                isinstance(flags, int) and bool(flags & WRITE_FLAGS)
            )  # fmt: skip
            hits = [inside(path)] if writing else []
        else:
            hits = [inside(args[i]) for i in PATH_EVENTS.get(event, ()) if i < len(args)]
        writes.extend(f"{event} {h}" for h in hits if h)

    return hook


def _as_module(argv: list[str]) -> int:
    """``python -m bertgeom ARGV`` in this process: its exit status."""
    saved = sys.argv
    sys.argv = ["bertgeom", *argv]
    try:
        runpy.run_module("bertgeom", run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv = saved
    return 0


def run_plan(plan_path: str) -> int:
    import torch.distributed as dist

    from bertgeom.cli import main
    from bertgeom.model import presets

    plan = json.loads(Path(plan_path).read_text())
    rank = int(os.environ["RANK"])
    writes: list[str] = []
    sys.addaudithook(_watcher([Path(p) for p in plan["watch"]], writes))
    dist.init_process_group("gloo")
    tiny = presets.PRESETS["tiny"]
    statuses = []
    try:
        for run in plan["runs"]:
            p = run.get("dropout")
            presets.PRESETS["tiny"] = tiny if p is None else dataclasses.replace(
                tiny, hidden_dropout_prob=p, attention_probs_dropout_prob=p
            )  # fmt: skip
            statuses.append(_as_module(run["argv"]) if run.get("module") else main(run["argv"]))
            dist.barrier()
    finally:
        report = Path(plan["report_dir"]) / f"rank{rank}.json"
        report.write_text(json.dumps({"statuses": statuses, "writes": writes}))
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(run_plan(sys.argv[1]))
