"""The per-configuration report on synthetic results stores: AP, incremental re-scoring, re-runs, damage, CSV."""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import warnings
from dataclasses import replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from orchestrator.commands import report as report_command
from orchestrator.reporting.report import REPORT_COLUMNS, ReportWarning, build_report, load_report
from orchestrator.results.reading import DamagedPartWarning, open_results
from orchestrator.results.schema import META_FILE, REPORT_DIR, ROWS_DIR, SCHEMA_VERSION
from tasks.errors import ResultsError
from tasks.rows import Detections
from tests.fixtures_results import (
    HEIGHT,
    KNOWN_AP,
    WIDTH,
    SynthConfig,
    config_rows,
    damage,
    write_part,
    write_store,
)

BASE = SynthConfig()
NN = dict(split=3, codec="nncodec", raw_bytes=4000, feature_psnr=30.0)
CONFIGS = [
    BASE,
    SynthConfig(params={"qp": -8}, detections="exact", coded_bytes=1000, **NN),
    SynthConfig(params={"qp": -4}, detections="drop_half", coded_bytes=500, low_score_extras=True, **NN),
    SynthConfig(params={"qp": 0}, detections="shift", coded_bytes=250, **NN),
    SynthConfig(params={"qp": 4}, detections="none", coded_bytes=100, **NN),
]


def _pycocotools_ap(gt: dict, table: pa.Table) -> tuple[float, float, float]:
    """AP of the rows' detections the textbook way: records → loadRes → COCOeval (in points)."""
    records = []
    for image_id, dets in zip(table.column("image_id").to_pylist(), table.column("detections").to_pylist()):
        records += Detections.from_records(dets).to_coco(image_id)
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = copy.deepcopy(gt)
        coco.createIndex()
        evaluator = COCOeval(coco, coco.loadRes(records), "bbox")
        evaluator.params.imgIds = sorted(table.column("image_id").to_pylist())
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return tuple(100 * float(v) for v in evaluator.stats[:3])


def _row(table, **where):
    mask = np.ones(len(table), bool)
    for key, value in where.items():
        mask &= (table[key] == value).to_numpy()
    assert mask.sum() == 1, where
    return table[mask].iloc[0]


def test_ap_equals_pycocotools_and_the_constructed_values(tmp_path):
    store = write_store(tmp_path / "r", CONFIGS, n_images=6, rows_per_part=7)
    result = build_report(store.root)
    table = result.table
    assert result.rescored == len(CONFIGS) and result.configs == len(CONFIGS)
    assert list(table.columns) == list(REPORT_COLUMNS)
    rows = pq.read_table(store.root / ROWS_DIR)
    for config in CONFIGS:
        row = _row(table, split=config.split, codec=config.codec, codec_params=config.codec_params)
        expected = KNOWN_AP[config.detections]
        assert (row["ap"], row["ap50"], row["ap75"]) == pytest.approx(expected, abs=1e-9)
        if config.detections != "none":  # loadRes cannot take an empty result list
            mine = rows.filter(
                pc.and_(pc.equal(rows["codec_params"], config.codec_params), pc.equal(rows["split"], config.split))
            )
            assert (row["ap"], row["ap50"], row["ap75"]) == pytest.approx(_pycocotools_ap(store.ground_truth, mine))
        assert row["n_images"] == row["n_scored"] == 6 and row["n_failed"] == 0
    # delta AP against the uncompressed baseline (AP 100) of the same model and variant
    shift = _row(table, codec_params='{"qp":0}')
    assert shift["ap_uncompressed"] == pytest.approx(100.0)
    assert shift["delta_ap"] == pytest.approx(30.0 - 100.0)
    assert _row(table, split=-1)["delta_ap"] == 0.0


def test_scoring_in_worker_processes_gives_the_same_table(tmp_path):
    store = write_store(tmp_path / "r", CONFIGS, n_images=4)
    serial = build_report(store.root, save=False).table
    parallel = build_report(store.root, save=False, workers=2)
    assert parallel.rescored == len(CONFIGS)
    assert parallel.table["ap"].tolist() == serial["ap"].tolist()
    assert parallel.table["ap75"].tolist() == serial["ap75"].tolist()


