"""Per split point: AP by split × QP (heatmap), intermediate-data size, and the head / encode / decode / tail timing."""

from __future__ import annotations

import streamlit as st

from .. import charts
from . import ViewContext, no_configs, split_names

__all__ = ["TITLE", "render"]

TITLE = "Split points"

_ALL = "all filtered configurations (mean)"


def render(ctx: ViewContext) -> None:
    if no_configs(ctx):
        return
    shown = ctx.shown
    st.subheader("AP by split point and QP")
    qp_codecs = sorted(shown.loc[shown["qp"].notna() & (shown["split"] != -1), "codec"].unique())
    if not qp_codecs:
        st.info("No configuration with a QP (NNCodec) among the filtered ones.")
    else:
        c1, c2 = st.columns(2)
        codec = c1.selectbox(
            "Codec", qp_codecs, index=qp_codecs.index("nncodec") if "nncodec" in qp_codecs else 0, key="heat_codec"
        )
        metric = c2.radio("Accuracy", list(charts.METRICS), format_func=charts.METRICS.get, horizontal=True, key="heat_metric")
        frame = charts.heatmap_frame(shown, codec=codec, metric=metric)
        for (model, variant), part in frame.groupby(["model", "variant"], sort=True):
            st.altair_chart(charts.heatmap_chart(part, metric=metric, title=f"{model} {variant}: {codec}"), width="stretch")

    st.subheader("Intermediate data per split point")
    raw = charts.raw_bytes_frame(shown)
    if raw.empty:
        st.info("No split configuration among the filtered ones.")
    else:
        for model, part in raw.groupby("model", sort=True):
            st.altair_chart(charts.raw_bytes_chart(part, title=f"{model}: raw (uncoded) bytes"), width="stretch")

    st.subheader("Time per stage")
    labels = sorted(shown["label"].unique())
    choice = st.selectbox("Configurations averaged", [_ALL, *labels], key="timing_setting")
    subset = shown if choice == _ALL else shown[shown["label"] == choice]
    timing = charts.timing_frame(subset)
    if timing.empty:
        st.info("No timings among the filtered configurations.")
        return
    for (model, variant), part in timing.groupby(["model", "variant"], sort=True):
        st.altair_chart(charts.timing_chart(part, title=f"{model} {variant}: mean seconds per image"), width="stretch")
    with st.expander("Timing table"):
        st.dataframe(
            split_names(timing.pivot_table(index=["model", "variant", "split"], columns="stage", values="seconds").reset_index()),
            hide_index=True,
            key="timing_table",
        )
