"""`splitsweep demo`: assets if needed, the demo sweep on local Ray, the summary and its BD-rates against remote inference, the dashboard command."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path


def add_arguments(parser) -> None:
    parser.add_argument("--output", default="results/demo", help="results directory (default: results/demo)")
    parser.add_argument("--full", action="store_true", help="run the full grid (demo-full.yaml) instead of the quick one")
    parser.add_argument("--workers", type=int, help="number of workers (default: one per CPU)")


def run(args) -> int:
    from orchestrator import load_spec, run_sweep
    from orchestrator.data.assets import ensure_models
    from orchestrator.data.demo_data import ensure_demo_images
    from orchestrator.execution.sweep import SweepOptions
    from orchestrator.results.store import ResultsStore
    from orchestrator.specs import DEMO_SPEC, FULL_SPEC

    spec_file = FULL_SPEC if args.full else DEMO_SPEC
    output = os.path.abspath(args.output)
    # Before fetching anything: a foreign --output is refused now, not after the download.
    store = ResultsStore(output)
    if store.check_meta() is None:
        store.refuse_foreign()
    print(f"demo: spec {spec_file}", file=sys.stderr)
    ensure_models()
    ensure_demo_images()
    spec = load_spec(spec_file)
    spec = spec.model_copy(update={"output": output})
    result = run_sweep(spec, SweepOptions(workers=args.workers))
    return finish(result, shown=args.output)


def finish(result, *, shown: str) -> int:
    """The demo's summary, BD table and next commands; the exit code of `run`
    (0 all ok, 3 with the failed count and the most common error)."""
    from orchestrator import build_report
    from orchestrator.commands.run import finished_code
    from tasks.errors import ResultsError

    output = result.location
    try:
        report = build_report(output)
    except ResultsError as exc:  # e.g. every task failed: the exit code below still says so
        print(f"demo: no summary: {exc}", file=sys.stderr)
    else:
        print()
        summary_table(sys.stdout, report.table)
        print()
        bd_summary(sys.stdout, report.table)
    c = result.plan_counts
    print(f"\n{c['ok']} ok, {c['failed']} failed of {c['tasks']} tasks; results in {output}")
    me = program()
    print(f"Open the dashboard:  {me} dashboard {shown}")
    print(f"Full report as CSV:  {me} report {shown} --csv report.csv")
    return finished_code(result)


def summary_table(out, table) -> None:
    """mAP and compression ratio per split and codec setting: what the demo is for."""
    from orchestrator.commands.report import fmt_split
    from orchestrator.reporting.table import fmt_float, fmt_pct, render_columns

    # the report's own order: settings in numeric order (quality=20 before quality=100)
    render_columns(
        out,
        table,
        [
            ("split", "split", fmt_split),
            ("codec", "codec", str),
            ("setting", "setting", str),
            ("images", "n_images", fmt_float(0)),
            ("mAP", "ap", fmt_float(1)),
            ("AP50", "ap50", fmt_float(1)),
            ("ΔmAP", "delta_ap", fmt_float(1)),
            ("coded", "coded_bytes", _kb),
            ("ratio", "ratio", fmt_float(1)),
            ("saving", "saving", fmt_pct),
        ],
    )
    out.write("mAP: COCO AP@[.5:.95] in points; ΔmAP against the unsplit model (split unsplit: the whole model on the uncoded image); split input: remote "
              "inference (the image at the model's input size coded, the whole model on the server); coded: mean KB "
              "per image crossing the cut (the image bitstream at input); ratio: float32 bytes / coded bytes\n")


def bd_summary(out, table) -> None:
    """BD-rate and BD-AP of every split's codecs against remote inference: the demo's answer."""
    from orchestrator.commands.report import bd_for, bd_title, fmt_split
    from orchestrator.reporting.table import fmt_float, render_columns

    bd, reason = bd_for(table, anchor=None)
    if bd.empty:
        out.write(f"No BD-rates: {reason}\n")
        return
    out.write(bd_title(bd, rate="bpp", metric="ap", fit="none") + "\n")
    render_columns(
        out,
        bd,
        [
            ("split", "split", fmt_split),
            ("codec", "codec", str),
            ("points", "points", fmt_float(0)),
            ("BD-rate", "bd_rate", _signed_pct),
            ("BD-AP", "bd_ap", fmt_float(2)),
            ("note", "note", str),
        ],
    )


def _signed_pct(value) -> str:
    import math

    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:+,.1f}%"


def _kb(value) -> str:
    import math

    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value / 1000:,.0f} KB"


def program() -> str:
    """How to call splitsweep from here: plain ``splitsweep`` when that is the one on PATH,
    else this environment's script (``.venv/bin/splitsweep`` after ``make demo``)."""
    script = Path(sys.executable).parent / "splitsweep"
    found = shutil.which("splitsweep")
    if not script.exists() or (found is not None and Path(found).resolve() == script.resolve()):
        return "splitsweep"
    try:
        relative = os.path.relpath(script)
    except ValueError:  # another drive
        return str(script)
    return str(script) if relative.startswith("..") else relative
