"""Adaptive search against the exhaustive grid: per split the chosen setting, its ΔAP interval, tasks run.

Usage (the search's results location, then the grid's; they may be the same location when the
grid was run on after the search, re-using its rows):

    python benchmarks/search_bench.py SEARCH_SPEC SEARCH_RESULTS [GRID_RESULTS]

SEARCH_SPEC is the spec with the `search:` section (its goal and settings define what the grid
picks: the cheapest value whose ΔAP on all images meets the goal). Without GRID_RESULTS only
the search's side is printed. Wall times come from the `wall_s=` lines (else the sweep's own `run now in S s`) of the
logs given with --search-log / --grid-log, if any.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def wall(log: str | None) -> str:
    if not log or not Path(log).exists():
        return "-"
    text = Path(log).read_text(errors="replace")
    # a wrapper's `wall_s=N` lines, else the sweep's own "(N run now in S s)"
    found = re.findall(r"wall_s=(\d+)", text) or re.findall(r"run now in ([\d.]+) s\)", text)
    return f"{sum(float(x) for x in found):.0f} s" if found else "-"


def main() -> int:
    from orchestrator import build_plan, load_spec
    from orchestrator.planning.plan import BASELINE
    from orchestrator.planning.search import read_search, stored_evidence, targets_for
    from orchestrator.reporting.intervals import paired_delta
    from orchestrator.results.store import ResultsStore

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec")
    parser.add_argument("search_results")
    parser.add_argument("grid_results", nargs="?")
    parser.add_argument("--search-log")
    parser.add_argument("--grid-log")
    args = parser.parse_args()

    spec = load_spec(args.spec)
    plan = build_plan(spec)
    summary = read_search(ResultsStore(args.search_results)) or {}
    by_split = {(t["model"], t["variant"], t["split"], t["codec"]): t for t in summary.get("targets", [])}
    grid = None
    if args.grid_results:
        targets = targets_for(plan, spec.search)
        grid = stored_evidence(ResultsStore(args.grid_results), plan, targets, mode="ground-truth", threshold=0.5)
    ids = [r.image_id for r in plan.records]
    print(f"search: {summary.get('tasks_run', 0)} tasks of {summary.get('grid_tasks', len(plan.tasks))} "
          f"({summary.get('state', 'not run')}), wall {wall(args.search_log)}; grid wall {wall(args.grid_log)}")
    print(f"{'split':>5} {'search':>8} {'ΔAP search [95%]':>24} {'grid':>6} {'ΔAP grid [95%]':>24} {'tasks':>9}  agree  note")
    for target in targets_for(plan, spec.search):
        key = (target.model, target.variant, target.split, target.codec)
        s = by_split.get(key, {})
        chosen = "-" if s.get("chosen") is None else f"{s['chosen']:g}"
        s_iv = "" if s.get("estimate") is None else f"{s['estimate']:+.2f} [{s['low']:+.2f}, {s['high']:+.2f}]"
        g_text, g_iv, best = "?", "", None
        if grid is not None:
            base = {i: grid.rows.get((target.model, target.variant, -1, BASELINE, i), (None, 0))[0] for i in ids}
            for setting in target.settings:
                found = [grid.rows.get((target.model, target.variant, target.split, setting, i)) for i in ids]
                if any(f is None or f[0] is None for f in found) or any(b is None for b in base.values()):
                    g_text = "incomplete"
                    best = None
                    break
                iv = paired_delta(grid.gt, {i: f[0] for i, f in zip(ids, found)}, base, ids,
                                  metric=target.goal.metric, resamples=spec.search.resamples, seed=spec.search.seed)
                if iv.estimate >= -float(target.goal.within):
                    best = (setting.params[target.param], iv)  # settings run most accurate → cheapest
            if best is not None:
                g_text = f"{best[0]:g}"
                g_iv = f"{best[1].estimate:+.2f} [{best[1].low:+.2f}, {best[1].high:+.2f}]"
            elif g_text != "incomplete":
                g_text = "-"
        tasks = f"{s.get('tasks', 0)}/{s.get('grid_tasks', 0)}"
        agree = ""
        if best is not None and s.get("chosen") is not None:
            overlap = s["low"] is not None and s["low"] <= best[1].high and best[1].low <= s["high"]
            agree = "same" if s["chosen"] == best[0] else ("intervals overlap" if overlap else "DIFFERENT")
        print(f"{target.split:>5} {chosen:>8} {s_iv:>24} {g_text:>6} {g_iv:>24} {tasks:>9}  {agree}  {s.get('note', '')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
