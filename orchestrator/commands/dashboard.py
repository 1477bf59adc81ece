"""`splitsweep dashboard RESULTS`: start the Streamlit dashboard on a results location and print its URL."""

from __future__ import annotations

import argparse
import importlib.util
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import webbrowser
from pathlib import Path

from tasks.errors import ResultsError, SplitsweepError

__all__ = ["APP", "add_arguments", "build_command", "dashboard_url", "run"]

APP = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", metavar="RESULTS", help="results directory or URI of a sweep (may still be running)")
    parser.add_argument("--port", type=int, default=8501, help="port to serve on (default: 8501)")
    parser.add_argument("--host", default="localhost", help="address to listen on (default: localhost)")
    parser.add_argument("--no-browser", action="store_true", help="do not open a web browser; only print the URL")
    parser.add_argument("--all", action="store_true",
                        help="show every stored configuration, also those the current plan no longer has")


class _Terminated(Exception):
    """SIGTERM arrived: stop the Streamlit child, then exit."""


def dashboard_url(host: str, port: int) -> str:
    return f"http://{'localhost' if host in ('', '0.0.0.0', '::') else host}:{port}"


def build_command(results: str, *, port: int = 8501, host: str = "localhost", include_all: bool = False) -> list[str]:
    """The `streamlit run` command line serving the dashboard of ``results``."""
    return [
        sys.executable, "-m", "streamlit", "run", str(APP),
        "--server.headless", "true",
        "--server.port", str(port),
        "--server.address", host,
        "--browser.gatherUsageStats", "false",
        "--server.fileWatcherType", "none",
        "--client.toolbarMode", "minimal",
        "--", results, *(["--all"] if include_all else []),
    ]  # fmt: skip


def _check(results: str) -> str:
    if importlib.util.find_spec("streamlit") is None or importlib.util.find_spec("altair") is None:
        raise SplitsweepError("the dashboard needs Streamlit and Altair: pip install 'splitsweep[dashboard]'")
    if "://" in results:
        return results
    path = Path(results).expanduser()
    if not path.is_dir():
        raise ResultsError("results directory does not exist", file=str(path))
    return str(path.resolve())


def _wait_ready(url: str, process: subprocess.Popen, *, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.25)
    return False


def run(args: argparse.Namespace) -> int:
    results = _check(args.results)
    command = build_command(results, port=args.port, host=args.host, include_all=getattr(args, "all", False))
    url = dashboard_url(args.host, args.port)
    env = dict(os.environ)
    # The app imports dashboard/ and orchestrator/ from this checkout even when not installed.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(APP.parents[1]), env.get("PYTHONPATH", "")) if p)
    process = subprocess.Popen(command, env=env)

    def on_sigterm(signum, frame):  # stop Streamlit too (the finally below), then exit 143
        raise _Terminated

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        if not _wait_ready(url, process):
            code = process.poll()
            if code is not None:
                raise SplitsweepError(f"the Streamlit server exited with status {code} (is port {args.port} free?)")
            print(f"splitsweep: the dashboard is slow to start; it will be at {url}", file=sys.stderr)
        print(f"splitsweep: dashboard of {results} at {url} (Ctrl-C stops it)", flush=True)
        if not args.no_browser:
            webbrowser.open(url)
        return process.wait()
    except _Terminated:
        print("splitsweep: dashboard stopped (SIGTERM)", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
