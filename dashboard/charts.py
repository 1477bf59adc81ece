"""Altair charts of the dashboard: pure functions of report DataFrames, usable without Streamlit.

Each chart has a ``*_frame`` function that selects and shapes its data (tested on its
numbers) and a ``*_chart`` function that draws that frame. Frames keep the numeric
``split`` and add ``split_name`` (orchestrator.results.schema.split_label: ``input``, ``unsplit``,
node indices); charts draw the name, in the numeric order.
"""

from __future__ import annotations

from collections.abc import Sequence

import altair as alt
import numpy as np
import pandas as pd

from orchestrator.results.schema import BASELINE_CODEC, BASELINE_SPLIT, split_label, split_labels

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
    "RATE_AXES",
    "PALETTE",
    "bytes_heatmap_frame",
    "bytes_heatmap_chart",
    "device_frame",
    "compute_bandwidth_chart",
    "head_only_chart",
]

METRICS = {"ap": "AP", "ap50": "AP50", "ap75": "AP75", "miou": "mIoU"}
X_AXES = {
    "bpp": "bits per pixel (bpp, log scale)",
    "kbps": "kbit/s at the video's frame rate (log scale)",
    "kB": "coded kB per image (log scale)",
    "coded_bytes": "coded bytes per image (log scale)",
    "ratio": "compression ratio float32 / coded (log scale)",
}
RATE_AXES = ("bpp", "kbps", "kB")  # the field's rate axes: bpp for stills, kbps for video, kB for either
# Ten colours that stay apart on screen and in print (Okabe–Ito first, then darker Tableau tones).
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#B8A200", "#7f7f7f", "#8c564b", "#17becf"]
_TITLE = dict(anchor="start", fontSize=14, limit=0, offset=8)
GROUPINGS = ("split", "codec", "variant")
STAGES = ("head_s", "encode_s", "decode_s", "tail_s")
_STAGE_NAMES = {"head_s": "head", "encode_s": "encode", "decode_s": "decode", "tail_s": "tail"}


