"""`splitsweep run SPEC`: run (or resume) a sweep on local Ray or a cluster."""

from __future__ import annotations

NAME = "run"
HELP = "Run or resume a sweep: only tasks not yet stored are run."


def add_arguments(parser) -> None:
    parser.add_argument("spec", help="sweep spec (YAML)")
    parser.add_argument("--address", help="Ray cluster address ('auto' on a cluster node); default: $RAY_ADDRESS or a local Ray")
    parser.add_argument("--workers", type=int, help="number of workers (default: spec's execution.workers)")
    parser.add_argument("--retry-failed", action="store_true", help="run failed tasks again")
    parser.add_argument("--no-report", action="store_true", help="skip the report at the end")


def run(args) -> int:
    from orchestrator.spec import load_spec
    from orchestrator.sweep import SweepOptions, run_sweep

    spec = load_spec(args.spec)
    result = run_sweep(spec, SweepOptions(address=args.address, workers=args.workers, retry_failed=args.retry_failed))
    c = result.plan_counts
    print(
        f"sweep {spec.sweep}: {c['ok']} ok, {c['failed']} failed, {c['remaining']} remaining of {c['tasks']} tasks "
        f"({result.stats.rows_ok + result.stats.rows_failed} run now in {result.stats.seconds:.1f} s) → {result.location}"
    )
    if result.stats.interrupted:
        return 130
    return 0 if c["remaining"] == 0 else 1
