"""Paper output of a report (``splitsweep report RESULTS --figures DIR``): rate–accuracy figures per model and the BD table as LaTeX and Markdown.

One style for every figure: accuracy (points) against bpp for stills or kbps for video
(the frame rate from the video), log rate axis with plain-number ticks, 95% bootstrap
intervals as error bars, the uncompressed model as a dashed line with its interval as a
band, remote inference (the image coded, the whole model on the server) in black. Each
model's figure is written as PDF, SVG and PNG; nothing else is in the files (no
timestamps), so a re-run on the same report writes the same PDF/SVG.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from orchestrator.results.schema import BASELINE_SPLIT, REMOTE_SPLIT, split_label

__all__ = ["FIGURE_FORMATS", "write_figures", "bd_latex", "bd_markdown", "rate_figure"]

FIGURE_FORMATS = ("pdf", "svg", "png")
METRIC_NAMES = {"ap": "AP", "ap50": "AP50", "ap75": "AP75", "miou": "mIoU"}
RATE_NAMES = {"bpp": "bits per pixel, bpp", "kbps": "kbit/s at the video's frame rate", "kB": "kB per image"}
# Ten colours a reader tells apart in print and on screen (Okabe–Ito, then Tableau's darker tones).
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#7f7f7f", "#8c564b", "#17becf")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h")


def _curve_name(row: pd.Series, variants: int) -> str:
    split = int(row["split"])
    if split == REMOTE_SPLIT:
        name = f"remote inference ({row['codec']})"
    else:
        name = f"split {split_label(split)}, {row['codec']}"
    return f"{row['variant']}: {name}" if variants > 1 else name


def rate_figure(table: pd.DataFrame, model: str, *, rate: str = "bpp", metric: str = "ap"):
    """The matplotlib figure of one model's curves (``table``: the report with ``rate``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator

    rows = table[table["model"] == model]
    points = rows[(rows["split"] != BASELINE_SPLIT) & np.isfinite(pd.to_numeric(rows[rate], errors="coerce"))
                  & (pd.to_numeric(rows[rate], errors="coerce") > 0) & rows[metric].notna()]
    fig, ax = plt.subplots(figsize=(6.4, 4.4), layout="constrained")
    variants = rows["variant"].nunique()
    low, high = f"{metric}_low", f"{metric}_high"
    for n, ((_variant, split, _codec), curve) in enumerate(points.groupby(["variant", "split", "codec"], sort=True)):
        curve = curve.sort_values(rate)
        x = curve[rate].to_numpy(float)
        y = curve[metric].to_numpy(float)
        remote = int(split) == REMOTE_SPLIT
        color = "black" if remote else PALETTE[n % len(PALETTE)]
        yerr = None
        if low in curve and high in curve:
            yerr = np.vstack([np.clip(y - curve[low].to_numpy(float), 0, None),
                              np.clip(curve[high].to_numpy(float) - y, 0, None)])
            yerr = np.nan_to_num(yerr)
        ax.errorbar(x, y, yerr=yerr, color=color, marker=MARKERS[n % len(MARKERS)], markersize=4.5,
                    linewidth=1.6 if remote else 1.2, linestyle="-" if remote else ("-", "--", "-.", ":")[n % 4],
                    capsize=2, elinewidth=0.8, label=_curve_name(curve.iloc[0], variants))
    base = rows[(rows["split"] == BASELINE_SPLIT) & (rows["codec"] == "none")]
    for _, b in base.iterrows():
        if pd.isna(b[metric]):
            continue
        label = "uncompressed" + (f" ({b['variant']})" if variants > 1 else "") + f": {b[metric]:.1f}"
        ax.axhline(b[metric], color="#444444", linestyle=(0, (5, 3)), linewidth=1.0, label=label)
        if low in b and pd.notna(b[low]) and pd.notna(b[high]) and b[high] > b[low]:
            ax.axhspan(b[low], b[high], color="#444444", alpha=0.10, linewidth=0)
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_minor_locator(LogLocator(base=10, subs="auto"))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: _plain(v)))
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda _v, _pos: ""))
    ax.set_xlabel(RATE_NAMES.get(rate, rate) + " (log scale)")
    ax.set_ylabel(f"{METRIC_NAMES.get(metric, metric)} (points, 95% CI)")
    ax.set_title(f"{model}: {METRIC_NAMES.get(metric, metric)} against rate")
    ax.grid(True, which="major", linewidth=0.4, alpha=0.5)
    ax.legend(fontsize=7.5, loc="lower right", frameon=True, framealpha=0.9)
    return fig


