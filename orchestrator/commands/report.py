"""`splitsweep report RESULTS`: the per-configuration table, BD-rates against remote inference (or any anchor codec), Pareto fronts."""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from pathlib import Path
from typing import Any, TextIO

import pandas as pd

from orchestrator import build_report, open_results
from orchestrator.reporting.bdrate import FITS, REMOTE_SPLIT, bd_table, sequence_families
from orchestrator.reporting.pareto import cheapest_within, delta_noise, report_fronts
from orchestrator.reporting.report import CSV_FLOAT_FORMAT, MPEG_COLUMNS, mpeg_columns, with_rates
from orchestrator.reporting.table import fmt_float as _fmt
from orchestrator.reporting.table import fmt_pct as _pct
from orchestrator.reporting.table import render_columns as _render
from orchestrator.results.schema import split_label
from tasks.errors import ResultsError

__all__ = ["add_arguments", "run", "mpeg_columns", "MPEG_COLUMNS", "bd_for", "fmt_split"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", metavar="RESULTS", help="results directory of a sweep")
    parser.add_argument("--csv", metavar="FILE", type=Path, help="also write the configuration table to FILE as CSV")
    parser.add_argument(
        "--anchor",
        metavar="CODEC",
        help="codec BD-rates are measured against: an image codec (jpeg, webp, avif, hevc) anchors on its "
        "remote-inference curve of the same model, a tensor codec compares within each split (default: remote "
        "inference with hevc, avif, webp or jpeg, the first stored with >= 4 settings; else nncodec, else the codec "
        "with the most settings)",
    )
    parser.add_argument(
        "--fit",
        choices=tuple(FITS),
        default="none",
        help="curve fit before the Bjøntegaard integral: none (points as measured), monotonic (least-squares "
        "non-decreasing fit of the metric over rate, as MPEG FCM/VCM evaluations do), envelope (each curve's "
        "Pareto front); default: none",
    )
    parser.add_argument(
        "--metric",
        choices=("ap", "ap50", "ap75", "miou"),
        help="accuracy axis of the BD numbers (default: ap; miou in reference evaluation, where AP saturates)",
    )
    parser.add_argument(
        "--format", choices=("table", "csv", "json"), default="table", help="what to print (default: table)"
    )
    parser.add_argument(
        "--rate", choices=("bpp", "coded_bytes", "kbps"), default="bpp",
        help="rate axis of the BD-rates (default: bpp; kbps for video sweeps, at the video's frame rate: the same "
             "BD-rate as bpp when all frames share one size)"
    )
    parser.add_argument(
        "--within",
        type=float,
        metavar="POINTS",
        help="also show, per model, the cheapest configuration at most POINTS AP points below the uncompressed AP",
    )
    parser.add_argument(
        "--all", action="store_true",
        help="report every stored row, also configurations and images the current plan (plan.parquet) no longer has",
    )
    parser.add_argument(
        "--cttc", action="store_true",
        help="video sweeps: print the MPEG CTTC-style per-sequence table instead (sequence, split, codec, QP, kbps, "
             "AP, fidelity, encode / decode seconds of the whole sequence); hevc and hevc sequence apart",
    )
    parser.add_argument(
        "--figures", metavar="DIR", type=Path,
        help="also write paper output to DIR: the rate-accuracy figure per model (PDF, SVG, PNG; AP with 95%% "
             "intervals against bpp, or kbps for video) and the BD table as LaTeX (bd.tex) and Markdown (bd.md)",
    )
    parser.add_argument("--force", action="store_true", help="re-score every configuration, not only changed ones")
    parser.add_argument(
        "--workers", type=_positive, default=1, metavar="N", help="score configurations in N processes (default: 1)"
    )


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def run(args: argparse.Namespace) -> int:
    from orchestrator import open_results
    from orchestrator.planning.search import format_search, read_search
    from orchestrator.results.reading import plan_scope

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scope = None if args.all else plan_scope(open_results(args.results))
        result = build_report(args.results, force=args.force, workers=args.workers,
                              task_ids=None if scope is None else scope.task_ids)
    for w in caught:
        print(f"splitsweep: warning: {w.message}", file=sys.stderr)
    if scope is not None and scope.line():
        print(f"splitsweep: {scope.line()}", file=sys.stderr)
    frame_rate = open_results(args.results).meta.frame_rate
    if args.cttc:
        return _print_cttc(args, result.table, frame_rate)
    search = read_search(open_results(args.results))
    table = with_device_cost(with_rates(report_fronts(result.table), frame_rate), args.results)
    metric = args.metric or default_metric(args.results)
    bd, reason = bd_for(table, anchor=args.anchor, rate=args.rate, metric=metric, fit=args.fit)
    bd = with_kbps_range(bd, table)
    cheapest = None if args.within is None else cheapest_within(table, points=args.within)
    if args.csv is not None:
        try:
            args.csv.parent.mkdir(parents=True, exist_ok=True)
            mpeg_columns(table).to_csv(args.csv, index=False, float_format=CSV_FLOAT_FORMAT)
        except OSError as exc:
            raise ResultsError(f"cannot write the CSV file: {exc.strerror or exc}", file=str(args.csv),
                               key="--csv") from None
    if args.figures is not None:
        from orchestrator.reporting.figures import write_figures

        try:
            written = write_figures(table, bd, args.figures, rate="kbps" if "kbps" in table else "bpp", metric=metric)
        except OSError as exc:
            raise ResultsError(f"cannot write the figures: {exc.strerror or exc}", file=str(args.figures),
                               key="--figures") from None
        print(f"splitsweep: wrote {len(written)} files to {args.figures}", file=sys.stderr)
    out = sys.stdout
    if args.format == "csv":
        mpeg_columns(table).to_csv(out, index=False, float_format=CSV_FLOAT_FORMAT)
    elif args.format == "json":
        payload = {
            "results": str(args.results),
            "rescored": result.rescored,
            "configs": _records(table.drop(columns=["score_key", "delta_key"])),
            "bd": _records(bd),
            "bd_metric": metric,
            "bd_fit": args.fit,
            "bd_reason": reason,
        }
        if search:
            payload["search"] = search
        if cheapest is not None:
            columns = ["model", "variant", "split", "codec", "setting", "coded_bytes", "ap", "delta_ap",
                       "delta_ap_low", "delta_ap_high", "note"]
            columns = [c for c in columns if c in cheapest]
            payload["cheapest_within"] = {"points": args.within, "configs": _records(cheapest[columns])}
        json.dump(payload, out, indent=1, allow_nan=False)
        out.write("\n")
    else:
        _print_tables(out, table, bd, cheapest, within=args.within, rate=args.rate, metric=metric, fit=args.fit,
                      reason=reason)
        if search:
            out.write("\n" + format_search(search) + "\n")
    print(
        f"splitsweep: {result.configs} configurations, {result.rescored} re-scored"
        + (f"; saved {result.path}" if result.path else ""),
        file=sys.stderr,
    )
    return 0


def _print_cttc(args: argparse.Namespace, report: pd.DataFrame, frame_rate: float | None) -> int:
    from orchestrator import open_results
    from orchestrator.reporting.videotable import cttc_table

    meta = open_results(args.results).meta
    if frame_rate is None:
        raise ResultsError("the CTTC table needs a video sweep (a frame rate in meta.json)", file=str(args.results),
                           key="--cttc", allowed="results of a sweep over dataset: {type: video}")
    table = cttc_table(report, sequence=meta.sweep, frame_rate=frame_rate)
    if args.format == "csv":
        table.to_csv(sys.stdout, index=False)
    elif args.format == "json":
        json.dump({"results": str(args.results), "cttc": _records(table)}, sys.stdout, indent=1, allow_nan=False)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(table.assign(split=[split_label(s) for s in table["split"]]).to_string(
            index=False, float_format=lambda v: f"{v:,.3f}") + "\n")
    return 0


def with_device_cost(table: pd.DataFrame, results: str) -> pd.DataFrame:
    """``table`` with the device's cost of each split (orchestrator.execution.devicecost): head-only
    latency, head parameters, head / tail MACs — where the store measured them."""
    from orchestrator.execution.devicecost import device_table

    cost = device_table(open_results(results))
    extra = [c for c in cost.columns if c not in ("model", "variant", "split") and c not in table.columns]
    if cost.empty or not extra:
        return table
    merged = table.merge(cost[["model", "variant", "split", *extra]], on=["model", "variant", "split"], how="left")
    merged.index = table.index
    return merged


def default_metric(results: str) -> str:
    """``ap``; ``miou`` for a store scored in reference evaluation (AP saturates at 100 there)."""
    return "miou" if open_results(results).meta.evaluation == "reference" else "ap"


def with_kbps_range(bd: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """Video sweeps: each BD row's curve as rates in kbps (``kbps_low``–``kbps_high`` over
    the codec's settings at that split). The BD-rate itself is the same in kbps as in bpp
    when all frames share one size: the two differ by a constant factor."""
    if bd.empty or "kbps" not in table:
        return bd
    key = ["model", "variant", "split", "codec"]
    ranges = sequence_families(table).groupby(key, as_index=False)["kbps"].agg(kbps_low="min", kbps_high="max")
    out = bd.merge(ranges, on=key, how="left")
    return out[[*bd.columns[: bd.columns.get_loc("bd_rate")], "kbps_low", "kbps_high",
                *bd.columns[bd.columns.get_loc("bd_rate"):]]]


def bd_for(
    table: pd.DataFrame, *, anchor: str | None, rate: str = "bpp", metric: str = "ap", fit: str = "none"
) -> tuple[pd.DataFrame, str | None]:
    """The BD table and, when it is empty, why. A named anchor that cannot anchor raises
    ResultsError (exit 2); the default anchor falling short is a reason, not an error."""
    splits = table[table["split"] != -1]
    if anchor is None and splits.empty:
        return pd.DataFrame(), "no split or remote-inference configurations"
    try:
        return bd_table(table, anchor=anchor, rate=rate, metric=metric, monotonic=FITS[fit]), None
    except ResultsError as exc:
        if anchor is not None:
            raise
        return pd.DataFrame(), exc.message + (f" (codecs that can anchor: {exc.allowed})" if exc.allowed else "")


def fmt_split(value: Any) -> str:
    """Split column cells: ``input`` for remote inference (stored as −2), ``unsplit`` for
    the whole model (−1), else the node index (orchestrator.results.schema.split_label)."""
    return split_label(value)


METRIC_NAMES = {"ap": "AP", "ap50": "AP50", "ap75": "AP75", "miou": "mIoU"}


def bd_title(bd: pd.DataFrame, *, rate: str, metric: str, fit: str) -> str:
    """``BD-rate against remote inference (hevc) …``: what the BD table's numbers are relative to."""
    anchor = bd["anchor"].iloc[0]
    remote = int(bd["anchor_split"].iloc[0]) == REMOTE_SPLIT
    against = f"remote inference ({anchor}: the image coded, the whole model on the server)" if remote else anchor
    return (
        f"BD-rate against {against} (rate: {rate}, metric: {METRIC_NAMES[metric]}, fit: {fit}; "
        "negative BD-rate = fewer bytes for the same accuracy)"
    )


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    def clean(value: Any) -> Any:
        if value is None or value is pd.NA:
            return None
        if hasattr(value, "item"):
            value = value.item()
        if isinstance(value, float) and not math.isfinite(value):
            return None  # JSON has no NaN or infinity (a lossless codec's PSNR)
        return value

    return [{k: clean(v) for k, v in row.items()} for row in df.to_dict(orient="records")]


def fmt_interval(low: Any, high: Any, decimals: int = 1) -> str:
    """``[28.1, 34.0]``; ``-`` where the interval is missing."""
    if low is None or high is None or pd.isna(low) or pd.isna(high):
        return "-"
    return f"[{low:.{decimals}f}, {high:.{decimals}f}]"


def _interval_cells(table: pd.DataFrame) -> dict[str, list[str]]:
    cells: dict[str, list[str]] = {}
    if {"ap_low", "ap_high"} <= set(table.columns):
        cells["ap_ci"] = [fmt_interval(lo, hi) for lo, hi in zip(table["ap_low"], table["ap_high"])]
    if {"delta_ap_low", "delta_ap_high"} <= set(table.columns):
        noise = delta_noise(table)
        cells["delta_ci"] = [
            fmt_interval(lo, hi) + ("~" if n and lo != hi else "")
            for lo, hi, n in zip(table["delta_ap_low"], table["delta_ap_high"], noise)
        ]
    return cells


def _kb(value: Any) -> str:
    """Kilobytes with a thousands separator and a precision that keeps small cuts readable."""
    if value is None or pd.isna(value):
        return "-"
    return f"{value:,.1f}" if value >= 10 else f"{value:,.2f}"


def _print_tables(
    out: TextIO,
    table: pd.DataFrame,
    bd: pd.DataFrame,
    cheapest: pd.DataFrame | None,
    *,
    within: float | None,
    rate: str,
    metric: str = "ap",
    fit: str = "none",
    reason: str | None = None,
) -> None:
    text, integer = str, _fmt(0)
    table = table.assign(**_interval_cells(table))
    _render(
        out,
        table,
        [
            ("model", "model", text),
            ("variant", "variant", text),
            ("split", "split", fmt_split),
            ("codec", "codec", text),
            ("setting", "setting", text),
            ("images", "n_images", integer),
            ("failed", "n_failed", integer),
            ("AP", "ap", _fmt(2)),
            *([("AP 95% CI", "ap_ci", text)] if "ap_ci" in table else []),
            ("AP50", "ap50", _fmt(2)),
            ("AP75", "ap75", _fmt(2)),
            ("mIoU", "miou", _fmt(2)),
            ("dAP", "delta_ap", _fmt(2)),
            *([("dAP 95% CI", "delta_ci", text)] if "delta_ci" in table else []),
            ("kB", "kB", _kb),
            ("bpp", "bpp", _fmt(4)),
            *([("kbps", "kbps", _fmt(1))] if "kbps" in table else []),
            ("ratio", "ratio", _fmt(1)),
            ("saving", "saving", _pct),
            ("PSNR", "feature_psnr", _fmt(1)),
            ("pareto", "front_bytes_ap", lambda v: "*" if v else ""),
        ],
    )
    if "delta_ci" in table:
        out.write("\nCI: 95% bootstrap over the images (dAP: paired with the uncompressed model on the same resampled "
                  "images); '~' marks a dAP whose interval holds 0: inside the noise of these images\n")
    if bd.empty:
        out.write(f"\nNo BD-rates: {reason or 'nothing to compare'}\n")
    else:
        out.write("\n" + bd_title(bd, rate=rate, metric=metric, fit=fit) + "\n")
        if "kbps_low" in bd:
            bd = bd.assign(kbps_range=[f"{lo:,.1f}-{hi:,.1f}" if pd.notna(lo) else "-"
                                       for lo, hi in zip(bd["kbps_low"], bd["kbps_high"])])
            out.write("kbps: the curve's rates at the video's frame rate; its BD-rate in kbps equals the one in bpp "
                      "(all frames share one size)\n")
        _render(
            out,
            bd,
            [
                ("model", "model", text),
                ("variant", "variant", text),
                ("split", "split", fmt_split),
                ("codec", "codec", text),
                ("points", "points", integer),
                *([("kbps", "kbps_range", text)] if "kbps_low" in bd else []),
                ("BD-rate%", "bd_rate", _fmt(2)),
                (f"BD-{METRIC_NAMES[metric]}", "bd_ap", _fmt(2)),
                ("monotonic", "monotonic", lambda v: "yes" if v else "no"),
                ("note", "note", text),
            ],
        )
    if cheapest is not None:
        out.write(f"\nCheapest configuration within {within:g} AP points of the uncompressed AP\n")
        if cheapest.empty:
            out.write("(none qualifies)\n")
        else:
            _render(
                out,
                cheapest,
                [
                    ("model", "model", text),
                    ("variant", "variant", text),
                    ("split", "split", fmt_split),
                    ("codec", "codec", text),
                    ("setting", "setting", text),
                    ("bytes", "coded_bytes", integer),
                    ("AP", "ap", _fmt(2)),
                    ("dAP", "delta_ap", _fmt(2)),
                    *([("note", "note", text)] if "note" in cheapest else []),
                ],
            )