def with_split_names(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with a ``split_name`` column (the label a person reads) next to ``split``."""
    out = frame.copy()
    if "split" in out:
        out["split_name"] = [split_label(s) for s in out["split"]]
    return out


def _split_channel(channel, frame: pd.DataFrame, *, title: str = "split point", splits=None, **kwargs):
    """An ordinal split axis: names in numeric order (input, unsplit, 0, 1, …); ``splits``
    (default: the frame's) sets that order, so charts of one view list their splits alike."""
    splits = frame["split"] if splits is None else pd.Series(list(splits))
    return channel("split_name:O", title=title, sort=split_labels(splits) if len(splits) else None, **kwargs)


_SPLIT_TIP = alt.Tooltip("split_name:N", title="split")


def _numbers(df: pd.DataFrame, column: str) -> np.ndarray:
    return pd.to_numeric(df[column], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def curve_points(configs: pd.DataFrame, *, x: str = "coded_bytes", group: str = "split", metric: str = "ap") -> pd.DataFrame:
    """The points of the rate–accuracy curves: split configurations with a positive,
    finite ``x`` and a finite ``metric``. ``group`` names the column colouring the
    curves; ``curve`` identifies one line (model, variant, split, codec); ``on_front``
    marks the Pareto front (the report's ``front_bytes_ap`` where present)."""
    if x not in X_AXES or x not in configs.columns:
        raise ValueError(f"x must be one of {sorted(c for c in X_AXES if c in configs.columns)}, got {x!r}")
    if group not in GROUPINGS:
        raise ValueError(f"group must be one of {GROUPINGS}, got {group!r}")
    xs = _numbers(configs, x)
    ys = _numbers(configs, metric)
    keep = (configs["split"].to_numpy() != BASELINE_SPLIT) & np.isfinite(xs) & (xs > 0) & np.isfinite(ys)
    pts = configs[keep]
    columns = ["model", "variant", "split", "codec", "label", "coded_bytes", "kB", "bpp", "kbps", "ratio", "ap", "ap50",
               "ap75", "miou", "delta_ap", "ap_low", "ap_high", "ap50_low", "ap50_high", "miou_low", "miou_high",
               "delta_ap_low", "delta_ap_high", "delta_noise"]
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
    finite = np.isfinite(values)
    base = base[finite]
    low = _numbers(base, f"{metric}_low") if f"{metric}_low" in base else np.full(len(base), np.nan)
    high = _numbers(base, f"{metric}_high") if f"{metric}_high" in base else np.full(len(base), np.nan)
    out = pd.DataFrame(
        {
            "model": base["model"].astype(str).to_numpy(),
            "variant": base["variant"].astype(str).to_numpy(),
            "value": values[finite],
            "low": low,
            "high": high,
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
    x: str = "bpp",
    group: str = "split",
    metric: str = "ap",
    title: str = "",
) -> alt.LayerChart:
    """Accuracy against rate: a line per curve coloured by ``group`` (dash and point shape:
    the other identity), 95% intervals as vertical bars, the Pareto points ringed in black
    behind their coloured point, and the uncompressed accuracy as a dashed rule with its
    interval as a grey band."""
    metric_title = f"{METRICS.get(metric, metric)} (points; bars: 95% CI)"
    x_enc = alt.X(f"{x}:Q", scale=alt.Scale(type="log", nice=False),
                  axis=alt.Axis(format="~g", labelOverlap="greedy", titleLimit=0), title=X_AXES[x])
    y_enc = alt.Y(f"{metric}:Q", title=metric_title, scale=alt.Scale(zero=False, padding=14),
                  axis=alt.Axis(titleLimit=0))
    color = alt.Color("group:N", title=group, sort=_group_sort(points, group), scale=alt.Scale(range=PALETTE))
    # The other curve identity as the line's dash and the point's shape, so two curves of
    # one colour (two codecs at one split) stay apart.
    other = "codec" if group != "codec" else "split_name"
    order = split_labels(points["split"]) if other == "split_name" and len(points) else None
    dash = alt.StrokeDash(f"{other}:N", title=f"{other.replace('_name', '')} (dash)", sort=order)
    shape = alt.Shape(f"{other}:N", title=f"{other.replace('_name', '')} (shape)", sort=order)
    low, high = f"{metric}_low", f"{metric}_high"
    tooltip = [
        alt.Tooltip("model:N"),
        alt.Tooltip("variant:N"),
        _SPLIT_TIP,
        alt.Tooltip("codec:N"),
        alt.Tooltip("label:N", title="setting"),
        alt.Tooltip("kB:Q", title="coded kB", format=",.2f"),
        alt.Tooltip("bpp:Q", format=".4f"),
        *([alt.Tooltip("kbps:Q", format=",.1f")] if "kbps" in points else []),
        alt.Tooltip("ratio:Q", format=",.1f"),
        alt.Tooltip(f"{metric}:Q", title=METRICS.get(metric, metric), format=".2f"),
        *([alt.Tooltip(low, title="95% CI low", format=".2f"), alt.Tooltip(high, title="95% CI high", format=".2f")]
          if low in points else []),
        *([alt.Tooltip("delta_ap:Q", title="ΔAP", format="+.2f")] if "delta_ap" in points else []),
        *([alt.Tooltip("delta_noise:N", title="ΔAP within noise")] if "delta_noise" in points else []),
        alt.Tooltip("on_front:N", title="Pareto"),
    ]
    base = alt.Chart(points)
    front = (
        base.transform_filter("datum.on_front")
        .mark_point(shape="circle", size=260, filled=False, color="black", strokeWidth=2)
        .encode(x=x_enc, y=y_enc, tooltip=tooltip)
    )
    layers = [front]
    if low in points and high in points:
        layers.append(base.mark_rule(strokeWidth=1.2, opacity=0.7).encode(
            x=x_enc, y=alt.Y(f"{low}:Q"), y2=alt.Y2(f"{high}:Q"), color=color))
    lines = base.mark_line(strokeWidth=1.8).encode(
        x=x_enc, y=y_enc, color=color, strokeDash=dash, detail="curve:N", order=f"{x}:Q"
    )
    dots = base.mark_point(size=60, filled=True, opacity=1).encode(
        x=x_enc, y=y_enc, color=color, shape=shape, tooltip=tooltip
    )
    layers += [lines, dots]
    if len(rules):
        rule_base = alt.Chart(rules)
        if rules["low"].notna().any():
            layers.append(rule_base.mark_rect(color="#555", opacity=0.12).encode(y=alt.Y("low:Q"), y2=alt.Y2("high:Q")))
        layers.append(
            rule_base.mark_rule(strokeDash=[6, 4], color="#555").encode(
                y=alt.Y("value:Q"), tooltip=[alt.Tooltip("text:N", title="uncompressed")]
            )
        )
        layers.append(
            rule_base.mark_text(align="left", baseline="bottom", dx=4, dy=-3, color="#333", fontSize=12).encode(
                y=alt.Y("value:Q"), x=alt.value(0), text="text:N"
            )
        )
    return alt.layer(*layers).properties(title=alt.TitleParams(title, **_TITLE), height=420).interactive()


def _text_colours(values: np.ndarray) -> list[str]:
    """Per-cell text colour on viridis: white on the dark (purple / blue) half of the
    scale, black on the light (green / yellow) half, so every number stays readable."""
    finite = values[np.isfinite(values)]
    if not len(finite):
        return ["black"] * len(values)
    lo, hi = float(finite.min()), float(finite.max())
    t = (values - lo) / (hi - lo) if hi > lo else np.full(len(values), 0.5)
    return ["white" if np.isfinite(v) and v < 0.55 else "black" for v in t]


def heatmap_frame(configs: pd.DataFrame, *, codec: str = "nncodec", metric: str = "ap") -> pd.DataFrame:
    """``metric`` by split × QP of one codec (split configurations with a QP)."""
    qp = _numbers(configs, "qp") if "qp" in configs.columns else np.full(len(configs), np.nan)
    keep = (configs["codec"] == codec).to_numpy() & (configs["split"].to_numpy() != BASELINE_SPLIT) & np.isfinite(qp)
    out = configs[keep][["model", "variant", "split", "label"]].copy()
    out["qp"] = qp[keep].astype("int64")
    out["split"] = out["split"].astype("int64")
    out["value"] = _numbers(configs[keep], metric)
    out["text_color"] = _text_colours(out["value"].to_numpy(dtype=np.float64))
    return with_split_names(out.sort_values(["model", "variant", "split", "qp"]).reset_index(drop=True))


def _heat_layers(frame: pd.DataFrame, x, *, name: str, value_format: str, title: str, tooltip_extra=()):
    base = alt.Chart(frame).encode(x=x, y=_split_channel(alt.Y, frame))
    cells = base.mark_rect().encode(
        color=alt.Color("value:Q", title=name, scale=alt.Scale(scheme="viridis")),
        tooltip=[_SPLIT_TIP, *tooltip_extra, alt.Tooltip("label:N", title="setting"),
                 alt.Tooltip("value:Q", title=name, format=value_format)],
    )
    text = base.mark_text(fontSize=12).encode(
        text=alt.Text("value:Q", format=value_format),
        color=alt.Color("text_color:N", scale=None),
    )
    # The text's colour is a literal per cell, not a second scale on the cells' colour.
    return (alt.layer(cells, text).resolve_scale(color="independent")
            .properties(title=alt.TitleParams(title, **_TITLE), height=alt.Step(34)))


def heatmap_chart(frame: pd.DataFrame, *, metric: str = "ap", title: str = "") -> alt.LayerChart:
    name = METRICS.get(metric, metric)
    x = alt.X("qp:O", title="QP", axis=alt.Axis(labelAngle=0), sort="ascending")
    return _heat_layers(frame, x, name=name, value_format=".1f", title=title,
                        tooltip_extra=[alt.Tooltip("qp:O", title="QP")])


def bytes_heatmap_frame(configs: pd.DataFrame, *, codec: str) -> pd.DataFrame:
    """Coded kB per image by split × setting, for any codec (settings in the report's
    numeric order: QP −10 before −4, bits=2 before bits=10)."""
    keep = (configs["codec"] == codec).to_numpy() & (configs["split"].to_numpy() != BASELINE_SPLIT)
    part = configs[keep]
    out = part[["model", "variant", "split", "label"]].copy()
    out["setting"] = part["setting"].astype(str).to_numpy() if "setting" in part else out["label"]
    out["order"] = np.arange(len(out))  # the report is sorted numerically already
    out["split"] = out["split"].astype("int64")
    kb = _numbers(part, "kB") if "kB" in part else _numbers(part, "coded_bytes") / 1000.0
    out["value"] = kb
    out["text_color"] = _text_colours(out["value"].to_numpy(dtype=np.float64))
    return with_split_names(out.reset_index(drop=True))


def bytes_heatmap_chart(frame: pd.DataFrame, *, title: str = "") -> alt.LayerChart:
    settings = list(dict.fromkeys(frame.sort_values("order")["setting"]))
    x = alt.X("setting:O", title="setting", sort=settings, axis=alt.Axis(labelAngle=0, labelLimit=120))
    return _heat_layers(frame, x, name="coded kB", value_format=",.1f", title=title)


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
    return alt.Chart(frame).mark_bar().encode(**enc).properties(title=alt.TitleParams(title, **_TITLE), height=260)


def timing_frame(configs: pd.DataFrame) -> pd.DataFrame:
    """Mean seconds of each stage per (model, variant, split, codec), over the
    configurations given; long form (one row per stage) with ``stage`` in pipeline order.
    Codecs are never averaged together: NNCodec's encode and a cast's are different bars."""
    present = [s for s in STAGES if s in configs.columns]
    keys = ["model", "variant", "split", "codec"]
    if configs.empty or not present:
        return pd.DataFrame(columns=[*keys, "stage", "order", "seconds"])
    frame = configs[[*keys, *present]].copy()
    frame["split"] = frame["split"].astype("int64")
    for s in present:
        frame[s] = _numbers(frame, s)
    means = frame.groupby(keys, as_index=False, sort=True)[present].mean()
    long = means.melt(id_vars=keys, value_vars=present, var_name="stage", value_name="seconds")
    long["order"] = long["stage"].map({s: i for i, s in enumerate(STAGES)})
    long["stage"] = long["stage"].map(_STAGE_NAMES)
    long = long[np.isfinite(long["seconds"].to_numpy(dtype=np.float64))]
    return with_split_names(long.sort_values([*keys, "order"]).reset_index(drop=True))


TIMING_NOTE = (
    "What each bar measures, per image (mean over the configurations shown): head = the sweep's one shared run "
    "of the whole network that exposes every cut at once (the same at every split; not a device's cost — see "
    "'Device cost per split'); encode / decode = the codec on the cut tensors (remote inference: on the picture); "
    "tail = the server's part of the network from the decoded tensors (0 for codec none, which re-uses the "
    "full output)."
)


def timing_chart(frame: pd.DataFrame, *, title: str = "") -> alt.Chart:
    stages = [_STAGE_NAMES[s] for s in STAGES]
    return (
        alt.Chart(frame)
        .mark_bar()
        .encode(
            x=_split_channel(alt.X, frame, axis=alt.Axis(labelAngle=0)),
            xOffset=alt.XOffset("codec:N"),
            y=alt.Y("sum(seconds):Q", title="mean seconds per image", stack="zero", axis=alt.Axis(titleLimit=0)),
            color=alt.Color("stage:N", sort=stages, scale=alt.Scale(domain=stages, range=PALETTE[:4])),
            order=alt.Order("order:Q"),
            tooltip=[
                _SPLIT_TIP,
                alt.Tooltip("codec:N"),
                alt.Tooltip("stage:N"),
                alt.Tooltip("seconds:Q", format=".4f"),
            ],
        )
        .properties(title=alt.TitleParams(title, **_TITLE), height=300)
    )


def device_frame(configs: pd.DataFrame) -> pd.DataFrame:
    """One point per split configuration with the device's cost of its split (head-only
    seconds, head MACs, head parameters) and what it sends (kB): the compute-vs-bandwidth
    trade-off. Empty when the store has no device measurements."""
    if "head_only_s" not in configs:
        return pd.DataFrame(columns=["model", "variant", "split", "codec", "label", "kB", "head_only_s"])
    keep = (configs["split"].to_numpy() >= 0) & np.isfinite(_numbers(configs, "head_only_s"))
    part = configs[keep]
    columns = ["model", "variant", "split", "codec", "label", "kB", "coded_bytes", "bpp", "head_only_s", "head_macs",
               "head_params", "tail_s", "ap"]
    out = part[[c for c in columns if c in part]].copy()
    out["split"] = out["split"].astype("int64")
    out["head_ms"] = 1000.0 * _numbers(out, "head_only_s")
    if "head_macs" in out:
        out["head_gmacs"] = _numbers(out, "head_macs") / 1e9
    return with_split_names(out.reset_index(drop=True))


def compute_bandwidth_chart(frame: pd.DataFrame, *, title: str = "") -> alt.Chart:
    """Head-only milliseconds on the device against coded kB sent, one point per split
    and setting: colour = split, shape = codec."""
    return (
        alt.Chart(frame)
        .mark_point(filled=True, size=70, opacity=0.9)
        .encode(
            x=alt.X("kB:Q", scale=alt.Scale(type="log", nice=False), title="coded kB per image sent (log scale)",
                    axis=alt.Axis(format="~g", labelOverlap="greedy", titleLimit=0)),
            y=alt.Y("head_ms:Q", title="head-only latency on the device (ms, median)", axis=alt.Axis(titleLimit=0)),
            color=alt.Color("split_name:N", title="split", sort=split_labels(frame["split"]) if len(frame) else None,
                            scale=alt.Scale(range=PALETTE)),
            shape=alt.Shape("codec:N", title="codec (shape)"),
            tooltip=[_SPLIT_TIP, alt.Tooltip("codec:N"), alt.Tooltip("label:N", title="setting"),
                     alt.Tooltip("kB:Q", title="coded kB", format=",.2f"),
                     alt.Tooltip("head_ms:Q", title="head ms", format=",.1f"),
                     *([alt.Tooltip("head_gmacs:Q", title="head GMACs", format=",.2f")] if "head_gmacs" in frame else []),
                     *([alt.Tooltip("ap:Q", title="AP", format=".2f")] if "ap" in frame else [])],
        )
        .properties(title=alt.TitleParams(title, **_TITLE), height=340)
        .interactive()
    )


def head_only_chart(frame: pd.DataFrame, *, title: str = "", splits=None) -> alt.Chart:
    """Head-only milliseconds per split (bars; one value per split: the codec does not run on it);
    ``splits``: the view's splits, for the same axis order as its other charts."""
    per_split = frame.drop_duplicates(["model", "variant", "split"])
    return (
        alt.Chart(per_split)
        .mark_bar(color=PALETTE[0])
        .encode(
            x=_split_channel(alt.X, per_split, splits=splits, axis=alt.Axis(labelAngle=0)),
            y=alt.Y("head_ms:Q", title="head-only ms per image (device)", axis=alt.Axis(titleLimit=0)),
            tooltip=[_SPLIT_TIP, alt.Tooltip("head_ms:Q", title="head ms", format=",.1f"),
                     *([alt.Tooltip("head_gmacs:Q", title="head GMACs", format=",.2f")] if "head_gmacs" in per_split else []),
                     *([alt.Tooltip("head_params:Q", title="head parameters", format=",.0f")]
                       if "head_params" in per_split else [])],
        )
        .properties(title=alt.TitleParams(title, **_TITLE), height=260)
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
            y=alt.Y("sum(tasks):Q", title="tasks", axis=alt.Axis(titleLimit=0)),
            color=alt.Color(
                "state:N", sort=list(present), scale=alt.Scale(domain=list(present), range=[colors[s] for s in present])
            ),
            order=alt.Order("order:Q"),
            tooltip=[alt.Tooltip("model:N"), alt.Tooltip("variant:N"), _SPLIT_TIP,
                     alt.Tooltip("state:N"), alt.Tooltip("sum(tasks):Q", title="tasks")],
        )
        .properties(height=240)
    )  # fmt: skip