def test_table_is_sorted_and_settings_in_numeric_order(tmp_path):
    configs = [BASE] + [
        SynthConfig(split=3, codec="uniform", params={"bits": b}, raw_bytes=4000, coded_bytes=40 * b)
        for b in (10, 8, 4)
    ] + [SynthConfig(split=1, codec="nncodec", params={"qp": q}, raw_bytes=4000, coded_bytes=100) for q in (4, -8)]
    store = write_store(tmp_path / "r", configs, n_images=2)
    table = build_report(store.root).table
    assert table["setting"].tolist() == ["", "qp=-8", "qp=4", "bits=4", "bits=8", "bits=10"]


def test_bpp_ratio_and_saving_arithmetic(tmp_path):
    config = SynthConfig(split=2, codec="uniform", params={"bits": 8}, raw_bytes=4000, coded_bytes=1000, side_bytes=12)
    store = write_store(tmp_path / "r", [BASE], n_images=4)
    rows = config_rows(config, store.image_ids)
    # Per-image sizes and coded bytes differ: bpp is the mean of per-image bpp.
    coded = [1000, 2000, 3000, 6000]
    widths, heights = [640, 320, 640, 100], [480, 240, 480, 100]
    rows = rows.set_column(rows.schema.get_field_index("coded_bytes"), "coded_bytes", pa.array(coded, pa.int64()))
    rows = rows.set_column(rows.schema.get_field_index("image_width"), "image_width", pa.array(widths, pa.int32()))
    rows = rows.set_column(rows.schema.get_field_index("image_height"), "image_height", pa.array(heights, pa.int32()))
    write_part(store.root, rows, "part-r1-00000.parquet")
    row = _row(build_report(store.root).table, codec="uniform")
    assert row["coded_bytes"] == 3000.0 and row["raw_bytes"] == 4000.0 and row["side_bytes"] == 12.0
    assert row["bpp"] == pytest.approx(np.mean([8 * c / (w * h) for c, w, h in zip(coded, widths, heights)]))
    assert row["ratio"] == pytest.approx(4000 / 3000)
    assert row["saving"] == pytest.approx(1 - 3000 / 4000)
    baseline = _row(build_report(store.root).table, codec="none")
    assert np.isnan(baseline["ratio"]) and np.isnan(baseline["saving"])  # nothing crosses a non-split


def test_only_changed_configurations_are_rescored(tmp_path):
    store = write_store(tmp_path / "r", CONFIGS, n_images=6)
    assert build_report(store.root).rescored == 5
    again = build_report(store.root)
    assert (again.rescored, again.delta_rescored) == (0, 0)

    # Re-run one configuration with different results: only it is re-scored.
    rerun = replace(CONFIGS[3], detections="exact", minutes=30)
    write_part(store.root, config_rows(rerun, store.image_ids), "part-r1-00000.parquet")
    third = build_report(store.root)
    assert (third.rescored, third.delta_rescored) == (1, 1)
    assert _row(third.table, codec_params='{"qp":0}')["ap"] == pytest.approx(100.0)

    # A new baseline changes every delta of its (model, variant) but only its own AP.
    new_baseline = config_rows(replace(BASE, detections="shift", minutes=40), store.image_ids)
    write_part(store.root, new_baseline, "part-r2-00000.parquet")
    fourth = build_report(store.root)
    assert (fourth.rescored, fourth.delta_rescored) == (1, 5)
    assert _row(fourth.table, codec_params='{"qp":-8}')["delta_ap"] == pytest.approx(100.0 - 30.0)

    assert build_report(store.root, force=True).rescored == 5


