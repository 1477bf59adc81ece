"""The results store's layout, its shared constants and the label of a configuration: the
contract between the sweep, status, the report and the dashboard (docs/ARCHITECTURE.md)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pyarrow as pa

from tasks.errors import SplitsweepError
from tasks.rows import INPUT_SPLIT, NO_SPLIT

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
    "PLAN_FILE",
    "PLAN_DIGEST_KEY",
    "SEARCH_FILE",
    "VARIANT_TABLE",
    "SPLIT_TABLE",
    "DEVICE_TABLE",
    "REPORT_FILE",
    "REMOTE_SPLIT",
    "BASELINE_SPLIT",
    "BASELINE_CODEC",
    "SPLIT_LABELS",
    "split_label",
    "split_labels",
    "codec_params_dict",
    "codec_label",
    "setting_label",
    "codec_sort_key",
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
PLAN_FILE = "plan.parquet"  # every task of the latest run's plan (orchestrator.results.planfile)
PLAN_DIGEST_KEY = "splitsweep.plan_digest"  # plan.parquet footer: the digest of the plan it holds
SEARCH_FILE = "search.json"  # the adaptive search's summary (orchestrator.planning.search), rewritten each round
VARIANT_TABLE = f"{VARIANTS_DIR}/variants.parquet"  # one row per built variant: sizes, MACs, build time
SPLIT_TABLE = f"{VARIANTS_DIR}/splits.parquet"  # fp32 split → variant node, head / tail MACs
DEVICE_TABLE = f"{VARIANTS_DIR}/device.parquet"  # head-only latency and head parameters per split (devicecost)
REPORT_FILE = f"{REPORT_DIR}/configs.parquet"  # the per-configuration report (orchestrator.reporting.report)

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
REMOTE_SPLIT = INPUT_SPLIT  # -2, remote inference: the picture coded, the whole model on the server
BASELINE_SPLIT = NO_SPLIT  # -1, unsplit: the whole model on the uncoded picture
BASELINE_CODEC = "none"  # the baseline's codec: nothing coded
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


# -- the label of a configuration's coding ------------------------------------------------


def codec_params_dict(codec_params: str | Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A row's ``codec_params`` (canonical JSON) as a dict; None where it is not a JSON object."""
    if isinstance(codec_params, Mapping):
        return dict(codec_params)
    try:
        params = json.loads(codec_params) if codec_params else {}
    except (TypeError, ValueError):
        return None
    return params if isinstance(params, dict) else None


def codec_label(codec: str, codec_params: str | Mapping[str, Any] | None) -> str:
    """THE label of a codec setting wherever a person reads it (plan, status, report,
    dashboard): the codec registry's (``nncodec qp=-18``, ``uniform bits=4``); a codec this
    installation does not know (a plug-in not installed here) reads ``codec k=v …``."""
    from tasks import codecs

    params = codec_params_dict(codec_params)
    if params is None:
        return f"{codec} {codec_params}".strip()
    try:
        return codecs.label(codecs.setting(codec, params))
    except SplitsweepError:
        return " ".join([str(codec), *(f"{k}={v}" for k, v in sorted(params.items()))])


def setting_label(codec: str, codec_params: str | Mapping[str, Any] | None) -> str:
    """``qp=-18``: :func:`codec_label` without the codec's name (the report's ``setting`` column)."""
    return codec_label(codec, codec_params).removeprefix(str(codec)).strip()


def codec_sort_key(codec: str, codec_params: str | Mapping[str, Any] | None) -> tuple:
    """Orders codec settings by codec, then by their values as numbers (QP −26 before −10,
    bits 4 before 16), whatever the label's text order."""
    params = codec_params_dict(codec_params)
    if params is None:
        return (str(codec), 1, str(codec_params))
    values = tuple(
        (k, 0, float(v), "") if isinstance(v, (int, float)) else (k, 1, 0.0, str(v)) for k, v in sorted(params.items())
    )
    return (str(codec), 0, values)
