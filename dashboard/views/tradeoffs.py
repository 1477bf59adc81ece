"""BD-rate against remote inference (or an anchor codec), the Pareto front, and the cheapest configuration within an AP budget."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from orchestrator.reporting.bdrate import FITS, REMOTE_SPLIT, bd_table, default_anchor
from orchestrator.reporting.pareto import cheapest_within
from tasks.errors import ResultsError

from . import ViewContext, no_configs, split_names

__all__ = ["TITLE", "render", "FRONT_COLUMNS", "ctx_metric"]

TITLE = "BD-rate & Pareto"

FRONT_COLUMNS = ["model", "variant", "split", "codec", "label", "kB", "bpp", "kbps", "ratio", "ap", "ap_low", "ap_high",
                 "delta_ap", "delta_ap_low", "delta_ap_high", "front_noise"]
# How numbers read in every table of this view (the data keeps full precision for downloads).
NUMBER_FORMATS = {
    "kB": st.column_config.NumberColumn("kB", format="%.2f"),
    "coded_bytes": st.column_config.NumberColumn("coded bytes", format="localized"),
    "bpp": st.column_config.NumberColumn("bpp", format="%.4f"),
    "kbps": st.column_config.NumberColumn("kbps", format="%.1f"),
    "ratio": st.column_config.NumberColumn("ratio", format="%.1f"),
    "ap": st.column_config.NumberColumn("AP", format="%.2f"),
    "ap_low": st.column_config.NumberColumn("AP 95% low", format="%.2f"),
    "ap_high": st.column_config.NumberColumn("AP 95% high", format="%.2f"),
    "ap_uncompressed": st.column_config.NumberColumn("AP uncompressed", format="%.2f"),
    "delta_ap": st.column_config.NumberColumn("ΔAP", format="%+.2f"),
    "delta_ap_low": st.column_config.NumberColumn("ΔAP 95% low", format="%+.2f"),
    "delta_ap_high": st.column_config.NumberColumn("ΔAP 95% high", format="%+.2f"),
    "front_noise": st.column_config.CheckboxColumn("gain within noise"),
    "note": st.column_config.TextColumn("what the interval says", width="large"),
}


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
        rate = c2.radio("Rate", [r for r in ("bpp", "kbps", "coded_bytes") if r in shown], horizontal=True, key="bd_rate")
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
                    "bd_rate": st.column_config.NumberColumn("BD-rate %", format="%+.2f"),
                    "bd_ap": st.column_config.NumberColumn(f"BD-{metric}", format="%+.2f"),
                },
            )

    st.subheader("Pareto front (fewest coded bytes for the AP, per model)")
    front = shown[shown["front_bytes_ap"].fillna(False).astype(bool)] if "front_bytes_ap" in shown else shown.iloc[:0]
    if front.empty:
        st.info("No configuration on a front (the front needs split configurations with an AP).")
    else:
        front = front.sort_values(["model", "coded_bytes"])
        if "front_noise" in front and front["front_noise"].any():
            st.caption(
                f"{int(front['front_noise'].sum())} front point(s) gain AP over the next cheaper front point by less "
                "than the noise (their 95% AP intervals overlap): on these images the extra bytes buy nothing shown."
            )
        st.dataframe(split_names(front[[c for c in FRONT_COLUMNS if c in front]]), hide_index=True, width="stretch",
                     key="front_table", column_config=NUMBER_FORMATS)

    st.subheader("Cheapest configuration within an AP budget")
    points = st.number_input(
        "AP points below the uncompressed AP allowed", min_value=0.0, value=1.0, step=0.5, key="within_points"
    )
    cheapest = cheapest_within(shown, points=float(points))
    if cheapest.empty:
        st.info(f"No filtered configuration is within {points:g} AP points of its uncompressed AP.")
    else:
        columns = ["model", "variant", "split", "codec", "label", "coded_bytes", "kB", "ap", "ap_uncompressed", "delta_ap",
                   "delta_ap_low", "delta_ap_high", "note"]
        st.dataframe(split_names(pd.DataFrame(cheapest[[c for c in columns if c in cheapest]])), hide_index=True,
                     width="stretch", key="cheapest_table", column_config=NUMBER_FORMATS)


def ctx_metric(ctx: ViewContext, metrics: list[str]) -> str:
    """The default BD metric: miou in reference evaluation (AP saturates there), else ap."""
    reference = ctx.meta is not None and ctx.meta.evaluation == "reference"
    return "miou" if reference and "miou" in metrics else "ap"
