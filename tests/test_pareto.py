"""Pareto fronts over hand-made points (ties, duplicates, missing values) and the cheapest configuration within an AP budget."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from orchestrator.reporting import pareto
from orchestrator.reporting.pareto import cheapest_within, pareto_front, pareto_mask, report_fronts
from tasks.errors import ResultsError

# name: (coded_bytes, ap)
POINTS = {
    "a": (100, 30.0),  # cheapest
    "b": (200, 35.0),
    "c": (200, 33.0),  # same bytes as b, less AP: dominated
    "d": (300, 35.0),  # same AP as b, more bytes: dominated
    "e": (400, 40.0),
    "f": (400, 40.0),  # exact duplicate of e: both stay
    "g": (500, 39.0),  # dominated by e
    "h": (50, np.nan),  # no AP: never on the front
    "i": (600, 41.0),
}


def _frame(points=POINTS) -> pd.DataFrame:
    return pd.DataFrame(
        {"name": list(points), "coded_bytes": [p[0] for p in points.values()], "ap": [p[1] for p in points.values()]}
    )


def test_front_over_bytes_and_ap_with_ties_and_duplicates():
    front = pareto_front(_frame())
    assert front["name"].tolist() == ["a", "b", "e", "f", "i"]
    assert pareto_mask(_frame()).tolist() == [n in {"a", "b", "e", "f", "i"} for n in POINTS]


def test_three_objectives():
    df = _frame({"a": (100, 30.0), "b": (200, 35.0), "c": (200, 35.0), "d": (300, 36.0)})
    df["head_macs"] = [9e9, 5e9, 4e9, 9e9]
    # c matches b in bytes and AP with less compute: b is dominated now; a survives on cost alone.
    front = pareto_front(df, minimize=("coded_bytes", "head_macs"), maximize=("ap",))
    assert sorted(front["name"]) == ["a", "c", "d"]
    with pytest.raises(ResultsError, match="no column 'params'"):
        pareto_mask(df, minimize=("params",))


def test_chunked_comparison_matches_brute_force(monkeypatch):
    rng = np.random.default_rng(7)
    df = pd.DataFrame({"coded_bytes": rng.integers(1, 40, 300), "ap": rng.integers(0, 30, 300).astype(float)})
    monkeypatch.setattr(pareto, "_CHUNK", 17)
    mask = pareto_mask(df)
    values = df.to_numpy()
    expected = [
        not any(
            (o[0] <= p[0] and o[1] >= p[1]) and (o[0] < p[0] or o[1] > p[1]) for o in values
        )
        for p in values
    ]
    assert mask.tolist() == expected and 0 < mask.sum() < 300


def _report() -> pd.DataFrame:
    rows = [
        # model, variant, split, codec, coded_bytes, ap, delta_ap
        ("m", "fp32", -1, "none", 0, 40.0, 0.0),
        ("m", "fp32", 2, "nncodec", 900, 39.8, -0.2),
        ("m", "fp32", 2, "uniform", 500, 39.2, -0.8),
        ("m", "fp32", 4, "nncodec", 300, 36.0, -4.0),
        ("m", "fp16", 4, "nncodec", 300, 35.9, -0.5),  # within 1 point of the fp16 baseline
        ("m", "fp16", -1, "none", 0, 36.4, 0.0),
        ("n", "fp32", -1, "none", 0, 50.0, 0.0),
        ("n", "fp32", 3, "nncodec", 100, 45.0, -5.0),
    ]
    return pd.DataFrame(rows, columns=["model", "variant", "split", "codec", "coded_bytes", "ap", "delta_ap"])


def test_cheapest_within_an_ap_budget_uses_its_own_variants_baseline():
    best = cheapest_within(_report(), points=1.0)
    # model m: the fp16 split 4 point is 300 bytes and 0.5 below the fp16 baseline (the fp32
    # split 4 point is as cheap but 4 points down); model n has nothing within 1 point.
    assert best[["model", "variant", "split", "coded_bytes"]].values.tolist() == [["m", "fp16", 4, 300]]
    per_variant = cheapest_within(_report(), points=1.0, by=("model", "variant"))
    assert per_variant[["variant", "coded_bytes"]].values.tolist() == [["fp16", 300], ["fp32", 500]]
    assert cheapest_within(_report(), points=5.0)["model"].tolist() == ["m", "n"]
    with pytest.raises(ResultsError, match="cannot be negative"):
        cheapest_within(_report(), points=-1)


def test_report_fronts_per_model_without_the_baseline():
    marked = report_fronts(_report())
    on = marked[marked["front_bytes_ap"]]
    assert on[["model", "split", "codec", "variant"]].values.tolist() == [
        ["m", 2, "nncodec", "fp32"],
        ["m", 2, "uniform", "fp32"],
        ["m", 4, "nncodec", "fp32"],
        ["n", 3, "nncodec", "fp32"],
    ]
    assert "front_bytes_ap_macs" not in marked.columns
    with_macs = _report().assign(head_macs=[0, 5e8, 5e8, 9e8, 4e8, 0, 0, 1e8])
    marked = report_fronts(with_macs)
    # the fp16 point costs as many bytes as the fp32 one, less AP, but less head compute
    fp16 = marked[(marked["variant"] == "fp16") & (marked["split"] == 4)].iloc[0]
    assert not fp16["front_bytes_ap"] and fp16["front_bytes_ap_macs"]
