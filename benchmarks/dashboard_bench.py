"""First-view render time of the dashboard on a 200,000-row synthetic results store, cold and warm.

    python benchmarks/dashboard_bench.py                  # AppTest, in-process
    python benchmarks/dashboard_bench.py --browser        # also the real server + headless Chromium
    python benchmarks/dashboard_bench.py --rows-growth    # also: first view after a new part file

The store is written by tests/fixtures_results.py (``bench_configs``: one model, the
unsplit baseline and 7 NNCodec settings, 25,000 images each) under ``--dir`` and its
report built once (about 1.5 min on 2 cores); later runs reuse it.

Measured, each the best of ``--repeat``:
- cold process: ``python -c 'AppTest.from_file(app).run()'`` in a new process (imports,
  report check, progress read, first view);
- cold: in this process with every Streamlit cache cleared (what the first browser
  session of a fresh server pays, minus imports);
- warm, new session: a new AppTest (a new browser session) with the caches filled;
- warm, rerun: the same session run again (any widget interaction);
- each other view, warm.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

APP = str(ROOT / "dashboard" / "app.py")
VIEWS = ["Overview", "Rate–accuracy", "Split points", "BD-rate & Pareto", "Variants", "Image drill-down", "Table"]


def ensure_store(root: Path, *, images: int, configs: int) -> Path:
    from orchestrator import build_report
    from tests.fixtures_results import bench_configs, write_store

    marker = root / f".bench-{images}x{configs}"
    if marker.exists() and (root / "report" / "configs.parquet").exists():
        return root
    if root.exists():
        shutil.rmtree(root)
    t = time.perf_counter()
    write_store(root, bench_configs(configs), n_images=images, rows_per_part=5_000)
    print(f"wrote {images * configs:,} rows in {time.perf_counter() - t:.1f} s; building the report once…", flush=True)
    t = time.perf_counter()
    build_report(root, workers=max(1, os.cpu_count() or 1))
    print(f"report built in {time.perf_counter() - t:.1f} s", flush=True)
    marker.write_text("ok\n")
    return root


def _app(location: Path, view: str):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=600)
    at.session_state["results_location"] = str(location)
    at.session_state["view"] = view
    return at


def _run(at) -> float:
    t = time.perf_counter()
    at.run()
    elapsed = time.perf_counter() - t
    if at.exception:
        raise RuntimeError(at.exception[0].value)
    return elapsed


def _clear() -> None:
    import streamlit as st

    st.cache_data.clear()
    st.cache_resource.clear()


def cold_process(location: Path) -> float:
    code = (
        "import time; t = time.perf_counter()\n"
        "from streamlit.testing.v1 import AppTest\n"
        f"at = AppTest.from_file({APP!r}, default_timeout=600)\n"
        f"at.session_state['results_location'] = {str(location)!r}\n"
        "at.run(); assert not at.exception, at.exception\n"
        "print(time.perf_counter() - t)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def apptest_numbers(location: Path, *, repeat: int) -> dict[str, float]:
    numbers = {"cold process (first view, imports included)": min(cold_process(location) for _ in range(repeat))}
    colds = []
    for _ in range(repeat):
        _clear()
        colds.append(_run(_app(location, "Overview")))
    numbers["cold (caches cleared)"] = min(colds)
    numbers["warm, new session"] = min(_run(_app(location, "Overview")) for _ in range(repeat))
    at = _app(location, "Overview")
    _run(at)
    numbers["warm, rerun of a session"] = min(_run(at) for _ in range(repeat))
    for view in VIEWS[1:]:
        at = _app(location, view)
        _run(at)  # a view's own first use (e.g. the drill-down's image rows)
        numbers[f"warm view: {view}"] = min(_run(at) for _ in range(repeat))
    return numbers


def growth_numbers(location: Path) -> dict[str, float]:
    """First view after one more part file: the version changes, the report is brought up
    to date (one configuration re-scored)."""
    from tests.fixtures_results import bench_configs, config_rows, write_part

    work = Path(tempfile.mkdtemp(prefix="dash-bench-")) / "results"
    shutil.copytree(location, work)
    try:
        config = bench_configs(2)[1]
        write_part(work, config_rows(config, range(10_000_001, 10_005_001)), "part-r9-99999.parquet")
        _clear()
        return {"first view after a new 5,000-row part (report re-scores 1 configuration)": _run(_app(work, "Overview"))}
    finally:
        shutil.rmtree(work.parent, ignore_errors=True)


def browser_numbers(location: Path) -> dict[str, float]:
    """The real thing: `splitsweep dashboard` and headless Chromium, until the first chart is drawn."""
    import socket
    import urllib.request

    from playwright.sync_api import sync_playwright

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://localhost:{port}"
    process = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "dashboard", str(location), "--port", str(port), "--no-browser"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    numbers = {}
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(f"{url}/_stcore/health", timeout=1)
                break
            except OSError:
                time.sleep(0.25)
        args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=args)
            for name in ("browser, cold server: page load to first chart", "browser, warm: page load to first chart"):
                page = browser.new_page()
                t = time.perf_counter()
                page.goto(url, wait_until="domcontentloaded")
                page.wait_for_function(
                    "document.querySelectorAll('.vega-embed canvas, .vega-embed svg.marks').length >= 1", timeout=600_000
                )
                numbers[name] = time.perf_counter() - t
                page.close()
            browser.close()
    finally:
        import signal

        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    return numbers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "splitsweep-dashboard-bench")
    parser.add_argument("--images", type=int, default=25_000)
    parser.add_argument("--configs", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--browser", action="store_true", help="also time the real server in headless Chromium")
    parser.add_argument("--rows-growth", action="store_true", help="also time the first view after new rows")
    args = parser.parse_args()

    import logging

    logging.getLogger("streamlit").setLevel(logging.ERROR)  # bare-mode warnings of AppTest
    location = ensure_store(args.dir, images=args.images, configs=args.configs)
    print(f"results: {location} ({args.images * args.configs:,} rows, {args.configs} configurations)")
    numbers = apptest_numbers(location, repeat=args.repeat)
    if args.rows_growth:
        numbers.update(growth_numbers(location))
    if args.browser:
        numbers.update(browser_numbers(location))
    width = max(len(k) for k in numbers)
    for name, seconds in numbers.items():
        print(f"{name:<{width}}  {seconds:6.2f} s")


if __name__ == "__main__":
    main()
