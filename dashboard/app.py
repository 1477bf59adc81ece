"""The Streamlit dashboard of a results location: ``streamlit run dashboard/app.py -- RESULTS`` (what ``splitsweep dashboard RESULTS`` starts)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

# `streamlit run` puts only this file's folder on sys.path; the packages live one up.
_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import pandas as pd  # noqa: E402
import streamlit as st  # noqa: E402

from dashboard.data import Filters, apply_filters, load_configs, load_progress, read_meta, results_version  # noqa: E402
from dashboard.views import ViewContext, curves, drilldown, overview, show_notes, splits, table, tradeoffs, variants  # noqa: E402
from orchestrator.reporting.pareto import report_fronts  # noqa: E402
from orchestrator.results.schema import split_label  # noqa: E402

VIEWS = (overview, curves, splits, tradeoffs, variants, drilldown, table)
ENV_RESULTS = "SPLITSWEEP_RESULTS"


def _start_location() -> str:
    """The results location this server was started on: ``streamlit run app.py -- RESULTS``
    leaves RESULTS in sys.argv[1:]; SPLITSWEEP_RESULTS otherwise."""
    if Path(sys.argv[0]).name == "app.py" and len(sys.argv) > 1:
        return sys.argv[1]
    return os.environ.get(ENV_RESULTS, "")


def _multiselect(label: str, options: list, key: str, *, format_func=str) -> tuple | None:
    chosen = st.sidebar.multiselect(label, options, key=key, placeholder="all", format_func=format_func)
    return tuple(chosen) if chosen else None


def _filters(frame: pd.DataFrame | None) -> Filters:
    st.sidebar.header("Filters")
    if frame is None or frame.empty:
        st.sidebar.caption("Nothing to filter yet.")
        return Filters()

    def unique(column: str) -> list:
        return sorted(frame[column].dropna().astype(str).unique()) if column in frame else []

    models = _multiselect("Model", unique("model"), "f_model")
    variants_ = _multiselect("Variant", unique("variant"), "f_variant")
    split_options = sorted(int(s) for s in frame["split"].dropna().unique())
    splits_ = _multiselect("Split point", split_options, "f_split", format_func=split_label)
    codecs = _multiselect("Codec", unique("codec"), "f_codec")
    qp = None
    qps = pd.to_numeric(frame["qp"], errors="coerce").dropna() if "qp" in frame else pd.Series(dtype=float)
    if len(qps) and qps.min() < qps.max():
        lo, hi = int(qps.min()), int(qps.max())
        chosen = st.sidebar.slider("QP range (settings without a QP always pass)", lo, hi, (lo, hi), key="f_qp")
        qp = None if tuple(chosen) == (lo, hi) else (int(chosen[0]), int(chosen[1]))
    return Filters(models=models, variants=variants_, splits=splits_, codecs=codecs, qp=qp)


def main() -> None:
    st.set_page_config(page_title="splitsweep dashboard", layout="wide")
    sidebar = st.sidebar
    sidebar.title("splitsweep")
    if "results_location" not in st.session_state:
        st.session_state["results_location"] = _start_location()
    location = sidebar.text_input("Results location", key="results_location").strip()
    if not location:
        st.info("Give a results location in the sidebar, or start the dashboard with `splitsweep dashboard RESULTS`.")
        return

    current = results_version(location)
    pinned = st.session_state.get("pinned_version")
    if sidebar.button("Reload the newest results", key="reload") or not pinned or pinned[0] != location:
        pinned = (location, current)
        st.session_state["pinned_version"] = pinned
    version = pinned[1]
    update = sidebar.checkbox(
        "Update the report from new rows", value=True, key="update_report",
        help="Re-score the configurations whose rows changed (incremental) and save the report.",
    )  # fmt: skip
    auto = sidebar.toggle("Auto-refresh the overview", value=False, key="auto_refresh")
    refresh_s = sidebar.number_input("every (seconds)", min_value=2, max_value=3600, value=10, key="refresh_s", disabled=not auto)
    follow = sidebar.checkbox("…and update the charts too", value=False, key="follow", disabled=not auto)

    meta, meta_note = read_meta(location)
    configs = load_configs(location, version, update, "--all" in sys.argv[2:])
    options = configs.table if configs.table is not None else load_progress(location, version).rows
    filters = _filters(options)
    shown = None
    if configs.table is not None:
        shown = report_fronts(apply_filters(configs.table, filters))

    st.title(f"splitsweep: {meta.sweep}" if meta else "splitsweep")
    if meta is not None:
        n = len(configs.table) if configs.table is not None else 0
        st.caption(f"{location} · evaluation: {meta.evaluation} · {n} configurations · results version {version}")
    show_notes([meta_note] if meta_note is not None else configs.notes)
    ctx = ViewContext(
        location=location, version=version, configs=configs.table, shown=shown, filters=filters, meta=meta,
        auto_refresh=bool(auto), refresh_s=float(refresh_s), follow=bool(follow),
    )  # fmt: skip
    tabs = st.tabs([v.TITLE for v in VIEWS], key="view", on_change="rerun")
    for view, tab in zip(VIEWS, tabs):
        if tab.open:
            with tab:
                view.render(ctx)


main()
