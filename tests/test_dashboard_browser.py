"""`splitsweep dashboard` as a user meets it: a real server process and headless Chromium (Playwright)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.fixtures_results import SynthConfig, config_rows, write_part
from tests.test_dashboard import N_IMAGES, RAW7, make_results

# The task the synthetic store left to do: split 7 NNCodec on the last image.
LAST_TASK = SynthConfig(split=7, codec="nncodec", params={"qp": -30}, raw_bytes=RAW7, coded_bytes=90_000,
                        feature_psnr=38.0, minutes=10)  # fmt: skip

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
ROOT = Path(__file__).resolve().parents[1]
SCREENSHOT_COPY = Path("/tmp/dashboard.png")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"no {CHROMIUM} (Debian: apt-get install chromium)"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def dashboard_server(results: Path, tmp_path: Path):
    """`python -m orchestrator dashboard RESULTS --port P --no-browser` until the block ends;
    yields its URL. Its log must hold no traceback when it stops."""
    port = _free_port()
    log = open(tmp_path / "server.log", "w+")
    process = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "dashboard", str(results), "--port", str(port), "--no-browser"],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # the command and its Streamlit child stop together
    )
    url = f"http://localhost:{port}"
    deadline = time.monotonic() + 60
    while True:
        assert process.poll() is None, f"the dashboard command exited: {(tmp_path / 'server.log').read_text()}"
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        assert time.monotonic() < deadline, "the dashboard did not answer within 60 s"
        time.sleep(0.3)
    try:
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.seek(0)
        output = log.read()
        log.close()
        assert "Traceback" not in output, output


@pytest.fixture
def server(tmp_path):
    """The dashboard command on the synthetic store."""
    results = make_results(tmp_path / "results")
    with dashboard_server(results, tmp_path) as url:
        yield url, tmp_path, results


def _wait_for_charts(page, count: int) -> None:
    page.wait_for_function(
        "n => document.querySelectorAll('.vega-embed canvas, .vega-embed svg.marks').length >= n",
        arg=count,
        timeout=60_000,
    )


def _no_exception(page) -> None:
    shown = page.locator("[data-testid='stException']")
    assert shown.count() == 0, shown.first.inner_text()


def test_dashboard_in_headless_chromium(server):
    from playwright.sync_api import sync_playwright

    url, tmp, results = server
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url, wait_until="domcontentloaded")
            page.get_by_text("splitsweep: synthetic").first.wait_for(timeout=60_000)
            _wait_for_charts(page, 1)  # the overview's progress chart
            page.get_by_text("synthetic failure").first.wait_for(state="attached", timeout=30_000)  # a canvas grid: cells are hidden
            _no_exception(page)
            page.screenshot(path=str(tmp / "overview.png"), full_page=True)

            # Auto-refresh: the sweep stores its last task; the overview notices by itself.
            page.get_by_text("Auto-refresh the overview").click()
            seconds = page.get_by_label("every (seconds)")
            seconds.fill("2")
            seconds.press("Enter")
            page.wait_for_timeout(1000)
            write_part(results, config_rows(LAST_TASK, [N_IMAGES]), "part-r1-000001.parquet")
            page.get_by_text("New results were stored since the charts were drawn").wait_for(timeout=30_000)
            remaining = page.locator("[data-testid='stMetric']").filter(has_text="remaining")
            assert remaining.locator("[data-testid='stMetricValue']").inner_text().strip() == "0"
            page.get_by_role("button", name="Update the charts").click()
            page.get_by_text("Report updated: 1 of 12 configurations re-scored").wait_for(timeout=60_000)
            page.get_by_text("Auto-refresh the overview").click()  # off again: nothing moves under the screenshots

            page.get_by_role("tab", name="Rate–accuracy").click()
            page.get_by_text("AP against bits per pixel").first.wait_for(timeout=60_000)
            _wait_for_charts(page, 1)
            _no_exception(page)
            page.wait_for_timeout(500)  # let Vega finish painting before the picture
            shot = tmp / "curves.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            shutil.copy(shot, SCREENSHOT_COPY)

            page.get_by_role("tab", name="Image drill-down").click()
            page.get_by_text("green ground truth").first.wait_for(timeout=60_000)
            _no_exception(page)
            page.screenshot(path=str(tmp / "drilldown.png"), full_page=True)
        finally:
            browser.close()
