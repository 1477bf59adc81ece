"""`splitsweep report RESULTS`: the per-configuration table, BD-rates against an anchor codec, Pareto fronts."""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from pathlib import Path
from typing import Any, TextIO

import pandas as pd

from orchestrator.bdrate import bd_table
from orchestrator.pareto import cheapest_within, report_fronts
from orchestrator.report import build_report
from orchestrator.table import fmt_float as _fmt
from orchestrator.table import fmt_pct as _pct
from orchestrator.table import render_columns as _render
from tasks.errors import ResultsError

__all__ = ["NAME", "HELP", "add_arguments", "run", "mpeg_columns", "MPEG_COLUMNS"]

NAME = "report"
HELP = (
    "Per-configuration COCO AP, bytes, bits per pixel and compression ratio of a results directory; "
    "BD-rate against an anchor codec."
)

# CSV header: the columns MPEG feature-coding reports lead with, then everything else.
MPEG_COLUMNS: dict[str, str] = {
    "model": "model",
    "variant": "variant",
    "split": "split",
    "codec": "codec",
    "qp": "qp",
    "coded_bytes": "bytes",
    "bpp": "bpp",
    "ratio": "ratio",
    "ap": "AP",
    "ap50": "AP50",
    "ap75": "AP75",
    "ap_small": "APs",
    "ap_medium": "APm",
    "ap_large": "APl",
    "ar100": "AR100",
    "delta_ap": "delta_AP",
    "ap_uncompressed": "AP_uncompressed",
    "saving": "saving",
    "raw_bytes": "raw_bytes",
    "side_bytes": "side_bytes",
    "setting": "setting",
    "codec_params": "codec_params",
    "n_images": "n_images",
    "n_failed": "n_failed",
    "n_scored": "n_scored",
    "n_common": "n_common",
    "feature_psnr": "feature_psnr",
    "head_s": "head_s",
    "encode_s": "encode_s",
    "decode_s": "decode_s",
    "tail_s": "tail_s",
    "front_bytes_ap": "pareto",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", metavar="RESULTS", help="results directory of a sweep")
    parser.add_argument("--csv", metavar="FILE", type=Path, help="also write the configuration table to FILE as CSV")
    parser.add_argument(
        "--anchor",
        metavar="CODEC",
        help="codec family BD-rates are measured against (default: nncodec if the sweep has it, "
        "else the codec with the most configurations)",
    )
    parser.add_argument(
        "--format", choices=("table", "csv", "json"), default="table", help="what to print (default: table)"
    )
    parser.add_argument(
        "--rate", choices=("bpp", "coded_bytes"), default="bpp", help="rate axis of the BD-rates (default: bpp)"
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
    parser.add_argument("--force", action="store_true", help="re-score every configuration, not only changed ones")
    parser.add_argument(
        "--workers", type=_positive, default=1, metavar="N", help="score configurations in N processes (default: 1)"
    )


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def mpeg_columns(table: pd.DataFrame) -> pd.DataFrame:
    """The configuration table with MPEG-style column names and order (for CSV)."""
    present = [c for c in MPEG_COLUMNS if c in table.columns]
    return table[present].rename(columns=MPEG_COLUMNS)


def run(args: argparse.Namespace) -> int:
    from orchestrator.results import open_results, plan_scope

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scope = None if args.all else plan_scope(open_results(args.results))
        result = build_report(args.results, force=args.force, workers=args.workers,
                              task_ids=None if scope is None else scope.task_ids)
    for w in caught:
        print(f"splitsweep: warning: {w.message}", file=sys.stderr)
    if scope is not None and scope.line():
        print(f"splitsweep: {scope.line()}", file=sys.stderr)
    table = report_fronts(result.table)
    bd = _bd(table, anchor=args.anchor, rate=args.rate)
    cheapest = None if args.within is None else cheapest_within(table, points=args.within)
    if args.csv is not None:
        try:
            args.csv.parent.mkdir(parents=True, exist_ok=True)
            mpeg_columns(table).to_csv(args.csv, index=False)
        except OSError as exc:
            raise ResultsError(f"cannot write the CSV file: {exc.strerror or exc}", file=str(args.csv),
                               key="--csv") from None
    out = sys.stdout
    if args.format == "csv":
        mpeg_columns(table).to_csv(out, index=False)
    elif args.format == "json":
        payload = {
            "results": str(args.results),
            "rescored": result.rescored,
            "configs": _records(table.drop(columns=["score_key", "delta_key"])),
            "bd": _records(bd),
        }
        if cheapest is not None:
            columns = ["model", "variant", "split", "codec", "setting", "coded_bytes", "ap", "delta_ap"]
            payload["cheapest_within"] = {"points": args.within, "configs": _records(cheapest[columns])}
        json.dump(payload, out, indent=1, allow_nan=False)
        out.write("\n")
    else:
        _print_tables(out, table, bd, cheapest, within=args.within, rate=args.rate)
    print(
        f"splitsweep: {result.configs} configurations, {result.rescored} re-scored"
        + (f"; saved {result.path}" if result.path else ""),
        file=sys.stderr,
    )
    return 0


def _bd(table: pd.DataFrame, *, anchor: str | None, rate: str) -> pd.DataFrame:
    splits = table[table["split"] != -1]
    if anchor is None and splits.empty:
        return pd.DataFrame()
    return bd_table(table, anchor=anchor, rate=rate)


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


def _print_tables(
    out: TextIO,
    table: pd.DataFrame,
    bd: pd.DataFrame,
    cheapest: pd.DataFrame | None,
    *,
    within: float | None,
    rate: str,
) -> None:
    text, integer = str, _fmt(0)
    _render(
        out,
        table,
        [
            ("model", "model", text),
            ("variant", "variant", text),
            ("split", "split", integer),
            ("codec", "codec", text),
            ("setting", "setting", text),
            ("images", "n_images", integer),
            ("failed", "n_failed", integer),
            ("AP", "ap", _fmt(2)),
            ("AP50", "ap50", _fmt(2)),
            ("AP75", "ap75", _fmt(2)),
            ("dAP", "delta_ap", _fmt(2)),
            ("bytes", "coded_bytes", integer),
            ("bpp", "bpp", _fmt(4)),
            ("ratio", "ratio", _fmt(1)),
            ("saving", "saving", _pct),
            ("PSNR", "feature_psnr", _fmt(1)),
            ("pareto", "front_bytes_ap", lambda v: "*" if v else ""),
        ],
    )
    if not bd.empty:
        anchor = bd["anchor"].iloc[0]
        out.write(f"\nBD-rate against {anchor} (rate: {rate}, metric: AP; negative BD-rate = fewer bytes)\n")
        _render(
            out,
            bd,
            [
                ("model", "model", text),
                ("variant", "variant", text),
                ("split", "split", integer),
                ("codec", "codec", text),
                ("points", "points", integer),
                ("BD-rate%", "bd_rate", _fmt(2)),
                ("BD-AP", "bd_ap", _fmt(2)),
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
                    ("split", "split", integer),
                    ("codec", "codec", text),
                    ("setting", "setting", text),
                    ("bytes", "coded_bytes", integer),
                    ("AP", "ap", _fmt(2)),
                    ("dAP", "delta_ap", _fmt(2)),
                ],
            )
