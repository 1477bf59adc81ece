"""Rate–accuracy curves: accuracy against bpp (stills), kbps (video) or kB, with 95% intervals, the uncompressed accuracy and the Pareto front."""

from __future__ import annotations

import streamlit as st

from .. import charts
from . import ViewContext, no_configs

__all__ = ["TITLE", "render", "LEGEND"]

TITLE = "Rate–accuracy"

LEGEND = (
    "Colour: {group}; line dash and point shape: {other}. Vertical bars: 95% bootstrap interval of each point "
    "over the images. Black rings: the Pareto front (fewest bytes for the accuracy, per model, among the filtered "
    "configurations). Grey dashed line and band: the unsplit, uncoded model and its 95% interval. Split input is "
    "remote inference (the picture coded, the whole model on the server)."
)


def render(ctx: ViewContext) -> None:
    if no_configs(ctx):
        return
    shown = ctx.shown
    rates = [r for r in charts.RATE_AXES if r in shown.columns and shown[r].notna().any()]
    c1, c2, c3 = st.columns(3)
    group = c1.radio("One curve colour per", charts.GROUPINGS, horizontal=True, key="curve_group")
    metrics = [m for m in charts.METRICS if m in shown.columns]
    metric = c2.radio("Accuracy", metrics, format_func=charts.METRICS.get, horizontal=True, key="curve_metric")
    # Video sweeps default to kbps (the field's rate there), stills to bpp.
    default = "kbps" if "kbps" in rates else "bpp"
    x = c3.radio("Rate", rates, index=rates.index(default) if default in rates else 0, horizontal=True,
                 key="curve_rate", format_func=lambda r: {"kB": "kB per image"}.get(r, r))
    # The uncompressed AP is the reference even when the split filter hides split −1.
    reference = ctx.configs[
        ctx.configs["model"].isin(shown["model"].unique()) & ctx.configs["variant"].isin(shown["variant"].unique())
    ]
    other = "codec" if group != "codec" else "split"
    st.caption(LEGEND.format(group=group, other=other))
    drawn = 0
    for model in sorted(shown["model"].unique()):
        rules = charts.baseline_rules(reference[reference["model"] == model], metric=metric)
        points = charts.curve_points(shown[shown["model"] == model], x=x, group=group, metric=metric)
        if points.empty:
            continue
        title = f"{model}: {charts.METRICS[metric]} against {charts.X_AXES[x].split(' (')[0]}"
        st.altair_chart(
            charts.rate_accuracy_chart(points, rules, x=x, group=group, metric=metric, title=title), width="stretch"
        )
        drawn += 1
        noise = points[points["delta_noise"].fillna(False).astype(bool)] if "delta_noise" in points else points.iloc[:0]
        noise = noise[noise["delta_ap"].abs() > 0] if len(noise) else noise
        if len(noise):
            st.caption(
                f"{len(noise)} of {len(points)} points differ from the uncompressed AP by an amount inside the noise "
                "(their paired 95% ΔAP interval holds 0), e.g. "
                + ", ".join(f"split {r.split_name} {r.label} (ΔAP {r.delta_ap:+.2f})" for r in noise.head(3).itertuples())
                + "."
            )
    if not drawn:
        st.info("No split configuration with a rate and an accuracy among the filtered ones (only the unsplit baseline?).")
