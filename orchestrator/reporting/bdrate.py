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
beats (the curve's own Pareto front). ``monotonic="isotonic"`` (the CLI's ``--fit
monotonic``, the robust practice of MPEG's FCM / VCM evaluations) first replaces the
metric by its least-squares non-decreasing fit over rate (scipy's
``isotonic_regression``: pool-adjacent-violators), so every point is kept and noise is
averaged, not picked. ``bd_table`` reports whether each pair of curves was monotonic,
so a reader can tell when the rule mattered.

The anchor. By default ``bd_table`` measures every curve against **remote inference**:
the picture coded with an image codec and the whole model run on the server (split
``input``, stored as split −2), of the same model and variant — the baseline every
feature-coding result is stated against. The anchor codec is the first of
``REMOTE_PREFERENCE`` stored there with at least ``MIN_POINTS`` distinct rates. Without
such a curve it falls back to the same-split anchor (``nncodec``, else the family with
the most settings). ``anchor=`` names any codec: an image codec anchors on its
remote-inference curve, a tensor codec compares codecs within each split. An anchor
with fewer than ``MIN_POINTS`` distinct rates on every curve is refused up front
(``ResultsError``): a single-point codec such as ``float16`` cannot anchor a BD-rate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.interpolate import PchipInterpolator

from orchestrator.results.schema import REMOTE_SPLIT
from tasks.errors import ResultsError

__all__ = [
    "MIN_POINTS",
    "REMOTE_SPLIT",
    "REMOTE_PREFERENCE",
    "FITS",
    "BdError",
    "bd_rate",
    "bd_metric",
    "is_monotonic",
    "default_anchor",
    "remote_anchor",
    "anchor_curves",
    "bd_table",
    "sequence_families",
    "SEQUENCE_SUFFIX",
]

MIN_POINTS = 4
METHODS = ("pchip",)
MONOTONIC = ("sort", "envelope", "isotonic")
FITS = {"none": "sort", "monotonic": "isotonic", "envelope": "envelope"}  # CLI --fit → monotonic=
REMOTE_PREFERENCE = ("hevc", "avif", "webp", "jpeg")  # the default remote anchor: the strongest codec stored
BD_COLUMNS = (
    "model",
    "variant",
    "split",
    "codec",
    "anchor",
    "anchor_split",
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
    elif monotonic == "isotonic":
        r, m = _isotonic(r, m)
    return _Curve(np.log(r), m)


def _isotonic(rates: np.ndarray, metric: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The points sorted by rate with the metric replaced by its least-squares non-decreasing fit."""
    from scipy.optimize import isotonic_regression

    order = np.lexsort((metric, rates))
    r, m = rates[order], metric[order]
    return r, np.asarray(isotonic_regression(m, increasing=True).x, dtype=np.float64)


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
    """Rows usable as curve points: a split point or remote inference, not the unsplit baseline."""
    return df[(df["split"] != -1)]


def _distinct_rates(curve: pd.DataFrame, rate: str) -> int:
    values = curve[rate].astype(float)
    return int(values[np.isfinite(values) & (values > 0)].nunique())


def remote_anchor(report: pd.DataFrame, *, rate: str = "bpp") -> str | None:
    """The default remote-inference anchor codec: the first of REMOTE_PREFERENCE (then any
    other image codec, by name) stored at split ``input`` with at least MIN_POINTS distinct
    rates for some (model, variant); None when there is none."""
    remote = report[report["split"] == REMOTE_SPLIT]
    if remote.empty:
        return None
    stored = sorted(remote["codec"].unique())
    for codec in [*[c for c in REMOTE_PREFERENCE if c in stored], *[c for c in stored if c not in REMOTE_PREFERENCE]]:
        curves = remote[remote["codec"] == codec].groupby(["model", "variant"])
        if any(_distinct_rates(g, rate) >= MIN_POINTS for _, g in curves):
            return str(codec)
    return None


def default_anchor(report: pd.DataFrame) -> str:
    """Remote inference's codec when a usable curve is stored (see :func:`remote_anchor`);
    else ``nncodec`` if the report has it, else the codec with the most configurations
    (ties: the first by name); ``none`` only if nothing else is there."""
    remote = remote_anchor(report)
    if remote is not None:
        return remote
    points = _points(report)
    points = points[points["split"] != REMOTE_SPLIT]
    codecs = points["codec"].value_counts()
    if "nncodec" in codecs.index:
        return "nncodec"
    families = codecs.drop("none", errors="ignore")
    if families.empty:
        families = codecs
    if families.empty:
        raise ResultsError("no split configurations to choose an anchor codec from", key="anchor")
    return str(sorted(families.items(), key=lambda kv: (-kv[1], kv[0]))[0][0])


def _is_remote(points: pd.DataFrame, anchor: str) -> bool:
    """True when ``anchor``'s curves are remote inference (an image codec, stored at split input)."""
    return bool(((points["split"] == REMOTE_SPLIT) & (points["codec"] == anchor)).any())


def anchor_curves(report: pd.DataFrame, anchor: str, *, rate: str = "bpp") -> dict[tuple, pd.DataFrame]:
    """The anchor's curves: per (model, variant) for a remote anchor, per (model, variant, split) otherwise."""
    points = _points(report)
    remote = _is_remote(points, anchor)
    rows = points[(points["codec"] == anchor) & ((points["split"] == REMOTE_SPLIT) == remote)]
    keys = ["model", "variant"] if remote else ["model", "variant", "split"]
    return {k if isinstance(k, tuple) else (k,): g for k, g in rows.groupby(keys, sort=True)}


def check_anchor(report: pd.DataFrame, anchor: str, *, rate: str = "bpp") -> None:
    """Refuse an anchor no curve of which has MIN_POINTS distinct rates: BD is undefined against it."""
    points = _points(report)
    codecs = sorted(points["codec"].unique())
    if anchor not in codecs:
        raise ResultsError(f"anchor codec {anchor!r} is not in this report", key="anchor", allowed=codecs)
    curves = anchor_curves(report, anchor, rate=rate)
    most = max((_distinct_rates(g, rate) for g in curves.values()), default=0)
    if most < MIN_POINTS:
        usable = sorted(
            c for c in codecs
            if max((_distinct_rates(g, rate) for g in anchor_curves(report, c, rate=rate).values()), default=0)
            >= MIN_POINTS
        )
        raise ResultsError(
            f"anchor codec {anchor!r} has {most} distinct rate point(s) per curve; Bjøntegaard deltas need at "
            f"least {MIN_POINTS}: sweep it at {MIN_POINTS} or more settings"
            + ("" if usable else f" (no codec here has {MIN_POINTS})"),
            key="anchor",
            allowed=usable or None,
        )


def bd_table(
    report: pd.DataFrame,
    *,
    anchor: str | None = None,
    rate: str = "bpp",
    metric: str = "ap",
    monotonic: str = "sort",
) -> pd.DataFrame:
    """BD-rate (%) and BD-metric (``metric`` points: BD-AP for AP) of every codec family per
    (model, variant, split) against ``anchor``, over the family's settings (its QPs, bits…).

    ``report`` is the configuration table of :func:`orchestrator.reporting.report.build_report`;
    ``rate`` is ``bpp``, ``coded_bytes`` or, for a video sweep, ``kbps``
    (report.with_kbps). When every image has one size (a video's frames) the three give
    the same BD-rate: each is the bytes times a constant, which shifts log-rate by the
    same amount on both curves and cancels in the Bjøntegaard difference. The default anchor is remote inference (see the
    module docstring); ``anchor_split`` says which curve was the anchor (−2: remote
    inference, else the same split). An anchor without MIN_POINTS distinct rates is refused
    (ResultsError); pairs that still cannot be compared get NaN and a ``note`` saying why
    (too few points, no overlap, no anchor for this model).
    """
    rate_columns = ("bpp", "coded_bytes", "kbps")
    if rate not in rate_columns:
        raise ResultsError(f"unknown rate column {rate!r}", key="rate", allowed=rate_columns)
    if rate not in report.columns:
        raise ResultsError(f"no {rate} column: kbps needs a video dataset with a frame rate", key="rate",
                           allowed=[c for c in rate_columns if c in report.columns])
    if metric not in report.columns:
        raise ResultsError(f"unknown metric column {metric!r}", key="metric", allowed=["ap", "ap50", "ap75", "miou"])
    if monotonic not in MONOTONIC:
        raise ResultsError(f"unknown curve fit {monotonic!r}", key="fit", allowed=list(MONOTONIC))
    report = sequence_families(report)
    points = _points(report)
    if anchor is None:
        anchor = default_anchor(report)
    check_anchor(report, anchor, rate=rate)
    remote = _is_remote(points, anchor)
    curves = anchor_curves(report, anchor, rate=rate)
    # A sequence-coded family is measured against remote inference coded the same way (the
    # video itself as one stream) when that is stored: inter prediction on both sides.
    own = {
        c: anchor_curves(report, c, rate=rate)
        for c in points["codec"].unique()
        if remote and str(c).endswith(SEQUENCE_SUFFIX) and c != anchor and _is_remote(points, c)
    }
    rows = []
    for (model, variant, split), group in points.groupby(["model", "variant", "split"], sort=True):
        if split == REMOTE_SPLIT and not remote:
            continue  # a tensor anchor compares within node splits
        usable = _usable(group, rate, metric)
        for codec in sorted(group["codec"].unique()):
            # at `input` itself a sequence family is compared with the default anchor (what inter coding saves)
            this_anchor = codec if split != REMOTE_SPLIT and codec in own and (model, variant) in own[codec] else anchor
            if codec == this_anchor and (split == REMOTE_SPLIT or not remote):
                continue
            source = own[codec] if this_anchor != anchor else curves
            ref = source.get((model, variant) if remote else (model, variant, split))
            ref = _usable(ref, rate, metric) if ref is not None else None
            test = usable[usable["codec"] == codec]
            row = {
                "model": model,
                "variant": variant,
                "split": split,
                "codec": codec,
                "anchor": this_anchor,
                "anchor_split": REMOTE_SPLIT if remote else split,
                "points": len(test),
                "anchor_points": 0 if ref is None else len(ref),
                "bd_rate": np.nan,
                "bd_ap": np.nan,
                "monotonic": bool(
                    ref is not None and len(test)
                    and is_monotonic(test[rate], test[metric]) and is_monotonic(ref[rate], ref[metric])
                ),
                "note": "",
            }
            if ref is None or ref.empty:
                where = "remote inference of this model" if remote else "this split"
                row["note"] = f"no {this_anchor} points for {where}"
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


SEQUENCE_SUFFIX = " sequence"


def sequence_families(report: pd.DataFrame) -> pd.DataFrame:
    """``report`` with sequence-coded configurations (``"sequence": true`` in codec_params) as
    their own codec family, ``hevc sequence``: intra and inter coding are different curves."""
    if report.empty or "codec_params" not in report:
        return report
    seq = report["codec_params"].astype(str).str.contains('"sequence":true', regex=False)
    if not seq.any():
        return report
    out = report.copy()
    out.loc[seq, "codec"] = out.loc[seq, "codec"].astype(str) + SEQUENCE_SUFFIX
    return out


def _usable(group: pd.DataFrame, rate: str, metric: str) -> pd.DataFrame:
    return group[np.isfinite(group[rate].astype(float)) & np.isfinite(group[metric].astype(float))]