def test_changed_ground_truth_rescores_everything(tmp_path):
    store = write_store(tmp_path / "r", CONFIGS[:3], n_images=4)
    build_report(store.root)
    gt = copy.deepcopy(store.ground_truth)
    gt["annotations"] = [a for a in gt["annotations"] if (a["id"] - 1) % 4 < 2]  # the first two boxes per image
    (store.root / "ground_truth.json").write_text(json.dumps(gt))
    result = build_report(store.root)
    assert result.rescored == 3
    # drop_half keeps exactly those two: all of the remaining ground truth
    assert _row(result.table, codec_params='{"qp":-4}')["ap"] == pytest.approx(100.0)


def test_rerun_task_counts_once_and_latest_row_wins(tmp_path):
    failing = replace(CONFIGS[1], failed_images=(2, 3))
    store = write_store(tmp_path / "r", [BASE, failing], n_images=6)
    first = _row(build_report(store.root).table, codec="nncodec")
    assert (first["n_images"], first["n_failed"]) == (4, 2)

    # The failed tasks are re-run and succeed; one of them shows up twice (identical rows).
    fixed = config_rows(replace(CONFIGS[1], minutes=5), store.image_ids)
    fixed = fixed.filter(pc.is_in(fixed["image_id"], pa.array([2, 3], pa.int64())))
    write_part(store.root, fixed, "part-r1-00000.parquet")
    write_part(store.root, fixed.slice(0, 1), "part-r1-00001.parquet")
    second = _row(build_report(store.root).table, codec="nncodec")
    assert (second["n_images"], second["n_failed"], second["n_scored"]) == (6, 0, 6)
    assert second["ap"] == pytest.approx(100.0)

    # A later failure replaces an earlier success: the latest row wins.
    failed_again = config_rows(replace(CONFIGS[1], failed_images=(5,), minutes=9), [5])
    write_part(store.root, failed_again, "part-r2-00000.parquet")
    third = _row(build_report(store.root).table, codec="nncodec")
    assert (third["n_images"], third["n_failed"]) == (5, 1)


def test_damaged_part_file_is_skipped_with_a_warning_and_kept(tmp_path):
    store = write_store(tmp_path / "r", CONFIGS[:2], n_images=6, rows_per_part=5)  # 12 rows: parts of 5, 5, 2
    parts = sorted((store.root / ROWS_DIR).glob("*.parquet"))
    assert len(parts) == 3
    damage(parts[1])
    size = parts[1].stat().st_size
    with pytest.warns(DamagedPartWarning, match=parts[1].name):
        result = build_report(store.root)
    assert parts[1].exists() and parts[1].stat().st_size == size
    assert result.skipped_parts == (str(parts[1]),)
    assert result.table["n_images"].sum() == 12 - 5
    # Its configurations are still scored on the rows that could be read.
    assert _row(result.table, split=-1)["ap"] == pytest.approx(100.0)


def test_errors_name_the_path(tmp_path):
    with pytest.raises(ResultsError, match="does not exist") as missing:
        build_report(tmp_path / "nope")
    assert str(tmp_path / "nope") in str(missing.value)

    store = write_store(tmp_path / "empty", [], n_images=2)
    with pytest.raises(ResultsError, match="no task rows") as empty:
        build_report(store.root)
    assert str(store.root / ROWS_DIR) in str(empty.value)

    other = write_store(tmp_path / "old", [BASE], n_images=2)
    meta = json.loads((other.root / META_FILE).read_text())
    (other.root / META_FILE).write_text(json.dumps(dict(meta, schema_version=SCHEMA_VERSION + 1)))
    with pytest.raises(ResultsError, match="schema version") as version:
        build_report(other.root)
    assert str(other.root / META_FILE) in str(version.value) and version.value.key == "schema_version"


