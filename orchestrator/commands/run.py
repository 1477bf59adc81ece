"""`splitsweep run SPEC`: run (or resume) a sweep on local Ray or a cluster."""

from __future__ import annotations

import sys


def add_arguments(parser) -> None:
    parser.add_argument("spec", help="sweep spec (YAML)")
    parser.add_argument("--address", help="Ray cluster address ('auto' on a cluster node); default: $RAY_ADDRESS or a local Ray")
    parser.add_argument("--workers", type=int, help="number of workers (default: spec's execution.workers)")
    parser.add_argument("--retry-failed", action="store_true", help="run failed tasks again")


def run(args) -> int:
    from orchestrator import load_spec, run_sweep
    from orchestrator.execution.sweep import SweepOptions

    spec = load_spec(args.spec)
    result = run_sweep(spec, SweepOptions(address=args.address, workers=args.workers, retry_failed=args.retry_failed))
    c = result.plan_counts
    if result.search is not None:
        from orchestrator.planning.search import format_search

        print(format_search(result.search))
        print(
            f"sweep {spec.sweep} (adaptive search, {result.search['state']}): {c['ok']} ok, {c['failed']} failed of "
            f"{c['tasks']} grid tasks ({result.stats.rows_ok + result.stats.rows_failed} run now in "
            f"{result.stats.seconds:.1f} s) → {result.location}"
        )
        return finished_code(result) if result.search["state"] != "done" else 0
    print(
        f"sweep {spec.sweep}: {c['ok']} ok, {c['failed']} failed, {c['remaining']} remaining of {c['tasks']} tasks "
        f"({result.stats.rows_ok + result.stats.rows_failed} run now in {result.stats.seconds:.1f} s) → {result.location}"
    )
    return finished_code(result)


def finished_code(result) -> int:
    """0 when every planned task is stored ok; otherwise 3, with a last line saying how many
    failed and the most common error."""
    import pyarrow.compute as pc

    from orchestrator.cli import EXIT_FAILED_TASKS, EXIT_OK
    from orchestrator.results.store import ResultsStore, latest_rows

    c = result.plan_counts
    if c["failed"] == 0 and c["remaining"] == 0:
        return EXIT_OK
    errors: dict[str, int] = {}
    if c["failed"]:
        rows = latest_rows(ResultsStore(result.location).read_rows(["task_id", "status", "error", "finished_at"]))
        rows = rows.filter(pc.equal(rows["status"], "failed"))
        if result.planned is not None:
            rows = rows.filter(pc.is_in(rows["task_id"], value_set=result.planned))
        for error in rows["error"].to_pylist():
            errors[error or "?"] = errors.get(error or "?", 0) + 1
    common = max(errors.items(), key=lambda kv: kv[1]) if errors else None
    text = f"splitsweep: {c['failed']} of {c['tasks']} tasks failed"
    if c["remaining"]:
        text += f", {c['remaining']} not run"
    if common:
        text += f"; most common error ({common[1]}×): {common[0][:300]}"
    print(text, file=sys.stderr)
    return EXIT_FAILED_TASKS
