"""The `splitsweep` command line: a thin layer that builds one object and calls it."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings
from collections.abc import Sequence

from tasks.errors import LeaseLostError, SplitsweepError

__all__ = ["main", "COMMANDS", "EXIT_OK", "EXIT_FAILED_TASKS", "EXIT_USAGE", "EXIT_LEASE_LOST", "EXIT_INTERRUPTED",
           "EXIT_TERMINATED", "exit_code"]

# Exit codes (README, "Exit codes"): scripts and cluster jobs rely on them.
EXIT_OK = 0  # done; for `run`: every planned task is stored ok
EXIT_FAILED_TASKS = 3  # `run` finished, but some tasks failed (or could not run)
EXIT_USAGE = 2  # bad input: spec, data, results location, command line
EXIT_LEASE_LOST = 4  # `run`/`demo` stopped: another driver took the results location's lease mid-run
EXIT_INTERRUPTED = 130  # Ctrl-C (SIGINT): rows so far are stored
EXIT_TERMINATED = 143  # SIGTERM (SLURM, Kubernetes, `ray stop`): rows so far are stored

# One module per command under orchestrator/commands/, each with NAME, HELP,
# add_arguments(parser) and run(args) -> int. Listed here, imported only when used,
# so `splitsweep inspect` never pays for importing Ray.
COMMANDS: dict[str, str] = {
    "demo": "Fetch the demo detector and photos if needed, run the demo sweep on local Ray, print the summary.",
    "run": "Run or resume a sweep: only tasks not yet stored are run (the report comes from `splitsweep report`).",
    "validate": "Check a sweep spec (keys, models, split points, codecs, dataset) without running anything.",
    "plan": "Show the tasks and work units a spec makes, and how many are already stored.",
    "status": "Show done / failed / remaining tasks of a results location, per model, split and codec.",
    "report": "Per-configuration AP, bytes, bits per pixel, compression ratio and timings; CSV out.",
    "inspect": "List the split points of an ONNX model: cut tensors, shapes and bytes per node.",
    "assets": "Fetch the demo detectors (npm) and convert them to ONNX in the cache; no-op when present.",
    "dashboard": "Open the Streamlit dashboard on a results location.",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="splitsweep",
        description="Sweep split points, feature codecs and model variants of detection networks.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, help_text in COMMANDS.items():
        sub.add_parser(name, help=help_text, description=help_text)
    return parser


def _command(name: str):
    return importlib.import_module(f"orchestrator.commands.{name.replace('-', '_')}")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    # Parse the command name first, then let that command's module add its own options.
    known, _ = parser.parse_known_args(argv[:1] or ["--help"])
    module = _command(known.command)
    full = argparse.ArgumentParser(prog=f"splitsweep {known.command}", description=COMMANDS[known.command])
    module.add_arguments(full)
    args = full.parse_args(argv[1:])
    # A warning (an old spec spelling, a damaged part file) is one line, like an error.
    warnings.formatwarning = lambda message, *_args, **_kwargs: f"splitsweep: warning: {message}\n"
    _driver_memory_pool()
    try:
        return int(module.run(args) or 0)
    except (SplitsweepError, KeyboardInterrupt) as exc:
        return exit_code(exc, command=known.command)
    except BrokenPipeError:
        # `splitsweep inspect --json | head`: the reader left; nothing to say, and Python's
        # flush at exit must not fail on the closed pipe either (the Python docs' recipe).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


def _driver_memory_pool() -> None:
    """Arrow's buffers in this process from the system allocator, unless the user chose one
    (ARROW_DEFAULT_MEMORY_POOL). The driver reads columns once and hands them to numpy and
    pandas: mimalloc, Arrow's default, keeps what it freed for Arrow alone, so on a
    million-task plan `status` peaked ~45 MB higher and `plan` ~30 MB
    (benchmarks/million_bench.py)."""
    if "ARROW_DEFAULT_MEMORY_POOL" not in os.environ:
        import pyarrow as pa

        pa.set_memory_pool(pa.system_memory_pool())


def exit_code(exc: BaseException, *, command: str) -> int:
    """Print the one line for an error or interruption that ended `command`; its exit code."""
    resumes = command in ("run", "demo")
    if isinstance(exc, LeaseLostError):
        print(f"splitsweep: error: {exc}", file=sys.stderr)
        return EXIT_LEASE_LOST
    if isinstance(exc, SplitsweepError):
        print(f"splitsweep: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if isinstance(exc, KeyboardInterrupt):
        terminated = type(exc).__name__ == "Terminated"  # orchestrator.execution.sweep.Terminated, not imported here
        hint = " (run the same command again to resume)" if resumes else ""
        print(f"splitsweep: interrupted by {'SIGTERM' if terminated else 'Ctrl-C'}; "
              f"every row finished so far is stored{hint}", file=sys.stderr)
        return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED
    raise exc


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
