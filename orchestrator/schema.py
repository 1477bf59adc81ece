"""The results store's layout and the Arrow schema of task rows: the contract between
the sweep, the report and the dashboard (docs/ARCHITECTURE.md has the table)."""

from __future__ import annotations

import pyarrow as pa

__all__ = [
    "SCHEMA_VERSION",
    "ROW_SCHEMA",
    "DETECTION_TYPE",
    "CONFIG_KEY",
    "ROWS_DIR",
    "REPORT_DIR",
    "META_FILE",
    "SPEC_FILE",
    "GROUND_TRUTH_FILE",
    "VARIANTS_DIR",
    "REMOTE_SPLIT",
    "BASELINE_SPLIT",
    "SPLIT_LABELS",
    "split_label",
    "split_labels",
]

# Bump when a column changes meaning or type; part of every task id, and a results
# directory written under another version is refused rather than mixed.
# 2: folder image ids from the file's relative path (not its position), image_hash column.
SCHEMA_VERSION = 2

# Results directory layout (relative to the sweep's output location).
META_FILE = "meta.json"  # {"schema_version", "sweep", "created_at"}
SPEC_FILE = "spec.yaml"  # the spec of the latest run; older ones under specs/
GROUND_TRUTH_FILE = "ground_truth.json"  # COCO dict of the images in the sweep
ROWS_DIR = "rows"  # task rows, part-<run>-<seq>.parquet
REPORT_DIR = "report"  # per-configuration report parquet files
VARIANTS_DIR = "variants"  # built model variants and their cost table

DETECTION_TYPE = pa.list_(
    pa.struct(
        [
            pa.field("category_id", pa.int32()),
            pa.field("bbox", pa.list_(pa.float32())),
            pa.field("score", pa.float32()),
        ]
    )
)

ROW_SCHEMA = pa.schema(
    [
        pa.field("task_id", pa.string(), nullable=False),
        pa.field("sweep", pa.string()),
        pa.field("model", pa.string()),
        pa.field("variant", pa.string()),
        pa.field("split", pa.int32()),
        pa.field("codec", pa.string()),
        pa.field("codec_params", pa.string()),
        pa.field("qp", pa.int32()),
        pa.field("image_id", pa.int64()),
        pa.field("image_hash", pa.string()),
        pa.field("raw_bytes", pa.int64()),
        pa.field("float32_bytes", pa.int64()),
        pa.field("coded_bytes", pa.int64()),
        pa.field("side_bytes", pa.int64()),
        pa.field("feature_mse", pa.float64()),
        pa.field("feature_psnr", pa.float64()),
        pa.field("head_s", pa.float64()),
        pa.field("encode_s", pa.float64()),
        pa.field("decode_s", pa.float64()),
        pa.field("tail_s", pa.float64()),
        pa.field("detections", DETECTION_TYPE),
        pa.field("image_width", pa.int32()),
        pa.field("image_height", pa.int32()),
        pa.field("status", pa.string()),
        pa.field("error", pa.string()),
        pa.field("worker", pa.string()),
        pa.field("finished_at", pa.timestamp("ms", tz="UTC")),
    ],
    metadata={"splitsweep.schema_version": str(SCHEMA_VERSION)},
)

# The two splits that are not a node index. Stored as numbers (sortable, int32 like the
# others); shown to a person by split_label, and sorted numerically: input, unsplit, 0, 1, …
REMOTE_SPLIT = -2  # remote inference (tasks.remote.INPUT_SPLIT): the picture coded, the whole model on the server
BASELINE_SPLIT = -1  # unsplit: the whole model on the uncoded picture
SPLIT_LABELS = {REMOTE_SPLIT: "input", BASELINE_SPLIT: "unsplit"}


def split_label(split: object) -> str:
    """How a split reads wherever a person sees it (CLI tables, report, dashboard):
    ``input`` for remote inference (a spec's ``splits: [input, …]``), ``unsplit`` for the
    whole model on the uncoded image, else the node index. Parquet and CSV keep the number."""
    try:
        number = int(split)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return str(split)
    if number != split and not isinstance(split, str):  # 3.5 is not a split
        return str(split)
    return SPLIT_LABELS.get(number, str(number))


def split_labels(splits) -> list[str]:
    """The labels of these splits in display order (numeric: input, unsplit, then node indices)."""
    return [split_label(s) for s in sorted({int(s) for s in splits})]


# Everything but the image: one point on a rate–accuracy curve.
CONFIG_KEY = ("model", "variant", "split", "codec", "codec_params")