def test_reference_evaluation_scores_against_the_fp32_model(tmp_path):
    configs = [
        replace(BASE, low_score_extras=True),  # its 0.05 box is below the threshold: not ground truth
        replace(BASE, variant="fp16", detections="shift"),
        replace(CONFIGS[2], low_score_extras=False),
        CONFIGS[3],
    ]
    store = write_store(tmp_path / "r", configs, n_images=5, evaluation="reference", reference_score_threshold=0.3)
    assert not (store.root / "ground_truth.json").exists()
    table = build_report(store.root).table
    assert _row(table, variant="fp32", split=-1)["ap"] == pytest.approx(100.0)
    assert _row(table, variant="fp16")["ap"] == pytest.approx(30.0)
    assert _row(table, codec_params='{"qp":-4}')["ap"] == pytest.approx(KNOWN_AP["drop_half"][0])
    assert _row(table, codec_params='{"qp":0}')["ap50"] == pytest.approx(100.0)


def test_annotation_file_of_fewer_categories_scores_only_those(tmp_path):
    """Persons only in the annotations: the detector's cars are left out, not an error."""
    store = write_store(tmp_path / "r", CONFIGS, n_images=4)
    gt = copy.deepcopy(store.ground_truth)
    gt["categories"] = [c for c in gt["categories"] if c["id"] == 1]
    gt["annotations"] = [a for a in gt["annotations"] if a["category_id"] == 1]
    (store.root / "ground_truth.json").write_text(json.dumps(gt))
    table = build_report(store.root, save=False).table
    rows = pq.read_table(store.root / ROWS_DIR)
    for config in CONFIGS[:4]:
        row = _row(table, split=config.split, codec=config.codec, codec_params=config.codec_params)
        mine = rows.filter(
            pc.and_(pc.equal(rows["codec_params"], config.codec_params), pc.equal(rows["split"], config.split))
        )
        assert (row["ap"], row["ap50"], row["ap75"]) == pytest.approx(_pycocotools_ap(gt, mine))
    assert _row(table, split=-1)["ap"] == pytest.approx(100.0)


def test_images_missing_from_ground_truth_are_left_out_with_a_warning(tmp_path):
    store = write_store(tmp_path / "r", [BASE], n_images=4)
    gt = copy.deepcopy(store.ground_truth)
    gt["images"] = gt["images"][:3]
    gt["annotations"] = [a for a in gt["annotations"] if a["image_id"] <= 3]
    (store.root / "ground_truth.json").write_text(json.dumps(gt))
    with pytest.warns(ReportWarning, match="1 finished images are not in the ground truth"):
        row = build_report(store.root).table.iloc[0]
    assert (row["n_images"], row["n_scored"], row["ap"]) == (4, 3, pytest.approx(100.0))


def test_delta_is_computed_on_the_images_both_finished(tmp_path):
    configs = [replace(BASE, skipped_images=(1,)), replace(CONFIGS[1], detections="drop_half", skipped_images=(6,))]
    store = write_store(tmp_path / "r", configs, n_images=6)
    row = _row(build_report(store.root).table, codec="nncodec")
    assert (row["n_images"], row["n_common"]) == (5, 4)
    assert row["ap_uncompressed"] == pytest.approx(100.0)
    assert row["delta_ap"] == pytest.approx(KNOWN_AP["drop_half"][0] - 100.0)


def test_intervals_are_the_bootstrap_of_the_images(tmp_path):
    """The report's interval columns are orchestrator.reporting.intervals' on exactly the images
    scored (seed 0): the AP interval holds the AP, the uncompressed model's ΔAP interval is
    [0, 0], a lossless setting's too, and a lossy one's paired interval lies below 0."""
    from orchestrator.reporting.intervals import bootstrap_ap, paired_delta
    from tasks.metrics import GroundTruth
    from tests.fixtures_results import make_detections, make_ground_truth

    store = write_store(tmp_path / "r", CONFIGS, n_images=12)
    table = build_report(store.root).table
    for row in table.itertuples():
        assert row.ap_low - 1e-9 <= row.ap <= row.ap_high + 1e-9  # faster-coco-eval and the bootstrap: same AP to 1e-13
    base = _row(table, codec="none")
    assert (base.delta_ap_low, base.delta_ap_high) == (0.0, 0.0)
    exact = _row(table, setting="qp=-8")
    assert (exact.delta_ap, exact.delta_ap_low, exact.delta_ap_high) == (0.0, 0.0, 0.0)
    half = _row(table, setting="qp=-4")
    gt = GroundTruth.from_dict(make_ground_truth(12))
    ids = list(range(1, 13))
    full = {i: Detections(*make_detections("exact")) for i in ids}
    dropped = {i: Detections(*make_detections("drop_half", low_score_extras=True)) for i in ids}
    want = bootstrap_ap(gt, dropped, ids, metrics=("ap", "ap50", "miou"))
    assert (half.ap_low, half.ap_high) == pytest.approx((want["ap"].low, want["ap"].high), abs=1e-9)
    assert (half.miou_low, half.miou_high) == pytest.approx((want["miou"].low, want["miou"].high), abs=1e-9)
    delta = paired_delta(gt, dropped, full, ids)
    assert (half.delta_ap_low, half.delta_ap_high) == pytest.approx((delta.low, delta.high), abs=1e-9)
    assert half.delta_ap_high < 0


