"""Every dashboard view on a real sweep's results in headless Chromium: each chart has data and titled axes; screenshots of each.

Screenshots go to the test's tmp dir and, when ``SPLITSWEEP_SCREENSHOTS`` names a folder,
there too (the issue note's pictures: ``SPLITSWEEP_SCREENSHOTS=/work/notes/screens``).
``SPLITSWEEP_BROWSER_RESULTS=RESULTS`` runs the same checks on another finished sweep (the
demo's ``results/demo``) instead of the test suite's own tinydet sweep.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from tests.test_dashboard_browser import CHROMIUM, CHROMIUM_ARGS, _no_exception, dashboard_server

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"no {CHROMIUM} (Debian: apt-get install chromium)"),
]

# Every view, what it must show once drawn, and how many charts at least.
VIEWS = [
    ("Overview", "done (ok)", 1),
    ("Rate–accuracy", "against bits per pixel", 1),
    ("Split points", "Device cost per split", 6),
    ("BD-rate & Pareto", "Pareto front", 0),
    ("Variants", "Variants", 0),
    ("Image drill-down", "green ground truth", 0),
    ("Table", "configurations", 0),
]

# Per chart: its axes' ARIA labels ("X-axis titled '…' for a … scale …") and its data marks.
_CHART_FACTS = """
() => Array.from(document.querySelectorAll('.vega-embed svg.marks')).map(svg => ({
  axes: Array.from(svg.querySelectorAll('g.role-axis[aria-label]')).map(g => g.getAttribute('aria-label')),
  marks: svg.querySelectorAll('g.role-mark > path, g.role-mark > text, g.role-mark > line').length,
  title: (svg.querySelector('g.role-title text') || {}).textContent || '',
}))
"""


@pytest.fixture
def sweep_server(request, tmp_path):
    sweep_results = os.environ.get("SPLITSWEEP_BROWSER_RESULTS") or request.getfixturevalue("sweep_results")
    with dashboard_server(sweep_results, tmp_path) as url:
        yield url, tmp_path


def _settle(page, want: int) -> list[dict]:
    """Wait until at least ``want`` SVG charts have painted marks; their facts."""
    deadline = time.monotonic() + 60
    while True:
        facts = page.evaluate(_CHART_FACTS)
        if len(facts) >= want and all(f["marks"] > 0 for f in facts):
            return facts
        if time.monotonic() >= deadline:
            page.screenshot(path=os.environ.get("SPLITSWEEP_FAILED_SHOT", "/dev/null"), full_page=True)
        assert time.monotonic() < deadline, f"charts did not paint: {[(f['title'], f['marks']) for f in facts]}"
        page.wait_for_timeout(300)


def test_every_view_of_a_real_sweep(sweep_server):
    from playwright.sync_api import sync_playwright

    url, tmp = sweep_server
    copy_to = os.environ.get("SPLITSWEEP_SCREENSHOTS")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            # Tall: Streamlit scrolls inside its main block, so a full-page shot is the viewport.
            page = browser.new_page(viewport={"width": 1500, "height": 2800})
            page.goto(url, wait_until="domcontentloaded")
            page.get_by_text("splitsweep: ").first.wait_for(timeout=90_000)
            seen_titles = {}
            for n, (tab, text, charts) in enumerate(VIEWS):
                page.get_by_role("tab", name=tab).click()
                page.get_by_text(text).first.wait_for(timeout=90_000)
                facts = _settle(page, charts)
                _no_exception(page)
                for fact in facts:
                    assert fact["marks"] > 0, (tab, fact)  # the chart has data
                    assert len(fact["axes"]) >= 2, (tab, fact)  # both axes, each with a title
                    for axis in fact["axes"]:
                        assert "titled '" in axis and "titled ''" not in axis, (tab, axis)
                seen_titles[tab] = [f["title"] for f in facts]
                page.wait_for_timeout(400)  # Vega's last paint before the picture
                shot = tmp / f"{n + 1}-{tab.split()[0].lower().replace('–', '-')}.png"
                page.screenshot(path=str(shot), full_page=True)
                assert shot.stat().st_size > 10_000
                if copy_to:
                    Path(copy_to).mkdir(parents=True, exist_ok=True)
                    shutil.copy(shot, Path(copy_to) / shot.name)
            assert any("against bits per pixel" in t for t in seen_titles["Rate–accuracy"]), seen_titles
            assert any("compute vs bandwidth" in t for t in seen_titles["Split points"]), seen_titles
            assert any("coded kB per image" in t for t in seen_titles["Split points"]), seen_titles
        finally:
            browser.close()
