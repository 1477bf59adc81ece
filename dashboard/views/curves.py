"""Rate–accuracy curves: AP against coded bytes and against compression ratio, with the uncompressed AP and the Pareto front."""

from __future__ import annotations

import streamlit as st

from .. import charts
from . import ViewContext, no_configs

__all__ = ["TITLE", "render"]

TITLE = "Rate–accuracy"


def render(ctx: ViewContext) -> None:
    if no_configs(ctx):
        return
    c1, c2 = st.columns(2)
    group = c1.radio("One curve colour per", charts.GROUPINGS, horizontal=True, key="curve_group")
    metric = c2.radio("Accuracy", list(charts.METRICS), format_func=charts.METRICS.get, horizontal=True, key="curve_metric")
    shown = ctx.shown
    # The uncompressed AP is the reference even when the split filter hides split −1.
    reference = ctx.configs[
        ctx.configs["model"].isin(shown["model"].unique()) & ctx.configs["variant"].isin(shown["variant"].unique())
    ]
    st.caption(
        "Dashed lines: the unsplit, uncoded model's accuracy. Diamonds: the Pareto front "
        "(fewest coded bytes for the AP, per model, among the filtered configurations)."
    )
    drawn = 0
    for model in sorted(shown["model"].unique()):
        rules = charts.baseline_rules(reference[reference["model"] == model], metric=metric)
        for x in charts.X_AXES:
            points = charts.curve_points(shown[shown["model"] == model], x=x, group=group, metric=metric)
            if points.empty:
                continue
            title = f"{model}: {charts.METRICS[metric]} against {'coded bytes' if x == 'coded_bytes' else 'compression ratio'}"
            st.altair_chart(
                charts.rate_accuracy_chart(points, rules, x=x, group=group, metric=metric, title=title), width="stretch"
            )
            drawn += 1
    if not drawn:
        st.info("No split configuration with coded bytes and an AP among the filtered ones (only the unsplit baseline?).")