def test_report_is_saved_atomically_and_readable(tmp_path):
    store = write_store(tmp_path / "r", CONFIGS[:2], n_images=3)
    result = build_report(store.root)
    assert result.path == str(store.root / REPORT_DIR / "configs.parquet")
    assert [p.name for p in (store.root / REPORT_DIR).iterdir()] == ["configs.parquet"]
    stored = load_report(store.root)
    assert stored["ap"].tolist() == pytest.approx(result.table["ap"].tolist())
    assert open_results(store.root).meta.sweep == "synthetic"


def _run_command(argv: list[str], capsys) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="splitsweep report")
    report_command.add_arguments(parser)
    code = report_command.run(parser.parse_args(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_command_writes_mpeg_csv(tmp_path, capsys):
    store = write_store(tmp_path / "r", CONFIGS, n_images=3)
    csv_path = tmp_path / "out" / "report.csv"
    code, out, err = _run_command([str(store.root), "--csv", str(csv_path)], capsys)
    assert code == 0 and "5 configurations, 5 re-scored" in err
    lines = csv_path.read_text().splitlines()
    header = lines[0].split(",")
    assert header[:10] == ["model", "variant", "split", "codec", "qp", "bytes", "bpp", "ratio", "AP", "AP50"]
    assert {"AP75", "delta_AP", "saving", "n_images", "encode_s"} <= set(header)
    values = dict(zip(header, lines[3].split(",")))  # rows sorted: baseline, qp -8, qp -4, …
    assert (values["codec"], values["qp"], values["bytes"], values["kB"]) == ("nncodec", "-4", "500", "0.5")
    assert {"AP_low", "AP_high", "delta_AP_low", "delta_AP_high", "mIoU_low"} <= set(header)
    assert float(values["bpp"]) == pytest.approx(8 * 500 / (WIDTH * HEIGHT))
    assert float(values["ratio"]) == pytest.approx(8.0)
    assert float(values["AP"]) == pytest.approx(KNOWN_AP["drop_half"][0])
    # The printed table: aligned columns, one line per configuration, sorted.
    table_lines = out.split("\n\n")[0].splitlines()
    assert len(table_lines) == 1 + len(CONFIGS)
    ap_at = table_lines[0].index("AP50")
    assert all(line[ap_at : ap_at + 6].strip() for line in table_lines[1:])
    assert [line.split()[4] for line in table_lines[2:]] == ["qp=-8", "qp=-4", "qp=0", "qp=4"]


def test_command_json_and_csv_formats(tmp_path, capsys):
    store = write_store(tmp_path / "r", CONFIGS, n_images=3)
    code, out, _ = _run_command([str(store.root), "--format", "json", "--within", "1"], capsys)
    payload = json.loads(out)
    assert code == 0 and len(payload["configs"]) == 5
    assert payload["cheapest_within"]["configs"][0]["codec"] == "nncodec"
    assert payload["cheapest_within"]["configs"][0]["coded_bytes"] == 1000.0
    code, out, _ = _run_command([str(store.root), "--format", "csv"], capsys)
    assert out.splitlines()[0].startswith("model,variant,split,codec,qp,bytes,bpp,ratio,AP,AP50")


def test_command_reports_damaged_parts_as_warnings(tmp_path, capsys):
    store = write_store(tmp_path / "r", CONFIGS[:2], n_images=6, rows_per_part=5)
    part = sorted((store.root / ROWS_DIR).glob("*.parquet"))[0]
    damage(part)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the command turns them into messages, not tracebacks
        code, _, err = _run_command([str(store.root)], capsys)
    assert code == 0 and f"splitsweep: warning: {part}" in err


def test_part_files_of_another_schema_version_are_refused_and_temp_files_ignored(tmp_path):
    store = write_store(tmp_path / "r", [BASE], n_images=2)
    rows = config_rows(CONFIGS[1], store.image_ids)
    # A half-written temp file of an atomic write in progress is not a part file.
    (store.root / ROWS_DIR / ".part-r7-00000.parquet").write_bytes(b"PAR1 half")
    (store.root / ROWS_DIR / "part-r7-00000.parquet.tmp").write_bytes(b"PAR1 half")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert build_report(store.root).configs == 1
    newer = rows.replace_schema_metadata({"splitsweep.schema_version": str(SCHEMA_VERSION + 1)})
    path = write_part(store.root, newer, "part-r8-00000.parquet")
    with pytest.raises(ResultsError, match="part file written under schema version") as err:
        build_report(store.root)
    assert str(path) in str(err.value)


def test_unreadable_stored_report_is_rebuilt(tmp_path):
    store = write_store(tmp_path / "r", CONFIGS[:2], n_images=2)
    first = build_report(store.root)
    damage(first.path)
    with pytest.warns(ReportWarning, match="stored report unreadable"):
        again = build_report(store.root)
    assert again.rescored == 2 and load_report(store.root)["ap"].tolist() == pytest.approx([100.0, 100.0])


def test_missing_ground_truth_or_reference_is_reported(tmp_path):
    store = write_store(tmp_path / "gt", [BASE], n_images=2)
    (store.root / "ground_truth.json").unlink()
    with pytest.raises(ResultsError, match="ground_truth.json is missing") as err:
        build_report(store.root)
    assert str(store.root / "ground_truth.json") in str(err.value)

    # Reference mode, but one model has no fp32 unsplit run to take the reference from.
    configs = [BASE, replace(CONFIGS[1], model="other")]
    ref = write_store(tmp_path / "ref", configs, n_images=2, evaluation="reference", reference_score_threshold=0.5)
    with pytest.warns(ReportWarning, match="model 'other' has no fp32 split -1 codec none rows"):
        table = build_report(ref.root).table
    assert np.isnan(_row(table, model="other")["ap"]) and _row(table, model="toy")["ap"] == pytest.approx(100.0)


def test_reference_fidelity_miou_keeps_resolving_where_ap_saturates(tmp_path):
    """miou: mean best same-class IoU over the reference's boxes (a missed box 0): exactly 100
    for the reference, the known IoU of a shifted box, half for half the boxes dropped."""
    configs = [
        BASE,
        replace(BASE, variant="fp16", detections="shift"),
        replace(CONFIGS[2], low_score_extras=False),  # drop_half
        CONFIGS[3],
    ]
    store = write_store(tmp_path / "r", configs, n_images=5, evaluation="reference", reference_score_threshold=0.3)
    table = build_report(store.root).table
    assert _row(table, variant="fp32", split=-1)["miou"] == pytest.approx(100.0, abs=1e-12)
    assert _row(table, variant="fp16")["miou"] == pytest.approx(100 * 76.5 / 123.5, abs=1e-9)
    assert _row(table, codec_params='{"qp":-4}')["miou"] == pytest.approx(50.0, abs=1e-9)
    # AP50 cannot tell the shifted boxes from the reference; miou can
    assert _row(table, variant="fp16")["ap50"] == pytest.approx(100.0)
