"""``predict --engine ray`` and ``analyze --engine ray`` on a local Ray cluster (2 CPUs, no
dashboard, a small object store), against the local path: the same bytes for predict (torch on
one thread, as the workers are), the same tables for analyze; a killed worker is retried; a
work folder's finished parts are skipped on a rerun; an input error is one line.
"""

from __future__ import annotations

import gzip
import os
import signal
import threading
import time

import pandas as pd
import pytest

ray = pytest.importorskip("ray", reason="the extra bertgeom[ray] is not installed")

from bertgeom.cli import main  # noqa: E402 (after the skip)
from bertgeom.config import PrepareConfig  # noqa: E402
from bertgeom.errors import InputError  # noqa: E402
from bertgeom.pipeline import predict  # noqa: E402
from bertgeom.scale.predict import ScaleOptions  # noqa: E402

pytestmark = pytest.mark.distributed

#: The actor process of the model stage, as Ray titles it.
MODEL_WORKER = "MapBatches(_ModelWorker)"


@pytest.fixture(scope="session")
def ray_cluster():
    """A local Ray cluster for the session: 2 CPUs, no dashboard, an 80 MB object store.
    Started up to 3 times: Ray gives its raylet a fixed 30 s to register, which a heavily
    loaded 2-core machine can miss."""
    for attempt in range(3):
        try:
            ray.init(
                num_cpus=2,
                include_dashboard=False,
                object_store_memory=80 * 2**20,
                log_to_driver=False,
                logging_level="ERROR",
            )
            break
        except Exception:
            ray.shutdown()
            if attempt == 2:
                raise
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def genomes(shared_data, tmp_path_factory):
    """Two inputs built from 14 real CI records: a gzip file of 9 and a plain, wrapped file of
    6 whose second record repeats the id of record 2 of the first (global record 10)."""
    with gzip.open(shared_data / "ci_genomes.fasta.gz", "rt") as fh:
        lines = fh.read().splitlines()
    records = list(zip(lines[::2], lines[1::2], strict=True))[:14]
    folder = tmp_path_factory.mktemp("ray_genomes")
    first = folder / "a.fasta.gz"
    with gzip.open(first, "wt") as fh:
        fh.write("".join(f"{h}\n{s}\n" for h, s in records[:9]))
    second = folder / "b.fasta"
    rest = [records[9], (records[2][0] + " repeated", records[12][1]), *records[10:14]]
    second.write_text(
        "".join(
            h + "\n" + "\n".join(s[i : i + 60] for i in range(0, len(s), 60)) + "\n"
            for h, s in rest
        )
    )
    return [str(first), str(second)]


KEEP_FIRST = PrepareConfig(jobs=1, dedupe="keep-first")


def _predict(model, genomes, out, **scale):
    return predict.run(
        model, genomes, out, KEEP_FIRST, device="cpu", progress=False,
        scale=ScaleOptions(**scale) if scale else None,
    )  # fmt: skip


@pytest.fixture(scope="module")
def local_table(tiny_with_ood, genomes, tmp_path_factory):
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = tmp_path_factory.mktemp("ray_local") / "local.tsv"
        summary = _predict(tiny_with_ood, genomes, out)
    finally:
        torch.set_num_threads(before)
    assert summary.n_genomes == 15 and summary.n_duplicates == 1
    return out.read_bytes()


def test_ray_predict_equals_local_and_reruns_skip_finished_parts(
    ray_cluster, one_thread, tiny_with_ood, genomes, local_table, tmp_path, capsys
):
    work = tmp_path / "work"
    # shards of 4: the repeated id (record 10) is in shard 3, its first (record 2) in shard 1
    s = _predict(tiny_with_ood, genomes, tmp_path / "ray.tsv", engine="ray", shard_size=4,
                 work_dir=work)  # fmt: skip
    assert (tmp_path / "ray.tsv").read_bytes() == local_table
    assert s.n_genomes == 15 and s.n_duplicates == 1
    parts = sorted((work / "parts").iterdir())
    assert len(parts) == 4
    parts[2].unlink()  # the shard holding the duplicate is made again, the others are read
    capsys.readouterr()
    _predict(tiny_with_ood, genomes, tmp_path / "again.tsv", engine="ray", shard_size=4,
             work_dir=work)  # fmt: skip
    assert "3 of 4 shards already finished" in capsys.readouterr().err
    assert (tmp_path / "again.tsv").read_bytes() == local_table
    assert parts[2].is_file()
    # another shard size is another run: refused, not mixed
    with pytest.raises(InputError, match=r"holds the parts of another run \(shard_size differ\)"):
        _predict(tiny_with_ood, genomes, tmp_path / "x.tsv", engine="ray", shard_size=5,
                 work_dir=work)  # fmt: skip


