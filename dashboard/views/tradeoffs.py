"""BD-rate against an anchor codec, the Pareto front, and the cheapest configuration within an AP budget."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from orchestrator.bdrate import bd_table, default_anchor
from orchestrator.pareto import cheapest_within
from tasks.errors import ResultsError

from . import ViewContext, no_configs

__all__ = ["TITLE", "render", "FRONT_COLUMNS"]

TITLE = "BD-rate & Pareto"

FRONT_COLUMNS = ["model", "variant", "split", "codec", "label", "coded_bytes", "bpp", "ratio", "ap", "ap50", "delta_ap"]


def render(ctx: ViewContext) -> None:
    if no_configs(ctx):
        return
    shown = ctx.shown
    st.subheader("BD-rate")
    codecs = sorted(shown.loc[shown["split"] != -1, "codec"].unique())
    if len(codecs) < 2:
        st.info(
            "BD-rates compare two codecs at the same split point; the filtered configurations have "
            + (f"only {codecs[0]}." if codecs else "no split configuration.")
        )
    else:
        try:
            default = default_anchor(shown)
        except ResultsError:
            default = codecs[0]
        c1, c2 = st.columns(2)
        anchor = c1.selectbox("Anchor codec", codecs, index=codecs.index(default), key="bd_anchor")
        rate = c2.radio("Rate", ["bpp", "coded_bytes"], horizontal=True, key="bd_rate")
        table = bd_table(shown, anchor=anchor, rate=rate)
        st.caption(
            f"Negative BD-rate: fewer bytes than {anchor} for the same AP (percent); BD-AP: AP points gained at "
            "the same rate. At least 4 points per curve."
        )
        st.dataframe(
            table,
            hide_index=True,
            width="stretch",
            key="bd_table",
            column_config={
                "bd_rate": st.column_config.NumberColumn("BD-rate %", format="%.2f"),
                "bd_ap": st.column_config.NumberColumn("BD-AP", format="%.2f"),
            },
        )

    st.subheader("Pareto front (fewest coded bytes for the AP, per model)")
    front = shown[shown["front_bytes_ap"].fillna(False).astype(bool)] if "front_bytes_ap" in shown else shown.iloc[:0]
    if front.empty:
        st.info("No configuration on a front (the front needs split configurations with an AP).")
    else:
        front = front.sort_values(["model", "coded_bytes"])
        st.dataframe(front[[c for c in FRONT_COLUMNS if c in front]], hide_index=True, width="stretch", key="front_table")

    st.subheader("Cheapest configuration within an AP budget")
    points = st.number_input(
        "AP points below the uncompressed AP allowed", min_value=0.0, value=1.0, step=0.5, key="within_points"
    )
    cheapest = cheapest_within(shown, points=float(points))
    if cheapest.empty:
        st.info(f"No filtered configuration is within {points:g} AP points of its uncompressed AP.")
    else:
        columns = ["model", "variant", "split", "codec", "label", "coded_bytes", "ap", "ap_uncompressed", "delta_ap"]
        st.dataframe(pd.DataFrame(cheapest[columns]), hide_index=True, width="stretch", key="cheapest_table")
