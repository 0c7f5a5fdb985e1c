"""The report seen in a real browser: headless Chromium renders it from disk.

Checks that every section is there, that every embedded image is a valid PNG, that Chromium
renders the page and logs nothing to the console (a blocked script, a blocked fetch or a broken
resource would), and saves a full-page screenshot (its path is printed; set
``BERTGEOM_SCREENSHOT_DIR`` to keep a copy).
Needs the Debian package ``chromium``: the test fails, not skips, without it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from bertgeom.pipeline import report
from tests.integration.test_report import SECTION_TITLES, make_run_dir

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")


def chromium() -> str:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    pytest.fail(
        "headless Chromium is needed for this test and was not found; install it with "
        "`apt-get update && apt-get install -y chromium`"
    )


def browse(
    page: Path, profile: Path, *extra: str, budget_ms: int = 5000
) -> subprocess.CompletedProcess:
    cmd = [
        chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
        "--run-all-compositor-stages-before-draw", f"--virtual-time-budget={budget_ms}", *extra,
        page.resolve().as_uri(),
    ]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


def console_messages(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("browser")
    return report.run(make_run_dir(root / "run"), root / "out" / "report.html")


def test_every_section_and_image_renders(rendered, tmp_path):
    check_page(rendered, tmp_path, expected_images=19)  # as in test_report: PCA + t-SNE maps


def check_page(page: Path, tmp_path: Path, expected_images: int | None = None) -> None:
    """Every section heading, every embedded PNG valid, and Chromium renders the page with
    no console message (a blocked script, fetch or broken resource would log one)."""
    import base64
    import io

    from PIL import Image

    html = page.read_text(encoding="utf-8")
    headings = re.findall(r"<h2[^>]*>(.*?)</h2>", html)
    assert [h for h in headings if h in SECTION_TITLES] == list(SECTION_TITLES)
    images = re.findall(r'<img[^>]*src="data:image/png;base64,([^"]+)"', html)
    assert len(re.findall(r"<img", html)) == len(images)  # every image is embedded
    if expected_images is not None:
        assert len(images) == expected_images
    for data in images:
        Image.open(io.BytesIO(base64.b64decode(data))).verify()
    shot = tmp_path / f"{page.stem}.png"
    out = browse(
        page,
        tmp_path / f"profile-{page.stem}",
        f"--screenshot={shot}",
        "--window-size=1280,4000",
        budget_ms=20000,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert console_messages(out.stderr) == []
    assert shot.is_file() and shot.stat().st_size > 20_000


def test_report_page_has_no_console_errors_and_screenshot(rendered, tmp_path):
    shot = tmp_path / "shot.png"
    out = browse(rendered, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1280,4000")
    assert out.returncode == 0, out.stderr[-2000:]
    assert console_messages(out.stderr) == []  # a CSP violation or broken resource logs here
    assert shot.is_file() and shot.stat().st_size > 20_000
    assert shot.read_bytes().startswith(b"\x89PNG")
    keep = os.environ.get("BERTGEOM_SCREENSHOT_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / "report_browser.png")
    print(f"screenshot: {shot}")


@pytest.fixture(scope="module")
def pipeline_report(shared_data, tmp_path_factory) -> Path:
    """The report of a real (small) pipeline run, as the demo makes it: prepare the CI genomes,
    train a tiny model, evaluate, analyze, report."""
    from bertgeom.pipeline import run

    root = tmp_path_factory.mktemp("pipeline")
    cfg = root / "pipeline.toml"
    cfg.write_text(f"""
[run]
dir = "{root / "run"}"
stages = ["prepare", "train", "evaluate", "analyze", "report"]
inputs = ["{shared_data / "ci_genomes.fasta.gz"}"]
labels = "{shared_data / "labels.tsv"}"

[train]
preset = "tiny"
epochs = 2
batch_size = 8
seed = 1

[analyze]
split = "all"
max_genomes = 8
all_genomes = true

[analyze.spectra]
genomes = 4
""")
    out = run.run(cfg, progress=False, log=lambda _: None)
    return out / "report.html"


def test_pipeline_report_renders_every_section_and_image(pipeline_report, tmp_path):
    assert "has not been run" not in pipeline_report.read_text(encoding="utf-8")
    check_page(pipeline_report, tmp_path)
