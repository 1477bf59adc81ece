"""Bjøntegaard deltas against values worked out by hand, and the per-split BD table."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from orchestrator.reporting.bdrate import BdError, bd_metric, bd_rate, bd_table, default_anchor, is_monotonic
from tasks.errors import ResultsError

# A realistic, uneven anchor curve: mean bytes per image against AP points.
RATES = [12_000.0, 21_500.0, 40_200.0, 90_000.0, 151_000.0]
AP = [22.1, 29.8, 33.0, 35.2, 35.9]


def test_rates_scaled_by_0_8_give_minus_20_percent():
    # Same AP at 0.8× the rate everywhere: log-rate is shifted by log 0.8 at every AP,
    # the interpolant too (PCHIP is shift-invariant), so the mean gap is log 0.8 exactly.
    assert bd_rate(RATES, AP, [0.8 * r for r in RATES], AP) == pytest.approx(-20.0, abs=1e-9)
    # and the other way round: the anchor needs 25 % more
    assert bd_rate([0.8 * r for r in RATES], AP, RATES, AP) == pytest.approx(25.0, abs=1e-9)
    # at equal rate the cheaper curve reaches a higher AP
    assert bd_metric(RATES, AP, [0.8 * r for r in RATES], AP) > 0


def test_constant_metric_shift_is_the_bd_metric():
    assert bd_metric(RATES, AP, RATES, [a + 1.75 for a in AP]) == pytest.approx(1.75, abs=1e-12)
    assert bd_metric(RATES, AP, RATES, [a - 3.0 for a in AP]) == pytest.approx(-3.0, abs=1e-12)
    assert bd_rate(RATES, AP, RATES, AP) == pytest.approx(0.0, abs=1e-12)


def test_worked_example_with_different_slopes():
    # Anchor: AP = 20 + 10·u and test: AP = 20 + 12·u, where u = log2(rate), rates 1, 2, 4, 8.
    # Both are straight lines in (log-rate, AP), and PCHIP reproduces collinear points exactly
    # (every secant slope is equal, so every derivative estimate is that slope).
    #
    # BD-AP: over the common log-rate range u ∈ [0, 3] the gap is 12u − 10u = 2u,
    #   whose mean is 2 · 1.5 = 3.0 AP points (the base of the log only rescales u).
    # BD-rate: over the common AP range [20, 50] (anchor tops out at 50, test at 56)
    #   log2 R_test − log2 R_anchor = (a − 20)/12 − (a − 20)/10 = −(a − 20)/60,
    #   whose mean over a ∈ [20, 50] is −15/60 = −1/4; so the test needs 2^(−1/4) of the
    #   anchor's rate on average: BD-rate = 2^(−0.25) − 1 = −15.910 %.
    rates = [1.0, 2.0, 4.0, 8.0]
    anchor = [20.0, 30.0, 40.0, 50.0]
    test = [20.0, 32.0, 44.0, 56.0]
    assert bd_metric(rates, anchor, rates, test) == pytest.approx(3.0, abs=1e-12)
    assert bd_rate(rates, anchor, rates, test) == pytest.approx(100 * (2 ** -0.25 - 1), abs=1e-9)
    assert 100 * (2 ** -0.25 - 1) == pytest.approx(-15.9104, abs=1e-4)


def test_order_of_points_does_not_matter():
    order = [3, 0, 4, 1, 2]
    shuffled = bd_rate([RATES[i] for i in order], [AP[i] for i in order], [r * 0.9 for r in RATES], AP)
    assert shuffled == pytest.approx(-10.0, abs=1e-9)


def test_too_few_points_name_the_curve():
    with pytest.raises(BdError, match="anchor curve has 3 distinct metric values.*at least 4"):
        bd_rate(RATES[:3], AP[:3], RATES, AP)
    with pytest.raises(BdError, match="test curve has 3 distinct log-rate values"):
        bd_metric(RATES, AP, RATES[:3], AP[:3])
    # Four points, but two share an AP: only three distinct values for BD-rate
    with pytest.raises(BdError, match="test curve has 3 distinct metric values"):
        bd_rate(RATES, AP, RATES[:4], [22.1, 29.8, 29.8, 35.2])


def test_bad_curves_are_refused():
    with pytest.raises(BdError, match="do not overlap"):
        bd_metric([1, 2, 3, 4], AP[:4], [10, 20, 30, 40], AP[:4])
    with pytest.raises(BdError, match="rate must be > 0"):
        bd_rate([0, 2, 3, 4], AP[:4], RATES[:4], AP[:4])
    with pytest.raises(BdError, match="4 rates but 3"):
        bd_rate([1, 2, 3, 4], AP[:3], RATES[:4], AP[:4])
    with pytest.raises(BdError, match="unknown interpolation"):
        bd_rate(RATES, AP, RATES, AP, method="cubic")


def test_non_monotonic_curve_sort_versus_envelope():
    # The fourth point is noise: more bytes, less AP than the third.
    noisy_ap = [22.1, 29.8, 33.0, 32.6, 35.9]
    assert not is_monotonic(RATES, noisy_ap) and is_monotonic(RATES, AP)
    kept = bd_rate(RATES, AP, RATES, noisy_ap)  # "sort": the noisy point stays in
    dropped = bd_rate(RATES, AP, RATES, noisy_ap, monotonic="envelope")
    assert kept != pytest.approx(dropped)
    # With the noisy point dropped, the test curve is the anchor minus one point; PCHIP
    # through 4 of the 5 points differs from the anchor's, but only between 29.8 and 35.9.
    assert dropped == pytest.approx(
        bd_rate(RATES, AP, [RATES[i] for i in (0, 1, 2, 4)], [AP[i] for i in (0, 1, 2, 4)])
    )
    # Equal AP at two rates: BD-rate keeps the cheaper one.
    flat = [22.1, 29.8, 33.0, 35.9, 35.9]
    cheaper = bd_rate(RATES, AP, RATES, flat)
    assert cheaper == pytest.approx(bd_rate(RATES, AP, RATES[:4], flat[:4]))


def test_agrees_with_the_bjontegaard_package():
    bjontegaard = pytest.importorskip("bjontegaard")  # optional cross-check; not a dependency
    test_rates = [10_500.0, 19_000.0, 37_000.0, 70_000.0, 160_000.0]
    test_ap = [21.0, 29.5, 33.4, 35.0, 36.2]
    ours = bd_rate(RATES, AP, test_rates, test_ap)
    theirs = bjontegaard.bd_rate(RATES, AP, test_rates, test_ap, method="pchip", require_matching_points=False)
    assert ours == pytest.approx(theirs, abs=1e-9)
    ours_ap = bd_metric(RATES, AP, test_rates, test_ap)
    theirs_ap = bjontegaard.bd_psnr(RATES, AP, test_rates, test_ap, method="pchip", require_matching_points=False)
    assert ours_ap == pytest.approx(theirs_ap, abs=1e-9)


def _report(points: dict[str, list[tuple[float, float]]], *, split: int = 3) -> pd.DataFrame:
    rows = [{"model": "m", "variant": "fp32", "split": -1, "codec": "none", "bpp": 0.0, "coded_bytes": 0.0, "ap": 40.0}]
    for codec, curve in points.items():
        for bpp, ap in curve:
            rows.append(
                {"model": "m", "variant": "fp32", "split": split, "codec": codec, "bpp": bpp,
                 "coded_bytes": bpp * 1e5, "ap": ap}
            )
    return pd.DataFrame(rows)


def test_bd_table_per_split_against_default_anchor():
    anchor = list(zip([r / 1e5 for r in RATES], AP))
    report = _report(
        {
            "nncodec": anchor,
            "uniform": [(0.8 * r, a) for r, a in anchor],
            "float16": [(2.0, 39.0)],
        }
    )
    table = bd_table(report)
    assert default_anchor(report) == "nncodec"
    assert table["codec"].tolist() == ["float16", "uniform"]
    uniform = table[table["codec"] == "uniform"].iloc[0]
    assert uniform["bd_rate"] == pytest.approx(-20.0, abs=1e-9)
    assert uniform["bd_ap"] > 0 and uniform["monotonic"] and uniform["note"] == ""
    assert (uniform["points"], uniform["anchor_points"]) == (5, 5)
    float16 = table[table["codec"] == "float16"].iloc[0]
    assert math.isnan(float16["bd_rate"]) and "test curve has 1 distinct" in float16["note"]
    # coded bytes as the rate axis: same ratio, same BD-rate
    assert bd_table(report, rate="coded_bytes").set_index("codec").at["uniform", "bd_rate"] == pytest.approx(-20.0)


def test_bd_table_anchor_choice_and_errors():
    report = _report({"uniform": [(1, 20), (2, 30), (3, 35), (4, 37)], "float16": [(9, 40)], "zfp": [(1, 21), (2, 31)]})
    assert default_anchor(report) == "uniform"  # no nncodec: the family with the most points
    # An anchor with fewer than 4 distinct rates is refused up front, naming the usable ones.
    for few in ("zfp", "float16"):
        with pytest.raises(ResultsError, match=f"anchor codec '{few}' has [12] distinct rate point") as err:
            bd_table(report, anchor=few)
        assert err.value.key == "anchor" and err.value.allowed == "uniform"
    with pytest.raises(ResultsError, match="anchor codec 'nncodec' is not in this report") as err:
        bd_table(report, anchor="nncodec")
    assert err.value.key == "anchor" and "uniform" in err.value.allowed
    other_split = pd.concat([report, _report({"zfp": [(1, 1), (2, 2), (3, 3), (4, 4)]}, split=5)])
    missing = bd_table(other_split, anchor="uniform")
    assert missing[missing["split"] == 5]["note"].tolist() == ["no uniform points for this split"]
    assert np.isnan(missing[missing["split"] == 5]["bd_rate"]).all()
