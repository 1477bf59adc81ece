"""Pareto fronts of a report (fewest bytes, least compute, highest AP) and the cheapest configuration within an AP budget."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from tasks.errors import ResultsError

__all__ = ["pareto_front", "pareto_mask", "report_fronts", "cheapest_within", "budget_note", "delta_noise"]

_CHUNK = 2048  # rows compared at once: bounds the n × n comparison's memory


def pareto_mask(
    df: pd.DataFrame, *, minimize: Sequence[str] = ("coded_bytes",), maximize: Sequence[str] = ("ap",)
) -> np.ndarray:
    """True for the rows no other row dominates (at least as good in every objective,
    strictly better in one). Identical points do not dominate each other: duplicates
    are all kept. Rows with a missing objective are never on the front."""
    columns = [*minimize, *maximize]
    if not columns:
        raise ValueError("a Pareto front needs at least one objective")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ResultsError(
            f"no column {missing[0]!r} to build a Pareto front on", key=missing[0], allowed=list(df.columns)
        )
    # Everything as "smaller is better".
    values = np.column_stack(
        [df[c].to_numpy(dtype=np.float64, na_value=np.nan) for c in minimize]
        + [-df[c].to_numpy(dtype=np.float64, na_value=np.nan) for c in maximize]
    ) if len(df) else np.zeros((0, len(columns)))
    valid = ~np.isnan(values).any(axis=1)
    points = values[valid]
    on_front = np.zeros(len(points), dtype=bool)
    for start in range(0, len(points), _CHUNK):
        block = points[start : start + _CHUNK]
        # dominated[i] if some j has points[j] <= block[i] everywhere and < somewhere.
        no_worse = np.all(points[None, :, :] <= block[:, None, :], axis=2)
        better = np.any(points[None, :, :] < block[:, None, :], axis=2)
        on_front[start : start + _CHUNK] = ~np.any(no_worse & better, axis=1)
    mask = np.zeros(len(df), dtype=bool)
    mask[np.flatnonzero(valid)] = on_front
    return mask


def pareto_front(
    df: pd.DataFrame, *, minimize: Sequence[str] = ("coded_bytes",), maximize: Sequence[str] = ("ap",)
) -> pd.DataFrame:
    """The non-dominated rows of ``df`` (index kept), sorted by the objectives."""
    front = df[pareto_mask(df, minimize=minimize, maximize=maximize)]
    return front.sort_values([*minimize, *maximize], ascending=[True] * len(minimize) + [False] * len(maximize))


def _candidates(report: pd.DataFrame) -> pd.DataFrame:
    # The unsplit model sends no cut tensors: it is the reference, not an operating point.
    return report[report["split"] != -1]


def report_fronts(report: pd.DataFrame, *, by: Sequence[str] = ("model",)) -> pd.DataFrame:
    """``report`` with boolean columns ``front_bytes_ap`` (fewest coded bytes, highest AP,
    per model) and, where a ``head_macs`` column exists, ``front_bytes_ap_macs`` (also the
    least head compute). The unsplit baseline (split −1) is never on a front."""
    out = report.copy()
    candidates = _candidates(report)
    if {"ap_low", "ap_high"} <= set(report.columns):
        out["front_noise"] = False
    fronts = {"front_bytes_ap": (("coded_bytes",), ("ap",))}
    if "head_macs" in report.columns:
        fronts["front_bytes_ap_macs"] = (("coded_bytes", "head_macs"), ("ap",))
    for name, (minimize, maximize) in fronts.items():
        out[name] = False
        for _, group in candidates.groupby(list(by), sort=False):
            mask = pareto_mask(group, minimize=minimize, maximize=maximize)
            out.loc[group.index[mask], name] = True
    if "front_noise" in out:
        _mark_front_noise(out, by)
    return out


def _mark_front_noise(out: pd.DataFrame, by: Sequence[str]) -> None:
    """``front_noise``: a front point whose AP gain over the next cheaper front point is
    inside the noise — the two 95% AP intervals overlap — so paying its extra bytes buys
    nothing these images can show."""
    front = out[out["front_bytes_ap"].astype(bool)]
    for _, group in front.groupby(list(by), sort=False):
        group = group.sort_values(["coded_bytes", "ap"])
        low = group["ap_low"].to_numpy(dtype=np.float64, na_value=np.nan)
        high = group["ap_high"].to_numpy(dtype=np.float64, na_value=np.nan)
        noise = np.zeros(len(group), bool)
        noise[1:] = high[:-1] >= low[1:]
        out.loc[group.index, "front_noise"] = noise


def delta_noise(report: pd.DataFrame) -> np.ndarray:
    """True where a configuration's paired 95% ΔAP interval holds 0: on these images it
    cannot be told apart from the uncompressed model (better or worse is noise)."""
    if not {"delta_ap_low", "delta_ap_high"} <= set(report.columns):
        return np.zeros(len(report), bool)
    low = report["delta_ap_low"].to_numpy(dtype=np.float64, na_value=np.nan)
    high = report["delta_ap_high"].to_numpy(dtype=np.float64, na_value=np.nan)
    return (low <= 0) & (high >= 0)


def budget_note(row: pd.Series, points: float) -> str:
    """What the interval says about a configuration chosen within an AP budget."""
    low, high = row.get("delta_ap_low"), row.get("delta_ap_high")
    if low is None or high is None or pd.isna(low) or pd.isna(high):
        return ""
    if low <= 0 <= high:
        note = f"ΔAP 95% CI [{low:.2f}, {high:.2f}] holds 0: no loss these images can show"
    else:
        note = f"ΔAP 95% CI [{low:.2f}, {high:.2f}]"
    if low < -points:
        note += f"; the interval reaches below −{points:g}: may exceed the budget"
    return note


def cheapest_within(report: pd.DataFrame, *, points: float, by: Sequence[str] = ("model",)) -> pd.DataFrame:
    """Per ``by`` group, the configuration with the fewest coded bytes whose AP is at most
    ``points`` AP points below the uncompressed AP of its own (model, variant), compared on
    the images both finished (``delta_ap`` ≥ −points). Ties in bytes go to the higher AP.
    Groups where no configuration qualifies are left out."""
    if points < 0:
        raise ResultsError(f"an AP budget cannot be negative, got {points}", key="points")
    candidates = _candidates(report)
    candidates = candidates[candidates["delta_ap"].to_numpy(dtype=np.float64, na_value=np.nan) >= -points]
    candidates = candidates.sort_values(["coded_bytes", "ap"], ascending=[True, False], kind="stable")
    out = candidates.groupby(list(by), sort=True).head(1).sort_values(list(by)).reset_index(drop=True)
    out["note"] = [budget_note(row, points) for _, row in out.iterrows()]
    return out
