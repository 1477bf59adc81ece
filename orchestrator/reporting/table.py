"""Plain-text tables for the terminal: aligned columns, numbers right-aligned."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TextIO

import pandas as pd

__all__ = ["format_table", "human_bytes", "render_columns", "fmt_float", "fmt_pct"]


def human_bytes(n: int | None) -> str:
    """Bytes in binary units (``1.5 KiB``), ``?`` when unknown: the sizes `inspect` and `plan` print."""
    if n is None:
        return "?"
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if math.isinf(value):
            return "inf"
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.3e}"
    return str(value)


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], *, headers: Mapping[str, str] | None = None) -> str:
    headers = headers or {}
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    names = [headers.get(c, c) for c in columns]
    widths = [max([len(n)] + [len(row[i]) for row in cells]) for i, n in enumerate(names)]
    numeric = [all(_is_number(r.get(c)) for r in rows) and bool(rows) for c in columns]

    def fmt(values):
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)).rstrip()

    lines = [fmt(names), fmt(["-" * w for w in widths])]
    lines += [fmt(row) for row in cells]
    return "\n".join(lines)


def _is_number(value: Any) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def fmt_float(decimals: int) -> Callable[[Any], str]:
    def fmt(value: Any) -> str:
        if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
            return "-"
        if isinstance(value, float) and math.isinf(value):
            return "inf"
        return f"{value:.{decimals}f}"

    return fmt


def fmt_pct(value: Any) -> str:
    if value is None or pd.isna(value):
        return "-"
    text = f"{100 * value:.1f}%"
    return "0.0%" if text == "-0.0%" else text  # a lossless codec's few header bytes are no "-0.0%" saving


def render_columns(out: TextIO, df: pd.DataFrame, columns: Sequence[tuple[str, str, Callable[[Any], str]]]) -> None:
    """Aligned columns: text left, numbers right."""
    cells = [[fmt(v) for v in df[col]] for _, col, fmt in columns]
    heads = [head for head, _, _ in columns]
    widths = [max([len(h), *(len(c) for c in cells_)]) for h, cells_ in zip(heads, cells)]
    numeric = [pd.api.types.is_numeric_dtype(df[col]) for _, col, _ in columns]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)).rstrip()

    out.write(line(heads) + "\n")
    for i in range(len(df)):
        out.write(line([c[i] for c in cells]) + "\n")
