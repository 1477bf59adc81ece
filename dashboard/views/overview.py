"""Overview: progress of a (running) sweep, its rate, and its failures grouped by message; refreshes itself."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import streamlit as st

from orchestrator.execution.progress import window_rate
from orchestrator.results.schema import split_label

from .. import charts
from ..data import Filters, Progress, apply_filters, load_progress, results_version
from . import ViewContext, show_notes, split_names

__all__ = ["TITLE", "ProgressSummary", "summarize", "render"]

TITLE = "Overview"


@dataclass(frozen=True, eq=False)
class ProgressSummary:
    """Counts of the filtered tasks; ``remaining`` and ``tasks`` are None without a plan."""

    ok: int
    failed: int
    remaining: int | None
    tasks: int | None
    rate_per_min: float  # rows finished per minute over the last ``window_min`` minutes of work
    window_min: float
    last_finished: pd.Timestamp | None
    eta_s: float | None
    by_split: pd.DataFrame  # model, variant, split, state, order, tasks
    errors: pd.DataFrame  # error, count, configurations, example


def summarize(progress: Progress, filters: Filters, *, now: pd.Timestamp, window_min: float = 1.0) -> ProgressSummary:
    rows = apply_filters(progress.rows, filters)
    status = rows["status"].astype(object).to_numpy()
    plan = None if progress.plan is None else apply_filters(progress.plan, filters)
    if plan is not None:
        ok, failed = int(plan["ok"].sum()), int(plan["failed"].sum())
        remaining, tasks = int(plan["remaining"].sum()), int(plan["tasks"].sum())
        long = plan[["model", "variant", "split", "ok", "failed", "remaining"]].melt(
            id_vars=["model", "variant", "split"], var_name="state", value_name="tasks"
        )
    else:
        ok, failed = int((status == "ok").sum()), int((status == "failed").sum())
        remaining = tasks = None
        long = pd.DataFrame(
            {
                "model": rows["model"].astype(str),
                "variant": rows["variant"].astype(str),
                "split": rows["split"],
                "state": status,
                "tasks": 1,
            }
        )
    by_split = long.groupby(["model", "variant", "split", "state"], as_index=False, sort=True)["tasks"].sum()
    by_split["order"] = by_split["state"].map({"ok": 0, "failed": 1, "remaining": 2})

    finished = rows["finished_at"]
    last = finished.max() if len(finished) and finished.notna().any() else None
    # The CLI's rate (orchestrator.execution.progress.window_rate): tasks over the last minute of
    # work, so a run that just started or paused is not divided by its idle time.
    stamps = finished.dropna()
    seconds = (stamps - stamps.min()).dt.total_seconds().to_numpy() if len(stamps) else []
    rate = 60.0 * window_rate(seconds, window_s=60.0 * window_min)
    eta = remaining / rate * 60.0 if remaining and rate > 0 else None
    if eta is not None and last is not None and remaining:
        # Work goes on while nobody looks: count the time since the last stored row as done.
        eta = max(0.0, eta - max(0.0, (now - last).total_seconds()))

    failed_rows = rows[status == "failed"]
    if len(failed_rows):
        described = failed_rows.assign(
            error=failed_rows["error"].astype(object).fillna("(no message)"),
            configuration=failed_rows["model"].astype(str) + " / " + failed_rows["variant"].astype(str)
            + " / split " + failed_rows["split"].map(split_label) + " / " + failed_rows["codec"].astype(str),
        )  # fmt: skip
        errors = (
            described.groupby("error", sort=False)
            .agg(count=("configuration", "size"), configurations=("configuration", "nunique"), example=("configuration", "first"))
            .reset_index()
            .sort_values(["count", "error"], ascending=[False, True])
            .reset_index(drop=True)
        )
    else:
        errors = pd.DataFrame(columns=["error", "count", "configurations", "example"])
    return ProgressSummary(ok, failed, remaining, tasks, rate, window_min, last, eta, by_split, errors)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    d, rest = divmod(seconds, 86400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    if d:
        return f"{d}d {h}h"
    return f"{h}h {m:02d}m" if h else f"{m}m {s:02d}s"


def _draw(ctx: ViewContext, progress: Progress) -> None:
    if progress.meta is None:
        return  # not a results location: the page's top says why
    show_notes(progress.notes)
    now = pd.Timestamp.now(tz="UTC")
    summary = summarize(progress, ctx.filters, now=now)
    if summary.ok + summary.failed == 0 and not summary.remaining:
        st.info("No task rows match the filters yet.")
    cols = st.columns(5)
    cols[0].metric("done (ok)", f"{summary.ok:,}")
    cols[1].metric("failed", f"{summary.failed:,}")
    cols[2].metric("remaining", "unknown" if summary.remaining is None else f"{summary.remaining:,}")
    cols[3].metric(f"rows / min (last {summary.window_min:g} min of work)", f"{summary.rate_per_min:,.1f}")
    if summary.last_finished is not None:
        age = (now - summary.last_finished).total_seconds()
        cols[4].metric("last row", f"{_duration(age)} ago", help=summary.last_finished.strftime("%Y-%m-%d %H:%M:%S UTC"))
        st.caption(f"Last row stored {summary.last_finished.strftime('%Y-%m-%d %H:%M:%S UTC')}.")
    else:
        cols[4].metric("last row", "none")
    if summary.tasks:
        done = summary.ok + summary.failed
        text = f"{done:,} of {summary.tasks:,} tasks stored ({100 * done / summary.tasks:.1f}%)"
        if summary.eta_s is not None:
            text += f"; about {_duration(summary.eta_s)} left at the current rate"
        st.progress(min(1.0, done / summary.tasks), text=text)
    if len(summary.by_split):
        st.altair_chart(charts.progress_chart(summary.by_split), width="stretch")
    st.subheader("Failures by error message")
    if summary.errors.empty:
        st.caption("No failed tasks" + (" among the filtered ones." if ctx.filters != Filters() else "."))
    else:
        st.dataframe(summary.errors, hide_index=True, width="stretch", key="overview_errors")
    if progress.plan is not None:
        with st.expander("Progress per configuration"):
            plan = apply_filters(progress.plan, ctx.filters)
            st.dataframe(split_names(plan), hide_index=True, width="stretch")


def render(ctx: ViewContext) -> None:
    every = ctx.refresh_s if ctx.auto_refresh else None

    @st.fragment(run_every=every)
    def live() -> None:
        version = results_version(ctx.location)
        _draw(ctx, load_progress(ctx.location, version))
        if version != ctx.version:
            if ctx.follow:
                st.session_state["pinned_version"] = (ctx.location, version)
                st.rerun(scope="app")
            st.info("New results were stored since the charts were drawn.")
            if st.button("Update the charts", key="update_charts"):
                st.session_state["pinned_version"] = (ctx.location, version)
                st.rerun(scope="app")

    live()
