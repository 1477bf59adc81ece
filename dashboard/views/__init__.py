"""The dashboard's views, one module each, and the context every view is drawn from."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import streamlit as st

from orchestrator.results.reading import StoreMeta
from orchestrator.results.schema import split_label

from ..data import Filters, Note

__all__ = ["ViewContext", "show_notes", "no_configs", "split_names"]


@dataclass(frozen=True, eq=False)
class ViewContext:
    """What the sidebar decided: the location, the results version the charts show,
    the whole report and its filtered rows (with Pareto columns), and the filters."""

    location: str
    version: str  # pinned: the charts change only when the user (or auto-refresh) asks
    configs: pd.DataFrame | None  # the whole report (None: no report to show)
    shown: pd.DataFrame | None  # configs after the filters, with front_bytes_ap
    filters: Filters
    meta: StoreMeta | None
    auto_refresh: bool = False
    refresh_s: float = 10.0
    follow: bool = False  # auto-refresh also brings the charts up to date


def show_notes(notes) -> None:
    """Each note as an info / warning / error box."""
    for note in notes:
        if not isinstance(note, Note):
            continue
        {"error": st.error, "warning": st.warning}.get(note.level, st.info)(note.text)


def split_names(frame: pd.DataFrame) -> pd.DataFrame:
    """A table as a person reads it: ``split`` (and ``anchor_split``) as ``input`` /
    ``unsplit`` / node index, rows kept in their (numeric) order. Downloads keep numbers."""
    out = frame.copy()
    for column in ("split", "anchor_split"):
        if column in out:
            out[column] = [split_label(s) for s in out[column]]
    return out


def no_configs(ctx: ViewContext) -> bool:
    """True (after saying why) when there is no configuration to draw."""
    if ctx.configs is None:
        st.info("No configuration table to show yet (see the notes at the top).")
        return True
    if ctx.shown is None or ctx.shown.empty:
        st.info("No configuration matches the filters in the sidebar.")
        return True
    return False