def _model_workers() -> list[int]:
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                title = fh.read().decode(errors="replace")
        except OSError:
            continue
        if title.startswith("ray::") and MODEL_WORKER in title:
            found.append(int(pid))
    return found


def test_a_killed_model_worker_is_restarted_and_the_output_is_the_same(
    ray_cluster, one_thread, tiny_with_ood, genomes, local_table, tmp_path
):
    out = tmp_path / "killed.tsv"
    errors: list[BaseException] = []

    def work():
        try:
            _predict(tiny_with_ood, genomes, out, engine="ray", shard_size=1)
        except BaseException as err:  # reported by the main thread
            errors.append(err)

    before = set(_model_workers())
    run = threading.Thread(target=work)
    run.start()
    killed = None
    deadline = time.monotonic() + 120
    while killed is None and run.is_alive() and time.monotonic() < deadline:
        fresh = [p for p in _model_workers() if p not in before]
        if fresh:
            time.sleep(1.0)  # let it take a shard
            os.kill(fresh[0], signal.SIGKILL)
            killed = fresh[0]
        time.sleep(0.1)
    run.join(300)
    assert killed is not None, "no model worker process was seen"
    assert not errors, errors
    assert out.read_bytes() == local_table


def test_an_input_error_in_a_worker_is_the_one_line_error(
    ray_cluster, tiny_with_ood, tmp_path, capsys
):
    bad = tmp_path / "bad.fasta"
    bad.write_text(">ok1\nACGT\n>broken\nACGT*ACGT\n")
    out = tmp_path / "p.tsv"
    rc = main(["predict", str(tiny_with_ood), str(bad), "--engine", "ray", "--shard-size", "1",
               "--out", str(out), "--quiet"])  # fmt: skip
    assert rc == 2
    err = capsys.readouterr().err
    assert err.endswith(f"error: {bad}: record 'broken' line 4: invalid character '*' in "
                        "sequence\n")  # fmt: skip
    assert "Traceback" not in err and "RayTaskError" not in err
    assert not out.exists()


def test_analyze_on_three_ray_shards_equals_one_local_run(
    ray_cluster, one_thread, tiny_model, ci_prepared, tmp_path
):
    # the cone index (sums) and spectra (a prefix-dependent selection replayed in the merge);
    # every measure's merge is checked in-process by test_engine_merge.py
    common = [str(tiny_model), str(ci_prepared), "--split", "all", "--max-genomes", "14",
              "--batch-size", "3", "--device", "cpu", "--only", "cone,spectra",
              "--spectra-genomes", "6", "--quiet"]  # fmt: skip
    assert main(["analyze", *common, "--out", str(tmp_path / "one")]) == 0
    rc = main(["analyze", *common, "--engine", "ray", "--shards", "3", "--out",
               str(tmp_path / "ray")])  # fmt: skip
    assert rc == 0
    one = {f.stem: pd.read_parquet(f) for f in sorted((tmp_path / "one").glob("*.parquet"))}
    par = {f.stem: pd.read_parquet(f) for f in sorted((tmp_path / "ray").glob("*.parquet"))}
    assert one.keys() == par.keys() and "genomes" in one
    pd.testing.assert_frame_equal(one["genomes"], par["genomes"], check_exact=True)
    for name in one:  # per-genome values and counts exactly (integers), sums to 1e-6
        pd.testing.assert_frame_equal(one[name], par[name], rtol=1e-6, atol=1e-9, obj=name)
    figures = sorted(p.name for p in (tmp_path / "one" / "figures").iterdir())
    assert figures == sorted(p.name for p in (tmp_path / "ray" / "figures").iterdir())
