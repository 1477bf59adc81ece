"""The filtered configuration table, and its download as CSV (the columns of `splitsweep report --csv`)."""

from __future__ import annotations

import streamlit as st

from orchestrator.report import mpeg_columns

from . import ViewContext, no_configs, split_names

__all__ = ["TITLE", "TABLE_COLUMNS", "csv_bytes", "render"]

TITLE = "Table"

TABLE_COLUMNS = [
    "model", "variant", "split", "codec", "label", "qp", "n_images", "n_failed", "ap", "ap50", "ap75",
    "ap_uncompressed", "delta_ap", "raw_bytes", "coded_bytes", "side_bytes", "bpp", "ratio", "saving",
    "feature_psnr", "head_s", "encode_s", "decode_s", "tail_s", "head_macs", "tail_macs", "front_bytes_ap",
]  # fmt: skip


def csv_bytes(shown) -> bytes:
    """The filtered configurations as `splitsweep report --csv` writes them."""
    return mpeg_columns(shown).to_csv(index=False).encode()


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
            "ap": st.column_config.NumberColumn("AP", format="%.2f"),
            "ap50": st.column_config.NumberColumn("AP50", format="%.2f"),
            "ap75": st.column_config.NumberColumn("AP75", format="%.2f"),
            "saving": st.column_config.NumberColumn("saving", format="percent"),
        },
    )
    st.download_button(
        "Download these configurations as CSV",
        csv_bytes(shown),
        file_name="splitsweep-configs.csv",
        mime="text/csv",
        key="download_csv",
    )
