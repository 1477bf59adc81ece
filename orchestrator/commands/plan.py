"""`splitsweep plan SPEC`: how many tasks and work units, and how many are already stored; no Ray."""

from __future__ import annotations

from collections import Counter

NAME = "plan"
HELP = "Show the tasks and work units a spec makes, and how many are already stored."


def add_arguments(parser) -> None:
    parser.add_argument("spec", help="sweep spec (YAML)")
    parser.add_argument("--retry-failed", action="store_true", help="count failed tasks as to be run again")


def run(args) -> int:
    from orchestrator.plan import build_plan
    from orchestrator.schema import split_label
    from orchestrator.spec import load_spec
    from orchestrator.store import ResultsStore
    from orchestrator.table import format_table

    spec = load_spec(args.spec)
    plan = build_plan(spec)
    store = ResultsStore(spec.output_location)
    status = store.task_status() if store.exists() and store.check_meta() is not None else {}
    if args.retry_failed:
        status = {k: v for k, v in status.items() if v == "ok"}
    counts = plan.counts(status)
    rows = []
    by = Counter()
    for t in plan.tasks:
        by[(t.model, t.variant, t.split, t.setting.label, status.get(t.task_id, "remaining"))] += 1
    keys = sorted({k[:4] for k in by})
    for k in keys:
        rows.append({"model": k[0], "variant": k[1], "split": split_label(k[2]), "codec": k[3],
                     "tasks": sum(by[k + (s,)] for s in ("ok", "failed", "remaining")),
                     "ok": by[k + ("ok",)], "failed": by[k + ("failed",)], "remaining": by[k + ("remaining",)]})
    print(format_table(rows, ["model", "variant", "split", "codec", "tasks", "ok", "failed", "remaining"]))
    units = plan.units(skip={t for t, s in status.items()}, chunk_tasks=spec.execution.chunk_tasks)
    print(
        f"\n{counts['tasks']} tasks in {counts['units']} work units (head runs); stored: {counts['ok']} ok, "
        f"{counts['failed']} failed; to run: {counts['remaining']} tasks in {len(units)} units → {spec.output_location}"
    )
    return 0
