"""Pareto fronts of a report (fewest bytes, least compute, highest AP) and the cheapest configuration within an AP budget."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from tasks.errors import ResultsError

__all__ = ["pareto_front", "pareto_mask", "report_fronts", "cheapest_within"]

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
    fronts = {"front_bytes_ap": (("coded_bytes",), ("ap",))}
    if "head_macs" in report.columns:
        fronts["front_bytes_ap_macs"] = (("coded_bytes", "head_macs"), ("ap",))
    for name, (minimize, maximize) in fronts.items():
        out[name] = False
        for _, group in candidates.groupby(list(by), sort=False):
            mask = pareto_mask(group, minimize=minimize, maximize=maximize)
            out.loc[group.index[mask], name] = True
    return out


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
    return candidates.groupby(list(by), sort=True).head(1).sort_values(list(by)).reset_index(drop=True)
