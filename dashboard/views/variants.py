"""Model variants: size to store and to transmit, parameters, MACs, head / tail MACs per split, and their uncompressed AP against fp32."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from orchestrator.results.schema import BASELINE_CODEC, BASELINE_SPLIT, SPLIT_TABLE

from ..data import Filters, VariantTables, apply_filters, load_variants
from . import ViewContext, show_notes

__all__ = ["TITLE", "REFERENCE_VARIANT", "variant_frame", "split_macs_frame", "render"]

TITLE = "Variants"
REFERENCE_VARIANT = "fp32"

_SIZE_COLUMNS = ["family", "settings", "file_bytes", "transmission_bytes", "transmission", "params", "nonzero_params",
                 "macs", "build_s", "notes", "error"]  # fmt: skip
# What a reader compares first, left of the wide size and count columns.
_LEADING = ["model", "variant", "family", "ap", "ap50", "ap_change", "file_bytes", "size_change", "transmission_bytes",
            "params", "nonzero_params", "macs"]  # fmt: skip


def variant_frame(configs: pd.DataFrame | None, variants: pd.DataFrame | None) -> pd.DataFrame:
    """One row per (model, variant): the variants table's sizes and counts (where it
    exists), the AP / AP50 of the variant's unsplit uncoded configuration, and the
    change against the same model's fp32: ``ap_change`` in AP points, ``size_change``
    as a fraction of fp32's file size."""
    keys = ["model", "variant"]
    parts = []
    if variants is not None and not variants.empty:
        parts.append(variants[keys + [c for c in _SIZE_COLUMNS if c in variants.columns]].drop_duplicates(keys))
    if configs is not None:
        base = configs[(configs["split"] == BASELINE_SPLIT) & (configs["codec"] == BASELINE_CODEC)][keys + ["ap", "ap50"]]
        parts.append(base.drop_duplicates(keys))
    if not parts:
        return pd.DataFrame(columns=keys)
    frame = parts[0]
    for part in parts[1:]:
        frame = frame.merge(part, on=keys, how="outer")
    for column in ("ap", "ap50", "file_bytes"):
        if column not in frame.columns:
            frame[column] = np.nan
    ref = frame[frame["variant"] == REFERENCE_VARIANT].set_index("model")
    ref_ap = frame["model"].map(ref["ap"]).astype("float64")
    ref_size = frame["model"].map(ref["file_bytes"]).astype("float64")
    frame["ap_change"] = frame["ap"].astype("float64") - ref_ap
    frame["size_change"] = frame["file_bytes"].astype("float64") / ref_size - 1.0
    frame["_ref"] = frame["variant"] != REFERENCE_VARIANT  # fp32 first in each model
    frame = frame.sort_values(["model", "_ref", "variant"]).drop(columns="_ref").reset_index(drop=True)
    first = [c for c in _LEADING if c in frame.columns]
    return frame[first + [c for c in frame.columns if c not in first]]


def split_macs_frame(splits: pd.DataFrame | None, filters: Filters) -> pd.DataFrame | None:
    """Head / tail MACs per split point of each variant, with the head's share."""
    if splits is None or splits.empty:
        return None
    frame = apply_filters(splits.astype({"split": "int64"}), filters).copy()
    head = pd.to_numeric(frame["head_macs"], errors="coerce")
    tail = pd.to_numeric(frame["tail_macs"], errors="coerce")
    frame["head_share"] = head / (head + tail)
    return frame.sort_values(["model", "variant", "split"]).reset_index(drop=True)


def render(ctx: ViewContext) -> None:
    tables: VariantTables = load_variants(ctx.location, ctx.version)
    show_notes(tables.notes)
    filters = Filters(models=ctx.filters.models, variants=ctx.filters.variants)
    frame = apply_filters(variant_frame(ctx.configs, tables.variants), filters)
    if frame.empty:
        st.info("No variant to show (no variants table and no unsplit configuration in the report).")
        return
    st.caption(
        "Sizes in bytes; AP / AP50 of the variant's unsplit, uncoded configuration; ap_change in AP points and "
        f"size_change as a fraction, both against {REFERENCE_VARIANT} of the same model."
    )
    st.dataframe(
        frame,
        hide_index=True,
        width="stretch",
        key="variant_table",
        column_config={
            "ap": st.column_config.NumberColumn("AP", format="%.2f"),
            "ap50": st.column_config.NumberColumn("AP50", format="%.2f"),
            "ap_change": st.column_config.NumberColumn("ΔAP vs fp32", format="%+.2f"),
            "size_change": st.column_config.NumberColumn("size vs fp32", format="percent"),
        },
    )
    macs = split_macs_frame(tables.splits, ctx.filters)
    st.subheader("Head / tail MACs per split point")
    if macs is None:
        st.info(f"No splits table ({SPLIT_TABLE}): head / tail MACs unknown.")
    else:
        st.dataframe(macs, hide_index=True, width="stretch", key="split_macs_table")
