"""BD-rate against remote inference (or an anchor codec), the Pareto front, and the cheapest configuration within an AP budget."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from orchestrator.bdrate import FITS, REMOTE_SPLIT, bd_table, default_anchor
from orchestrator.pareto import cheapest_within
from tasks.errors import ResultsError

from . import ViewContext, no_configs, split_names

__all__ = ["TITLE", "render", "FRONT_COLUMNS", "ctx_metric"]

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
            "BD-rates compare two codecs (at the same split, or against remote inference); the filtered "
            "configurations have " + (f"only {codecs[0]}." if codecs else "no split configuration.")
        )
    else:
        try:
            default = default_anchor(shown)
        except ResultsError:
            default = codecs[0]
        c1, c2, c3, c4 = st.columns(4)
        anchor = c1.selectbox("Anchor codec", codecs, index=codecs.index(default), key="bd_anchor")
        rate = c2.radio("Rate", ["bpp", "coded_bytes"], horizontal=True, key="bd_rate")
        metrics = [m for m in ("ap", "ap50", "ap75", "miou") if m in shown]
        metric = c3.radio(
            "Metric", metrics, index=metrics.index(ctx_metric(ctx, metrics)), horizontal=True, key="bd_metric"
        )
        fit = c4.radio("Fit", list(FITS), horizontal=True, key="bd_fit")
        try:
            table = bd_table(shown, anchor=anchor, rate=rate, metric=metric, monotonic=FITS[fit])
        except ResultsError as exc:
            st.warning(f"No BD-rates against {anchor}: {exc.message}" + (f" (can anchor: {exc.allowed})" if exc.allowed else ""))
            table = None
        if table is not None:
            remote = not table.empty and int(table["anchor_split"].iloc[0]) == REMOTE_SPLIT
            against = f"remote inference with {anchor} (the image coded, the whole model on the server)" if remote else anchor
            st.caption(
                f"Against {against}. Negative BD-rate: fewer bytes for the same {metric} (percent); BD-{metric}: "
                f"points gained at the same rate. Split input is remote inference. At least 4 points per curve."
            )
            st.dataframe(
                split_names(table),
                hide_index=True,
                width="stretch",
                key="bd_table",
                column_config={
                    "bd_rate": st.column_config.NumberColumn("BD-rate %", format="%.2f"),
                    "bd_ap": st.column_config.NumberColumn(f"BD-{metric}", format="%.2f"),
                },
            )

    st.subheader("Pareto front (fewest coded bytes for the AP, per model)")
    front = shown[shown["front_bytes_ap"].fillna(False).astype(bool)] if "front_bytes_ap" in shown else shown.iloc[:0]
    if front.empty:
        st.info("No configuration on a front (the front needs split configurations with an AP).")
    else:
        front = front.sort_values(["model", "coded_bytes"])
        st.dataframe(split_names(front[[c for c in FRONT_COLUMNS if c in front]]), hide_index=True, width="stretch",
                     key="front_table")

    st.subheader("Cheapest configuration within an AP budget")
    points = st.number_input(
        "AP points below the uncompressed AP allowed", min_value=0.0, value=1.0, step=0.5, key="within_points"
    )
    cheapest = cheapest_within(shown, points=float(points))
    if cheapest.empty:
        st.info(f"No filtered configuration is within {points:g} AP points of its uncompressed AP.")
    else:
        columns = ["model", "variant", "split", "codec", "label", "coded_bytes", "ap", "ap_uncompressed", "delta_ap"]
        st.dataframe(split_names(pd.DataFrame(cheapest[columns])), hide_index=True, width="stretch", key="cheapest_table")


def ctx_metric(ctx: ViewContext, metrics: list[str]) -> str:
    """The default BD metric: miou in reference evaluation (AP saturates there), else ap."""
    reference = ctx.meta is not None and ctx.meta.evaluation == "reference"
    return "miou" if reference and "miou" in metrics else "ap"
