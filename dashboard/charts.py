"""Altair charts of the dashboard: pure functions of report DataFrames, usable without Streamlit.

Each chart has a ``*_frame`` function that selects and shapes its data (tested on its
numbers) and a ``*_chart`` function that draws that frame. Frames keep the numeric
``split`` and add ``split_name`` (orchestrator.schema.split_label: ``input``, ``unsplit``,
node indices); charts draw the name, in the numeric order.
"""

from __future__ import annotations

from collections.abc import Sequence

import altair as alt
import numpy as np
import pandas as pd

from orchestrator.schema import BASELINE_CODEC, BASELINE_SPLIT, split_label, split_labels

__all__ = [
    "METRICS",
    "X_AXES",
    "GROUPINGS",
    "STAGES",
    "curve_points",
    "baseline_rules",
    "rate_accuracy_chart",
    "heatmap_frame",
    "heatmap_chart",
    "raw_bytes_frame",
    "raw_bytes_chart",
    "timing_frame",
    "timing_chart",
    "progress_chart",
    "with_split_names",
]

METRICS = {"ap": "AP", "ap50": "AP50", "ap75": "AP75"}
X_AXES = {"coded_bytes": "coded bytes per image (log)", "ratio": "compression ratio raw / coded (log)"}
GROUPINGS = ("split", "codec", "variant")
STAGES = ("head_s", "encode_s", "decode_s", "tail_s")
_STAGE_NAMES = {"head_s": "head", "encode_s": "encode", "decode_s": "decode", "tail_s": "tail"}


