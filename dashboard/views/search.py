"""The adaptive search's result (search.json): per split the chosen setting, its ΔAP interval, and tasks run against the grid."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from orchestrator import open_results
from orchestrator.planning.search import read_search, search_frame

from . import ViewContext, split_names

__all__ = ["render", "search_table"]


def search_table(location: str) -> tuple[dict | None, pd.DataFrame]:
    """search.json and its table (empty where no search ran at this location)."""
    summary = read_search(open_results(location))
    return summary, search_frame(summary)


def render(ctx: ViewContext) -> None:
    summary, frame = search_table(ctx.location)
    if frame.empty:
        return
    st.subheader("Adaptive search")
    ratio = summary["grid_tasks"] / max(1, summary["tasks_run"])
    st.caption(
        f"{summary['state']}: {summary['tasks_run']:,} tasks run of {summary['grid_tasks']:,} in the full grid "
        f"({ratio:.1f}× fewer). estimate / low / high: the chosen setting's goal quantity on all images "
        "(ΔAP points against the reference with its paired-bootstrap interval, or bpp)."
    )
    shown = frame.drop(columns=["fallback"]).rename(columns={"tasks": "tasks run", "grid_tasks": "grid tasks"})
    st.dataframe(split_names(shown), hide_index=True, key="search_table")
