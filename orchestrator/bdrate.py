"""Bjøntegaard deltas between rate–accuracy curves: BD-rate and BD-AP, and a table of them per split.

The method is the one of the JCT-VC / MPEG common-test-condition spreadsheets: each
curve is interpolated with a piecewise cubic Hermite polynomial (PCHIP), in log-rate
as a function of the metric for BD-rate and in the metric as a function of log-rate for
BD-metric; the two interpolants are integrated over the interval both curves cover,
and the mean gap is reported (for BD-rate as the percentage ``exp(gap) − 1``).

Non-monotonic curves (AP that does not rise with every rate step: measurement noise,
or saturation near lossless) need a rule, and tools differ: the ``bjontegaard``
package (FAU, the Python port of the CTC spreadsheets) refuses them (PCHIP needs a
strictly increasing abscissa). Our choice, so that a noisy sweep still gets a number:
the points are sorted by the interpolation's own abscissa (AP for BD-rate, log-rate for
BD-metric) and interpolated as they are, so a noisy point is kept, not smoothed away;
on monotonic curves this is exactly the standard computation. Where two points share an
abscissa (two QPs with the same AP) the one with the lower rate is kept for BD-rate and
the higher metric for BD-metric: the better of the two operating points.
``monotonic="envelope"`` instead first drops every point that a cheaper point matches or
beats (the curve's own Pareto front). ``bd_table`` reports whether each pair of curves
was monotonic, so a reader can tell when the rule mattered.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.interpolate import PchipInterpolator

from tasks.errors import ResultsError

__all__ = [
    "MIN_POINTS",
    "BdError",
    "bd_rate",
    "bd_metric",
    "is_monotonic",
    "default_anchor",
    "bd_table",
]

MIN_POINTS = 4
METHODS = ("pchip",)
MONOTONIC = ("sort", "envelope")
BD_COLUMNS = (
    "model",
    "variant",
    "split",
    "codec",
    "anchor",
    "points",
    "anchor_points",
    "bd_rate",
    "bd_ap",
    "monotonic",
    "note",
)


class BdError(ValueError):
    """Two curves cannot be compared: too few distinct points, no overlap, a rate ≤ 0."""


@dataclass(frozen=True)
class _Curve:
    log_rate: np.ndarray
    metric: np.ndarray


def _curve(rates: Sequence[float], metric: Sequence[float], *, name: str, monotonic: str) -> _Curve:
    r = np.asarray(rates, dtype=np.float64).reshape(-1)
    m = np.asarray(metric, dtype=np.float64).reshape(-1)
    if r.shape != m.shape:
        raise BdError(f"{name} curve: {len(r)} rates but {len(m)} metric values")
    if not (np.all(np.isfinite(r)) and np.all(np.isfinite(m))):
        raise BdError(f"{name} curve: rates and metric values must be finite")
    if np.any(r <= 0):
        raise BdError(f"{name} curve: every rate must be > 0 (log-rate), got {r.min():g}")
    if monotonic == "envelope":
        keep = _envelope(r, m)
        r, m = r[keep], m[keep]
    return _Curve(np.log(r), m)


def _envelope(rates: np.ndarray, metric: np.ndarray) -> np.ndarray:
    """Indices of the points no cheaper-or-equal point matches or beats."""
    order = np.lexsort((-metric, rates))
    keep, best = [], -np.inf
    for i in order:
        if metric[i] > best:
            keep.append(i)
            best = metric[i]
    return np.array(sorted(keep), dtype=np.int64)


def _distinct(x: np.ndarray, y: np.ndarray, *, prefer_low_y: bool) -> tuple[np.ndarray, np.ndarray]:
    """Sorted by x; one point per x value: the lowest y (rate) or the highest y (metric)."""
    order = np.lexsort((y if prefer_low_y else -y, x))
    x, y = x[order], y[order]
    first = np.r_[True, x[1:] != x[:-1]]
    return x[first], y[first]


def _mean_gap(
    anchor: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray], *, what: str
) -> float:
    (xa, ya), (xt, yt) = anchor, test
    for name, x in (("anchor", xa), ("test", xt)):
        if len(x) < MIN_POINTS:
            raise BdError(
                f"{name} curve has {len(x)} distinct {what} values; Bjøntegaard deltas need at least {MIN_POINTS}"
            )
    lo, hi = max(xa[0], xt[0]), min(xa[-1], xt[-1])
    if not hi > lo:
        raise BdError(
            f"curves do not overlap in {what}: anchor [{xa[0]:.6g}, {xa[-1]:.6g}], test [{xt[0]:.6g}, {xt[-1]:.6g}]"
        )
    ia = PchipInterpolator(xa, ya).integrate(lo, hi)
    it = PchipInterpolator(xt, yt).integrate(lo, hi)
    return float((it - ia) / (hi - lo))


def _check(method: str, monotonic: str) -> None:
    if method not in METHODS:
        raise BdError(f"unknown interpolation method {method!r} (allowed: {', '.join(METHODS)})")
    if monotonic not in MONOTONIC:
        raise BdError(f"unknown monotonic handling {monotonic!r} (allowed: {', '.join(MONOTONIC)})")


def bd_rate(
    anchor_rates: Sequence[float],
    anchor_metric: Sequence[float],
    test_rates: Sequence[float],
    test_metric: Sequence[float],
    *,
    method: str = "pchip",
    monotonic: str = "sort",
) -> float:
    """Mean rate difference of test against anchor at equal metric, in percent
    (negative: the test needs fewer bytes for the same accuracy)."""
    _check(method, monotonic)
    a = _curve(anchor_rates, anchor_metric, name="anchor", monotonic=monotonic)
    t = _curve(test_rates, test_metric, name="test", monotonic=monotonic)
    gap = _mean_gap(
        _distinct(a.metric, a.log_rate, prefer_low_y=True),
        _distinct(t.metric, t.log_rate, prefer_low_y=True),
        what="metric",
    )
    return float(np.expm1(gap) * 100.0)


def bd_metric(
    anchor_rates: Sequence[float],
    anchor_metric: Sequence[float],
    test_rates: Sequence[float],
    test_metric: Sequence[float],
    *,
    method: str = "pchip",
    monotonic: str = "sort",
) -> float:
    """Mean metric difference of test against anchor at equal rate, in the metric's units
    (for AP in points: BD-AP)."""
    _check(method, monotonic)
    a = _curve(anchor_rates, anchor_metric, name="anchor", monotonic=monotonic)
    t = _curve(test_rates, test_metric, name="test", monotonic=monotonic)
    return _mean_gap(
        _distinct(a.log_rate, a.metric, prefer_low_y=False),
        _distinct(t.log_rate, t.metric, prefer_low_y=False),
        what="log-rate",
    )


def is_monotonic(rates: Sequence[float], metric: Sequence[float]) -> bool:
    """True when the metric never falls as the rate rises."""
    r = np.asarray(rates, np.float64)
    m = np.asarray(metric, np.float64)
    order = np.lexsort((m, r))
    return bool(np.all(np.diff(m[order]) >= 0))


def _points(df: pd.DataFrame) -> pd.DataFrame:
    """Rows usable as curve points: a split point (not the unsplit baseline) with a rate and an AP."""
    return df[(df["split"] != -1)]


def default_anchor(report: pd.DataFrame) -> str:
    """``nncodec`` if the report has it, else the codec with the most configurations
    (ties: the first by name); ``none`` only if nothing else is there."""
    points = _points(report)
    codecs = points["codec"].value_counts()
    if "nncodec" in codecs.index:
        return "nncodec"
    families = codecs.drop("none", errors="ignore")
    if families.empty:
        families = codecs
    if families.empty:
        raise ResultsError("no split configurations to choose an anchor codec from", key="anchor")
    return str(sorted(families.items(), key=lambda kv: (-kv[1], kv[0]))[0][0])


def bd_table(
    report: pd.DataFrame,
    *,
    anchor: str | None = None,
    rate: str = "bpp",
    metric: str = "ap",
    monotonic: str = "sort",
) -> pd.DataFrame:
    """BD-rate (%) and BD-AP (AP points) of every codec family against ``anchor`` per
    (model, variant, split), over the family's settings (its QPs, its bit depths…).

    ``report`` is the configuration table of :func:`orchestrator.report.build_report`;
    ``rate`` is ``bpp`` or ``coded_bytes``. Pairs that cannot be compared get NaN and a
    ``note`` saying why (too few points, no overlap, no anchor at this split).
    """
    rate_columns = ("bpp", "coded_bytes")
    if rate not in rate_columns:
        raise ResultsError(f"unknown rate column {rate!r}", key="rate", allowed=rate_columns)
    if metric not in report.columns:
        raise ResultsError(f"unknown metric column {metric!r}", key="metric", allowed=["ap", "ap50", "ap75"])
    points = _points(report)
    codecs = sorted(points["codec"].unique())
    if anchor is None:
        anchor = default_anchor(report)
    elif anchor not in codecs:
        raise ResultsError(f"anchor codec {anchor!r} is not in this report", key="anchor", allowed=codecs)
    rows = []
    for (model, variant, split), group in points.groupby(["model", "variant", "split"], sort=True):
        usable = group[np.isfinite(group[rate].astype(float)) & np.isfinite(group[metric].astype(float))]
        ref = usable[usable["codec"] == anchor]
        for codec in sorted(group["codec"].unique()):
            if codec == anchor:
                continue
            test = usable[usable["codec"] == codec]
            row = {
                "model": model,
                "variant": variant,
                "split": split,
                "codec": codec,
                "anchor": anchor,
                "points": len(test),
                "anchor_points": len(ref),
                "bd_rate": np.nan,
                "bd_ap": np.nan,
                "monotonic": bool(
                    len(test) and is_monotonic(test[rate], test[metric]) and is_monotonic(ref[rate], ref[metric])
                ),
                "note": "",
            }
            if ref.empty:
                row["note"] = f"no {anchor} points at this split"
            else:
                notes = []
                for column, fn in (("bd_rate", bd_rate), ("bd_ap", bd_metric)):
                    try:
                        row[column] = fn(ref[rate], ref[metric], test[rate], test[metric], monotonic=monotonic)
                    except BdError as exc:
                        notes.append(f"{column}: {exc}")
                row["note"] = "; ".join(dict.fromkeys(notes))
            rows.append(row)
    return pd.DataFrame(rows, columns=list(BD_COLUMNS))
