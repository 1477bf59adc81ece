"""`splitsweep status RESULTS`: done / failed / remaining per model, split and codec."""

from __future__ import annotations


def add_arguments(parser) -> None:
    parser.add_argument("results", help="results directory or URI")
    parser.add_argument("--errors", type=int, default=5, help="show this many distinct error messages")


def run(args) -> int:
    from orchestrator.reporting.table import format_table
    from orchestrator.results.schema import split_label
    from orchestrator.results.status import sweep_status

    status = sweep_status(args.results)
    cols = ["model", "variant", "split", "codec", "tasks", "ok", "failed", "remaining"]
    # rows come sorted by the numeric split (input, unsplit, node indices); shown by label
    print(format_table([{**r, "split": split_label(r["split"])} for r in status.rows], cols))
    t = status.totals
    print(f"\n{t['ok']} ok, {t['failed']} failed, {t['remaining']} remaining of {t['tasks']} tasks"
          + (f"; last row {status.last_finished}" if status.last_finished else ""))
    for message, count in status.errors[: args.errors]:
        print(f"  {count}× {message}")
    return 0