def _plain(value: float) -> str:
    """A tick as a person writes it: 0.02, 0.5, 3, 1,000 (no 10^x, no trailing zeros)."""
    if value <= 0 or not math.isfinite(value):
        return ""
    if value >= 1:
        return f"{value:,.0f}"
    digits = max(0, -int(math.floor(math.log10(value))))
    return f"{value:.{digits}f}"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "model"


def write_figures(table: pd.DataFrame, bd: pd.DataFrame, directory: str | Path, *, rate: str = "bpp",
                  metric: str = "ap", formats: Sequence[str] = FIGURE_FORMATS) -> list[Path]:
    """Write ``rate-accuracy-<model>.{pdf,svg,png}`` per model and ``bd.tex`` / ``bd.md``;
    the paths written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    style = {"font.size": 9, "axes.titlesize": 10, "svg.hashsalt": "splitsweep", "pdf.fonttype": 42}
    with plt.rc_context(style):
        for model in sorted(table["model"].unique()):
            fig = rate_figure(table, model, rate=rate, metric=metric)
            for fmt in formats:
                path = out / f"rate-accuracy-{_slug(model)}.{fmt}"
                metadata = {"CreationDate": None} if fmt == "pdf" else ({"Date": None} if fmt == "svg" else None)
                fig.savefig(path, dpi=200, metadata=metadata)
                written.append(path)
            plt.close(fig)
    for name, text in (("bd.tex", bd_latex(bd, metric=metric)), ("bd.md", bd_markdown(bd, metric=metric))):
        path = out / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def _bd_rows(bd: pd.DataFrame, metric: str) -> tuple[list[str], list[list[str]]]:
    heads = ["model", "variant", "split", "codec", "points", "BD-rate (%)", f"BD-{METRIC_NAMES.get(metric, metric)}"]
    rows = []
    for _, r in bd.iterrows():
        rows.append([
            str(r["model"]), str(r["variant"]), split_label(r["split"]), str(r["codec"]), f"{int(r['points'])}",
            "–" if pd.isna(r["bd_rate"]) else f"{r['bd_rate']:+.2f}", "–" if pd.isna(r["bd_ap"]) else f"{r['bd_ap']:+.2f}",
        ])
    return heads, rows


def _anchor_note(bd: pd.DataFrame) -> str:
    if bd.empty:
        return "No BD-rates (nothing to compare)."
    anchor = bd["anchor"].iloc[0]
    remote = int(bd["anchor_split"].iloc[0]) == REMOTE_SPLIT
    against = f"remote inference with {anchor}" if remote else f"the {anchor} curve of each split"
    return f"BD-rate and BD-metric against {against}; negative BD-rate: fewer bits for the same accuracy."


def bd_markdown(bd: pd.DataFrame, *, metric: str = "ap") -> str:
    """The BD table as a GitHub-flavoured Markdown table, numbers right-aligned."""
    heads, rows = _bd_rows(bd, metric)
    lines = [_anchor_note(bd), "", "| " + " | ".join(heads) + " |",
             "|" + "|".join(["---"] * 4 + ["---:"] * 3) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _tex(text: str) -> str:
    return (text.replace("\\", r"\textbackslash{}").replace("&", r"\&").replace("%", r"\%").replace("_", r"\_")
            .replace("#", r"\#").replace("–", "--"))


def _tex_number(cell: str) -> str:
    return "--" if cell == "–" else cell.replace("+", "$+$").replace("-", "$-$")


def bd_latex(bd: pd.DataFrame, *, metric: str = "ap") -> str:
    """The BD table as a LaTeX ``tabular`` (booktabs rules), with its anchor as a comment."""
    heads, rows = _bd_rows(bd, metric)
    lines = [f"% {_anchor_note(bd)}", "% needs \\usepackage{booktabs}", r"\begin{tabular}{llllrrr}", r"\toprule",
             " & ".join(_tex(h) for h in heads) + r" \\", r"\midrule"]
    lines += [" & ".join(_tex_number(c) if i >= 5 else _tex(c) for i, c in enumerate(r)) + r" \\" for r in rows]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"
