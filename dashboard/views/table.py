"""The filtered configuration table, and its download as CSV (the columns of `splitsweep report --csv`)."""

from __future__ import annotations

import streamlit as st

from orchestrator.reporting.report import CSV_FLOAT_FORMAT, mpeg_columns

from . import ViewContext, no_configs, split_names
from .tradeoffs import NUMBER_FORMATS

__all__ = ["TITLE", "TABLE_COLUMNS", "csv_bytes", "render"]

TITLE = "Table"

TABLE_COLUMNS = [
    "model", "variant", "split", "codec", "label", "qp", "n_images", "n_failed", "ap", "ap_low", "ap_high", "ap50",
    "ap75", "miou", "ap_uncompressed", "delta_ap", "delta_ap_low", "delta_ap_high", "coded_bytes", "kB", "bpp", "kbps", "ratio",
    "saving", "raw_bytes", "side_bytes", "feature_psnr", "head_only_s", "head_macs", "head_params", "head_s",
    "encode_s", "decode_s", "tail_s", "tail_macs", "front_bytes_ap",
]  # fmt: skip


def csv_bytes(shown) -> bytes:
    """The filtered configurations as `splitsweep report --csv` writes them."""
    return mpeg_columns(shown).to_csv(index=False, float_format=CSV_FLOAT_FORMAT).encode()


def render(ctx: ViewContext) -> None:
    if no_configs(ctx):
        return
    shown = ctx.shown
    st.caption(f"{len(shown)} of {len(ctx.configs)} configurations. AP columns in AP points (0–100); bytes per image.")
    st.dataframe(
        split_names(shown[[c for c in TABLE_COLUMNS if c in shown.columns]]),
        hide_index=True,
        width="stretch",
        key="config_table",
        column_config={
            **NUMBER_FORMATS,
            "ap50": st.column_config.NumberColumn("AP50", format="%.2f"),
            "ap75": st.column_config.NumberColumn("AP75", format="%.2f"),
            "miou": st.column_config.NumberColumn("mIoU", format="%.2f"),
            # A lossless "none" saves exactly nothing: shown as 0.0%, never -0.0%.
            "saving": st.column_config.NumberColumn("saving", format="percent"),
            "raw_bytes": st.column_config.NumberColumn("raw bytes", format="localized"),
            "side_bytes": st.column_config.NumberColumn("side bytes", format="localized"),
            "feature_psnr": st.column_config.NumberColumn("PSNR dB", format="%.1f"),
            "head_only_s": st.column_config.NumberColumn("head-only s", format="%.4f"),
            "head_macs": st.column_config.NumberColumn("head MACs", format="compact"),
            "tail_macs": st.column_config.NumberColumn("tail MACs", format="compact"),
            "head_params": st.column_config.NumberColumn("head params", format="compact"),
            **{c: st.column_config.NumberColumn(c, format="%.4f") for c in ("head_s", "encode_s", "decode_s", "tail_s")},
        },
    )
    st.download_button(
        "Download these configurations as CSV",
        csv_bytes(shown),
        file_name="splitsweep-configs.csv",
        mime="text/csv",
        key="download_csv",
    )