def with_split_names(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with a ``split_name`` column (the label a person reads) next to ``split``."""
    out = frame.copy()
    if "split" in out:
        out["split_name"] = [split_label(s) for s in out["split"]]
    return out


def _split_channel(channel, frame: pd.DataFrame, *, title: str = "split point", **kwargs):
    """An ordinal split axis: names in numeric order (input, unsplit, 0, 1, …)."""
    return channel("split_name:O", title=title, sort=split_labels(frame["split"]) if len(frame) else None, **kwargs)


_SPLIT_TIP = alt.Tooltip("split_name:N", title="split")


def _numbers(df: pd.DataFrame, column: str) -> np.ndarray:
    return pd.to_numeric(df[column], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def curve_points(configs: pd.DataFrame, *, x: str = "coded_bytes", group: str = "split", metric: str = "ap") -> pd.DataFrame:
    """The points of the rate–accuracy curves: split configurations with a positive,
    finite ``x`` and a finite ``metric``. ``group`` names the column colouring the
    curves; ``curve`` identifies one line (model, variant, split, codec); ``on_front``
    marks the Pareto front (the report's ``front_bytes_ap`` where present)."""
    if x not in X_AXES:
        raise ValueError(f"x must be one of {sorted(X_AXES)}, got {x!r}")
    if group not in GROUPINGS:
        raise ValueError(f"group must be one of {GROUPINGS}, got {group!r}")
    xs = _numbers(configs, x)
    ys = _numbers(configs, metric)
    keep = (configs["split"].to_numpy() != BASELINE_SPLIT) & np.isfinite(xs) & (xs > 0) & np.isfinite(ys)
    pts = configs[keep]
    columns = ["model", "variant", "split", "codec", "label", "coded_bytes", "bpp", "ratio", "ap", "ap50", "ap75", "delta_ap"]
    out = pts[[c for c in columns if c in pts.columns]].copy()
    out["on_front"] = pts["front_bytes_ap"].fillna(False).astype(bool) if "front_bytes_ap" in pts.columns else False
    out["split"] = out["split"].astype("int64")
    out = with_split_names(out)
    out["group"] = out["split_name" if group == "split" else group].astype(str)
    out["curve"] = (
        out["model"].astype(str) + " / " + out["variant"].astype(str) + " / split " + out["split_name"]
        + " / " + out["codec"].astype(str)
    )  # fmt: skip
    return out.sort_values(["curve", x]).reset_index(drop=True)


def baseline_rules(configs: pd.DataFrame, *, metric: str = "ap") -> pd.DataFrame:
    """One horizontal rule per (model, variant): the unsplit, uncoded configuration's ``metric``."""
    base = configs[(configs["split"] == BASELINE_SPLIT) & (configs["codec"] == BASELINE_CODEC)]
    values = _numbers(base, metric)
    base = base[np.isfinite(values)]
    out = pd.DataFrame(
        {
            "model": base["model"].astype(str).to_numpy(),
            "variant": base["variant"].astype(str).to_numpy(),
            "value": values[np.isfinite(values)],
        }
    )
    out["text"] = [
        f"uncompressed {m} {v}: {METRICS.get(metric, metric)} {a:.2f}" for m, v, a in zip(out["model"], out["variant"], out["value"])
    ]
    return out.drop_duplicates(["model", "variant"]).reset_index(drop=True)


def _group_sort(points: pd.DataFrame, group: str) -> list[str]:
    if group == "split":
        return split_labels(points["split"])
    return sorted(points["group"].unique())


def rate_accuracy_chart(
    points: pd.DataFrame,
    rules: pd.DataFrame,
    *,
    x: str = "coded_bytes",
    group: str = "split",
    metric: str = "ap",
    title: str = "",
) -> alt.LayerChart:
    """Accuracy against rate: a line per curve coloured by ``group``, the Pareto points
    ringed, and the uncompressed accuracy as dashed horizontal rules."""
    metric_title = f"{METRICS.get(metric, metric)} (points)"
    x_enc = alt.X(f"{x}:Q", scale=alt.Scale(type="log"), title=X_AXES[x])
    y_enc = alt.Y(f"{metric}:Q", title=metric_title, scale=alt.Scale(zero=False, padding=14))
    color = alt.Color("group:N", title=group, sort=_group_sort(points, group), scale=alt.Scale(scheme="tableau10"))
    # The other curve identity as the line's dash and the point's shape, so two curves of
    # one colour (two codecs at one split) stay apart.
    other = "codec" if group != "codec" else "split_name"
    order = split_labels(points["split"]) if other == "split_name" and len(points) else None
    dash = alt.StrokeDash(f"{other}:N", title=other.replace("_name", ""), sort=order)
    shape = alt.Shape(f"{other}:N", title=other.replace("_name", ""), sort=order)
    tooltip = [
        alt.Tooltip("model:N"),
        alt.Tooltip("variant:N"),
        _SPLIT_TIP,
        alt.Tooltip("label:N", title="setting"),
        alt.Tooltip("coded_bytes:Q", title="coded bytes", format=",.0f"),
        alt.Tooltip("bpp:Q", format=".4f"),
        alt.Tooltip("ratio:Q", format=".1f"),
        alt.Tooltip("ap:Q", title="AP", format=".2f"),
        alt.Tooltip("ap50:Q", title="AP50", format=".2f"),
        alt.Tooltip("on_front:N", title="Pareto"),
    ]
    base = alt.Chart(points)
    lines = base.mark_line(strokeWidth=1.5).encode(
        x=x_enc, y=y_enc, color=color, strokeDash=dash, detail="curve:N", order=f"{x}:Q"
    )
    dots = base.mark_point(size=55, filled=True, opacity=0.9).encode(
        x=x_enc, y=y_enc, color=color, shape=shape, tooltip=tooltip
    )
    front = (
        base.transform_filter("datum.on_front")
        .mark_point(shape="diamond", size=200, filled=False, color="black", strokeWidth=1.5)
        .encode(x=x_enc, y=y_enc, tooltip=tooltip)
    )
    layers = [lines, dots, front]
    if len(rules):
        rule_base = alt.Chart(rules)
        layers.append(
            rule_base.mark_rule(strokeDash=[6, 4], color="#555").encode(
                y=alt.Y("value:Q"), tooltip=[alt.Tooltip("text:N", title="uncompressed")]
            )
        )
        layers.append(
            rule_base.mark_text(align="left", baseline="bottom", dx=4, dy=-3, color="#555", fontSize=11).encode(
                y=alt.Y("value:Q"), x=alt.value(0), text="text:N"
            )
        )
    return alt.layer(*layers).properties(title=title, height=360).interactive()


def heatmap_frame(configs: pd.DataFrame, *, codec: str = "nncodec", metric: str = "ap") -> pd.DataFrame:
    """``metric`` by split × QP of one codec (split configurations with a QP)."""
    qp = _numbers(configs, "qp") if "qp" in configs.columns else np.full(len(configs), np.nan)
    keep = (configs["codec"] == codec).to_numpy() & (configs["split"].to_numpy() != BASELINE_SPLIT) & np.isfinite(qp)
    out = configs[keep][["model", "variant", "split", "label"]].copy()
    out["qp"] = qp[keep].astype("int64")
    out["split"] = out["split"].astype("int64")
    out["value"] = _numbers(configs[keep], metric)
    return with_split_names(out.sort_values(["model", "variant", "split", "qp"]).reset_index(drop=True))


def heatmap_chart(frame: pd.DataFrame, *, metric: str = "ap", title: str = "") -> alt.LayerChart:
    name = METRICS.get(metric, metric)
    base = alt.Chart(frame).encode(
        x=alt.X("qp:O", title="QP", axis=alt.Axis(labelAngle=0)),
        y=_split_channel(alt.Y, frame),
    )
    cells = base.mark_rect().encode(
        color=alt.Color("value:Q", title=name, scale=alt.Scale(scheme="viridis")),
        tooltip=[
            _SPLIT_TIP,
            alt.Tooltip("qp:O", title="QP"),
            alt.Tooltip("label:N", title="setting"),
            alt.Tooltip("value:Q", title=name, format=".2f"),
        ],
    )
    text = base.mark_text(fontSize=11).encode(
        text=alt.Text("value:Q", format=".1f"),
        color=alt.condition("datum.value > 50", alt.value("black"), alt.value("white")),
    )
    return alt.layer(cells, text).properties(title=title, height=alt.Step(32))


def raw_bytes_frame(configs: pd.DataFrame) -> pd.DataFrame:
    """Intermediate data size (float32 bytes of the cut tensors, mean per image) per split point."""
    splits = configs[configs["split"] != BASELINE_SPLIT]
    splits = splits.assign(raw_bytes=_numbers(splits, "raw_bytes"), split=splits["split"].astype("int64"))
    out = splits.groupby(["model", "variant", "split"], as_index=False, sort=True)["raw_bytes"].max()
    return with_split_names(out[np.isfinite(out["raw_bytes"].to_numpy(dtype=np.float64))].reset_index(drop=True))


def raw_bytes_chart(frame: pd.DataFrame, *, title: str = "") -> alt.Chart:
    many = frame["variant"].nunique() > 1
    enc = dict(
        x=_split_channel(alt.X, frame, axis=alt.Axis(labelAngle=0)),
        y=alt.Y("raw_bytes:Q", title="raw bytes per image (float32 cut tensors)"),
        tooltip=[
            alt.Tooltip("model:N"),
            alt.Tooltip("variant:N"),
            _SPLIT_TIP,
            alt.Tooltip("raw_bytes:Q", title="raw bytes", format=",.0f"),
        ],
    )
    if many:
        enc.update(color=alt.Color("variant:N"), xOffset="variant:N")
    return alt.Chart(frame).mark_bar().encode(**enc).properties(title=title, height=260)


def timing_frame(configs: pd.DataFrame) -> pd.DataFrame:
    """Mean seconds of each stage per (model, variant, split), over the configurations
    given; long form (one row per stage) with ``stage`` in pipeline order."""
    present = [s for s in STAGES if s in configs.columns]
    if configs.empty or not present:
        return pd.DataFrame(columns=["model", "variant", "split", "stage", "order", "seconds"])
    frame = configs[["model", "variant", "split", *present]].copy()
    frame["split"] = frame["split"].astype("int64")
    for s in present:
        frame[s] = _numbers(frame, s)
    means = frame.groupby(["model", "variant", "split"], as_index=False, sort=True)[present].mean()
    long = means.melt(id_vars=["model", "variant", "split"], value_vars=present, var_name="stage", value_name="seconds")
    long["order"] = long["stage"].map({s: i for i, s in enumerate(STAGES)})
    long["stage"] = long["stage"].map(_STAGE_NAMES)
    long = long[np.isfinite(long["seconds"].to_numpy(dtype=np.float64))]
    return with_split_names(long.sort_values(["model", "variant", "split", "order"]).reset_index(drop=True))


def timing_chart(frame: pd.DataFrame, *, title: str = "") -> alt.Chart:
    stages = [_STAGE_NAMES[s] for s in STAGES]
    return (
        alt.Chart(frame)
        .mark_bar()
        .encode(
            x=_split_channel(alt.X, frame, axis=alt.Axis(labelAngle=0)),
            y=alt.Y("sum(seconds):Q", title="mean seconds per image", stack="zero"),
            color=alt.Color("stage:N", sort=stages, scale=alt.Scale(domain=stages)),
            order=alt.Order("order:Q"),
            tooltip=[
                _SPLIT_TIP,
                alt.Tooltip("stage:N"),
                alt.Tooltip("seconds:Q", format=".4f"),
            ],
        )
        .properties(title=title, height=280)
    )


def progress_chart(frame: pd.DataFrame, *, states: Sequence[str] = ("ok", "failed", "remaining")) -> alt.Chart:
    """Stacked tasks per split point by state; ``frame``: model, variant, split, state, tasks."""
    colors = {"ok": "#4c9a2a", "failed": "#d62728", "remaining": "#c7c7c7"}
    present = [s for s in states if s in set(frame["state"])]
    frame = with_split_names(frame)
    return (
        alt.Chart(frame)
        .mark_bar()
        .encode(
            x=_split_channel(alt.X, frame, axis=alt.Axis(labelAngle=0)),
            y=alt.Y("sum(tasks):Q", title="tasks"),
            color=alt.Color(
                "state:N", sort=list(present), scale=alt.Scale(domain=list(present), range=[colors[s] for s in present])
            ),
            order=alt.Order("order:Q"),
            tooltip=[alt.Tooltip("model:N"), alt.Tooltip("variant:N"), _SPLIT_TIP,
                     alt.Tooltip("state:N"), alt.Tooltip("sum(tasks):Q", title="tasks")],
        )
        .properties(height=240)
    )  # fmt: skip
