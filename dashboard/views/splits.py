"""Per split point: accuracy and coded kB by split × setting (heatmaps), intermediate-data size, the device's cost per split (head-only latency, compute vs bandwidth) and the timing per codec."""

from __future__ import annotations

import streamlit as st

from .. import charts
from . import ViewContext, no_configs, search, split_names

__all__ = ["TITLE", "render"]

TITLE = "Split points"

_ALL = "all settings (mean per codec)"


def render(ctx: ViewContext) -> None:
    search.render(ctx)  # the adaptive search's chosen setting per split, where one ran
    if no_configs(ctx):
        return
    shown = ctx.shown
    st.subheader("Accuracy by split point and QP")
    qp_codecs = sorted(shown.loc[shown["qp"].notna() & (shown["split"] != -1), "codec"].unique())
    if not qp_codecs:
        st.info("No configuration with a QP (NNCodec, HEVC) among the filtered ones.")
    else:
        c1, c2 = st.columns(2)
        codec = c1.selectbox(
            "Codec", qp_codecs, index=qp_codecs.index("nncodec") if "nncodec" in qp_codecs else 0, key="heat_codec"
        )
        metric = c2.radio("Accuracy", list(charts.METRICS), format_func=charts.METRICS.get, horizontal=True, key="heat_metric")
        frame = charts.heatmap_frame(shown, codec=codec, metric=metric)
        for (model, variant), part in frame.groupby(["model", "variant"], sort=True):
            st.altair_chart(charts.heatmap_chart(part, metric=metric, title=f"{model} {variant}: {codec}, "
                                                 f"{charts.METRICS[metric]} (points)"), width="stretch")

    st.subheader("Coded kB per image by split point and setting")
    codecs = sorted(shown.loc[(shown["split"] != -1) & (shown["codec"] != "none"), "codec"].unique())
    if not codecs:
        st.info("No coded split configuration among the filtered ones.")
    else:
        codec = st.selectbox("Codec", codecs, key="bytes_codec")
        frame = charts.bytes_heatmap_frame(shown, codec=codec)
        for (model, variant), part in frame.groupby(["model", "variant"], sort=True):
            st.altair_chart(charts.bytes_heatmap_chart(part, title=f"{model} {variant}: {codec}, coded kB per image"),
                            width="stretch")

    st.subheader("Intermediate data per split point")
    raw = charts.raw_bytes_frame(shown)
    if raw.empty:
        st.info("No split configuration among the filtered ones.")
    else:
        for model, part in raw.groupby("model", sort=True):
            st.altair_chart(charts.raw_bytes_chart(part, title=f"{model}: raw (uncoded) bytes per image"), width="stretch")

    st.subheader("Device cost per split")
    device = charts.device_frame(shown)
    if device.empty:
        st.info("No head-only latency measured in this results location (sweeps run by this version measure it: "
                "the head model alone on a few images per variant).")
    else:
        st.caption(
            "Head-only latency: each split's head model (what a device deploys) run alone in onnxruntime on a few "
            "of the sweep's images, median; the compute-vs-bandwidth view puts it against the coded kB each setting "
            "sends. Split unsplit is the whole model on the device."
        )
        for (model, variant), part in device.groupby(["model", "variant"], sort=True):
            c1, c2 = st.columns(2)
            c1.altair_chart(charts.head_only_chart(
                part, title=f"{model} {variant}: device compute per split", splits=shown["split"].unique()),
                            width="stretch")
            c2.altair_chart(charts.compute_bandwidth_chart(
                part[part["split"] >= 0], title=f"{model} {variant}: compute vs bandwidth"), width="stretch")
        with st.expander("Device cost table"):
            table = device.drop_duplicates(["model", "variant", "split"])
            columns = [c for c in ("model", "variant", "split", "head_ms", "head_gmacs", "head_params") if c in table]
            st.dataframe(split_names(table[columns]), hide_index=True, key="device_table", column_config={
                "head_ms": st.column_config.NumberColumn("head ms", format="%.1f"),
                "head_gmacs": st.column_config.NumberColumn("head GMACs", format="%.2f"),
                "head_params": st.column_config.NumberColumn("head parameters", format="localized"),
            })

    st.subheader("Time per stage, per codec")
    st.caption(charts.TIMING_NOTE)
    labels = sorted(shown["label"].unique())
    choice = st.selectbox("Settings", [_ALL, *labels], key="timing_setting")
    subset = shown if choice == _ALL else shown[shown["label"] == choice]
    timing = charts.timing_frame(subset)
    if timing.empty:
        st.info("No timings among the filtered configurations.")
        return
    for (model, variant), part in timing.groupby(["model", "variant"], sort=True):
        st.altair_chart(charts.timing_chart(part, title=f"{model} {variant}: mean seconds per image, bars per codec"),
                        width="stretch")
    with st.expander("Timing table"):
        st.dataframe(
            split_names(timing.pivot_table(index=["model", "variant", "split", "codec"], columns="stage",
                                           values="seconds").reset_index()),
            hide_index=True,
            key="timing_table",
        )
