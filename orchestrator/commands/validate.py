"""`splitsweep validate SPEC`: check a spec, its models, split points, codecs and dataset; no Ray."""

from __future__ import annotations

import sys


def add_arguments(parser) -> None:
    parser.add_argument("spec", help="sweep spec (YAML)")


def run(args) -> int:
    from orchestrator import build_plan, load_spec

    spec = load_spec(args.spec)
    plan = build_plan(spec)
    counts = plan.counts()
    search = ""
    if spec.search is not None:
        from orchestrator.planning.search import targets_for

        targets = targets_for(plan, spec.search)
        search = f"; adaptive search over {len(targets)} (model, variant, split, codec) line(s)"
    problems = plan.dataset.problems()
    for file, reason in problems:
        print(f"splitsweep: warning: {file}: {reason} (its tasks will fail; the others run)", file=sys.stderr)
    print(
        f"{args.spec}: ok — {len(plan.models)} model(s), "
        f"{sum(len(m.variants) for m in plan.models)} variant(s), "
        f"{sum(len(m.splits) for m in plan.models)} split point(s)"
        f"{' + remote inference (input)' if any(m.remote for m in plan.models) else ''}, "
        f"{len(plan.settings)} codec setting(s), "
        f"{len(plan.records)} image(s): {counts['tasks']} tasks in {counts['units']} work units"
        + (f"; {len(problems)} image(s) unreadable" if problems else "")
        + search
    )
    return 0
