"""Remote inference end to end: the split `input` in specs, its rows, its scores, and BD-rates against it."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from PIL import Image

from orchestrator.planning.spec import load_spec
from orchestrator.reporting.bdrate import REMOTE_SPLIT, bd_table
from orchestrator.reporting.report import build_report
from orchestrator.results.schema import split_label
from tasks import detectors
from tasks.codecs import build, setting
from tasks.codecs.image import image_psnr
from tasks.detectors.image import input_image, prepare_image
from tasks.errors import SpecError
from tasks.metrics import GroundTruth, coco_metrics
from tasks.remote import INPUT_SPLIT
from tasks.rows import Detections
from tests.tinydet import adapter_settings, tiny_detector, write_coco_folder, write_spec

ROOT = Path(__file__).resolve().parent.parent
CODECS = """  float16: {}
  jpeg: {quality: [5, 20, 40, 60, 80, 95]}
  hevc: {qp: [16, 24, 32, 40, 48]}
  uniform: {bits: [2, 3, 4, 5, 6, 8]}
"""


@pytest.fixture(scope="module")
def remote_sweep(tmp_path_factory, ray_local):
    from orchestrator.execution.sweep import SweepOptions, run_sweep

    root = tmp_path_factory.mktemp("remote")
    model = root / "tinydet.onnx"
    model.write_bytes(tiny_detector().SerializeToString())
    images, ann = write_coco_folder(root / "data", n_images=6)
    out = root / "results"
    spec = write_spec(root, model=model, images=images, annotations=ann, output=out, codecs=CODECS,
                      splits="[input, 3]", sweep="remote")
    result = run_sweep(load_spec(spec), SweepOptions(workers=2))
    assert result.plan_counts["failed"] == 0 and result.plan_counts["remaining"] == 0
    return root, spec, out, images, ann


def _rows(out: Path) -> pd.DataFrame:
    return pq.read_table(out / "rows").to_pandas()


def test_remote_rows_count_exactly_the_bitstream(remote_sweep):
    root, _, out, images, _ = remote_sweep
    rows = _rows(out)
    remote = rows[rows["split"] == INPUT_SPLIT]
    assert sorted(remote["codec"].unique()) == ["hevc", "jpeg"]
    assert len(remote) == 6 * 11 and (remote["status"] == "ok").all()
    # jpeg never runs at node splits; hevc codes the cut tensors there (tests/test_hevc_features.py)
    assert set(rows.loc[rows["split"] == 3, "codec"]) == {"float16", "hevc", "uniform"}
    adapter = detectors.adapter("boxes-labels-scores", {k: v for k, v in adapter_settings().items() if k != "type"})
    for _, row in remote[remote["image_id"].isin([1, 4])].iterrows():
        with Image.open(images / f"img{row['image_id']:03d}.png") as img:
            sent = input_image(np.asarray(img.convert("RGB")), adapter.settings)
        assert sent.shape == (64, 64, 3)  # the model's input resolution, stretched
        codec = build(setting(row["codec"], json.loads(row["codec_params"])))
        data = codec.encode_image(sent)
        assert row["coded_bytes"] == len(data)  # the bitstream, nothing else
        assert (row["raw_bytes"], row["float32_bytes"], row["side_bytes"]) == (64 * 64 * 3, 4 * 64 * 64 * 3, 0)
        assert row["feature_psnr"] == pytest.approx(image_psnr(sent, codec.decode_image(data))[1])
        assert row["head_s"] == 0.0 and row["tail_s"] > 0
    # a higher quality costs more bytes on every image
    jpeg = remote[remote["codec"] == "jpeg"].assign(q=lambda d: d["codec_params"].map(lambda p: json.loads(p)["quality"]))
    for _, per_image in jpeg.groupby("image_id"):
        assert per_image.sort_values("q")["coded_bytes"].is_monotonic_increasing


def test_input_image_is_placed_where_the_original_is():
    rgb = np.random.default_rng(0).integers(0, 255, (300, 500, 3), np.uint8)
    for settings in ({"input_size": [256, 256], "resize": "letterbox"}, {"input_size": [128, 96]}):
        s = detectors.adapter("boxes-labels-scores", settings).settings
        sent = input_image(rgb, s)
        tensor, meta = prepare_image(rgb, s)
        again, meta2 = prepare_image(sent, s)
        assert again.shape == tensor.shape
        assert (meta2.input_width, meta2.input_height, meta2.pad_x, meta2.pad_y) == (
            meta.input_width, meta.input_height, meta.pad_x, meta.pad_y)
        # the only difference from the unsplit model's input is the 8-bit rounding of the resized picture
        assert np.abs(again - tensor).max() <= 0.5 / 255 + 1e-6
    assert input_image(rgb, detectors.adapter("boxes-labels-scores", {}).settings) is rgb  # no input_size: as is


def test_anchor_rows_score_through_the_same_pycocotools_path(remote_sweep):
    _, _, out, _, ann = remote_sweep
    table = build_report(out).table
    gt = GroundTruth.from_dict(json.loads(ann.read_text()))
    rows = _rows(out)
    remote = table[table["split"] == REMOTE_SPLIT]
    assert len(remote) == 11 and remote["ap"].notna().all() and remote["miou"].notna().all()
    for _, cfg in remote.iterrows():
        mine = rows[(rows["split"] == INPUT_SPLIT) & (rows["codec"] == cfg["codec"]) & (rows["codec_params"] == cfg["codec_params"])]
        dets = {int(r["image_id"]): Detections.from_records(list(r["detections"])) for _, r in mine.iterrows()}
        direct = coco_metrics(gt, dets, image_ids=sorted(dets), unknown_categories="ignore")
        assert cfg["ap"] == pytest.approx(100 * direct.ap, abs=1e-12)
        assert cfg["ap50"] == pytest.approx(100 * direct.ap50, abs=1e-12)
    baseline = table[(table["split"] == -1)].iloc[0]
    assert np.isfinite(remote["delta_ap"]).all()
    assert remote["ap_uncompressed"].eq(baseline["ap"]).all()


@pytest.mark.parametrize("metric", ["ap", "miou"])
def test_bd_rate_against_remote_inference_equals_the_bjontegaard_package(remote_sweep, metric):
    bjontegaard = pytest.importorskip("bjontegaard")
    _, _, out, _, _ = remote_sweep
    table = build_report(out).table
    bd = bd_table(table, metric=metric)  # default anchor: remote inference, hevc preferred
    assert set(bd["anchor"]) == {"hevc"} and set(bd["anchor_split"]) == {REMOTE_SPLIT}
    assert {(r.split, r.codec) for r in bd.itertuples()} == {
        (REMOTE_SPLIT, "jpeg"), (3, "float16"), (3, "hevc"), (3, "uniform")}
    anchor = table[(table["split"] == REMOTE_SPLIT) & (table["codec"] == "hevc")]
    compared = set()
    for row in bd.itertuples():
        test = table[(table["split"] == row.split) & (table["codec"] == row.codec)]
        if math.isfinite(row.bd_rate):
            # PCHIP needs increasing abscissae: both curves ordered by the metric (the stored points, no others)
            a, t = _by(anchor, metric), _by(test, metric)
            theirs = bjontegaard.bd_rate(a["bpp"], a[metric], t["bpp"], t[metric], method="pchip",
                                         require_matching_points=False, min_overlap=0)
            assert row.bd_rate == pytest.approx(theirs, abs=1e-9)
            compared.add("bd_rate")
        if math.isfinite(row.bd_ap):
            a, t = _by(anchor, "bpp"), _by(test, "bpp")
            theirs = bjontegaard.bd_psnr(a["bpp"], a[metric], t["bpp"], t[metric], method="pchip",
                                         require_matching_points=False, min_overlap=0)
            assert row.bd_ap == pytest.approx(theirs, abs=1e-9)
            compared.add("bd_ap")
        if not (math.isfinite(row.bd_rate) and math.isfinite(row.bd_ap)):
            assert row.note  # a missing number always says why
    assert "bd_ap" in compared
    if metric == "miou":  # AP of the tiny detector moves in coarse steps; its fidelity resolves
        assert "bd_rate" in compared


def _by(curve: pd.DataFrame, column: str) -> pd.DataFrame:
    """Sorted by ``column``, one point per value (the cheaper one), as bdrate documents."""
    return curve.sort_values([column, "bpp"]).drop_duplicates(column)


def test_report_cli_defaults_to_remote_inference_and_refuses_single_point_anchors(remote_sweep):
    _, _, out, _, _ = remote_sweep
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    run = subprocess.run([sys.executable, "-m", "orchestrator", "report", str(out)], capture_output=True, text=True,
                         env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "BD-rate against remote inference (hevc" in run.stdout
    lines = [line for line in run.stdout.splitlines() if line.startswith("tinydet") and " input " in line]
    assert len(lines) == 11 + 1  # the configuration table's 11 remote rows, and jpeg in the BD table
    fit = subprocess.run([sys.executable, "-m", "orchestrator", "report", str(out), "--fit", "monotonic",
                          "--format", "json"], capture_output=True, text=True, env=env, timeout=120)
    payload = json.loads(fit.stdout)
    assert payload["bd_fit"] == "monotonic" and payload["bd_metric"] == "ap"
    assert all(r["bd_rate"] is not None or r["note"] for r in payload["bd"])
    bad = subprocess.run([sys.executable, "-m", "orchestrator", "report", str(out), "--anchor", "float16"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1 and "anchor" in bad.stderr and "need at least 4" in bad.stderr


@pytest.mark.parametrize(
    "edit, key, message",
    [
        (("[input, 3]", "[3]"), "codecs.jpeg", "runs only at the split `input`"),
        (("  jpeg: {quality: [5, 20, 40, 60, 80, 95]}\n  hevc: {qp: [16, 24, 32, 40, 48]}\n", ""), "models[0].splits",
         "needs an image codec"),
        (("qp: [16,", "qp: [60,"), "codecs.hevc.qp", "out of range"),
        (("quality: [5,", "quality: [0,"), "codecs.jpeg.quality", "out of range"),
    ],
)
def test_bad_remote_specs_exit_2_and_lose_nothing(remote_sweep, tmp_path, edit, key, message):
    root, spec, out, _, _ = remote_sweep
    before = sorted((p.name, p.stat().st_mtime_ns) for p in (out / "rows").iterdir())
    bad = tmp_path / "bad.yaml"
    bad.write_text(spec.read_text().replace(*edit))
    with pytest.raises(SpecError if key.startswith("models") or "split" in message else Exception) as err:
        from orchestrator.planning.plan import build_plan

        build_plan(load_spec(bad))
    assert getattr(err.value, "key", None) == key and message in str(err.value)
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    run = subprocess.run([sys.executable, "-m", "orchestrator", "run", str(bad)], capture_output=True, text=True,
                         env=env, timeout=120)
    assert run.returncode == 2 and key in run.stderr and run.stderr.count("\n") == 1
    assert sorted((p.name, p.stat().st_mtime_ns) for p in (out / "rows").iterdir()) == before


def test_dashboard_bd_view_measures_against_remote_inference(remote_sweep):
    from tests.test_dashboard import app, frame_with, no_exception

    _, _, out, _, _ = remote_sweep
    table = build_report(out).table
    at = no_exception(app(out, "BD-rate & Pareto"))
    shown = frame_with(at, "bd_rate")
    assert set(shown["anchor"]) == {"hevc"} and set(shown["anchor_split"]) == {"input"}  # shown by label
    expected = bd_table(table)
    expected = expected.assign(split=[split_label(s) for s in expected["split"]]).set_index(["split", "codec"])
    for row in shown.itertuples():
        want = expected.loc[(row.split, row.codec)]
        assert row.bd_ap == pytest.approx(want["bd_ap"], nan_ok=True) and row.note == want["note"]
    at.radio(key="bd_metric").set_value("miou").run()
    miou = frame_with(no_exception(at), "bd_rate").set_index(["split", "codec"])
    assert miou.loc[("3", "uniform"), "bd_rate"] == pytest.approx(
        bd_table(table, metric="miou").set_index(["split", "codec"]).loc[(3, "uniform"), "bd_rate"], nan_ok=True
    )
    at.selectbox(key="bd_anchor").set_value("float16").run()  # one point: refused, said so, no crash
    assert any("need at least 4" in w.value for w in no_exception(at).warning)


def test_every_display_names_remote_inference_input_and_the_baseline_unsplit(remote_sweep, capsys):
    """status, plan, report and every dashboard view show split −2 as `input` and −1 as
    `unsplit`, in numeric order (input first); Parquet and the CSV keep the numbers."""
    from orchestrator.cli import main
    from tests.test_dashboard import app, no_exception, vega

    _, spec, out, _, _ = remote_sweep

    def split_cells(text: str) -> list[str]:
        """The split column of the first table in `text` (rows that start with the model)."""
        lines = text.splitlines()
        header = next(i for i, ln in enumerate(lines) if ln.split()[:3] == ["model", "variant", "split"])
        rows = []
        for ln in lines[header + 1:]:
            if not ln.startswith("tinydet"):
                if rows:
                    break
                continue
            rows.append(ln.split()[2])
        return rows

    for argv in (["status", str(out)], ["plan", str(spec)], ["report", str(out), "--csv", str(out.parent / "r.csv")]):
        assert main(argv) == 0
        text = capsys.readouterr().out
        cells = split_cells(text)
        assert "-2" not in cells and "-1" not in cells, argv
        assert cells[0] == "input" and "unsplit" in cells and "3" in cells, argv
        firsts = list(dict.fromkeys(cells))
        assert firsts == ["input", "unsplit", "3"], (argv, firsts)  # numeric order, each split together
    bd = [ln for ln in text.splitlines() if ln.startswith("tinydet") and " jpeg " in ln]
    assert bd and all(ln.split()[2] == "input" for ln in bd)
    assert set(pd.read_csv(out.parent / "r.csv")["split"]) == {-2, -1, 3}  # CSV keeps the numbers
    assert set(pq.read_table(out / "rows", columns=["split"]).to_pandas()["split"]) == {-2, -1, 3}

    # dashboard: tables show labels, charts draw split_name in numeric order
    at = no_exception(app(out, "Table"))
    table = next(d.value for d in at.dataframe if "ap" in d.value.columns)
    assert list(dict.fromkeys(table["split"])) == ["input", "unsplit", "3"]
    at = no_exception(app(out, "Rate–accuracy"))
    points = next(f for c in vega(at) for f in c["data"].values() if "curve" in f.columns)
    assert {"input", "3"} <= set(points["split_name"]) and not points["curve"].str.contains("split -2").any()
    assert points.loc[points["split"] == REMOTE_SPLIT, "group"].eq("input").all()
    at = no_exception(app(out, "Split points"))
    axes = [c for c in vega(at) if c["spec"].get("encoding", {}).get("x", {}).get("field") == "split_name"]
    assert axes and all(c["spec"]["encoding"]["x"]["sort"][0] == "input" for c in axes)
    at = no_exception(app(out, "Overview"))
    progress = next(c for c in vega(at) if '"state"' in json.dumps(c["spec"]))
    assert progress["spec"]["encoding"]["x"]["sort"] == ["input", "unsplit", "3"]
    plan = next(d.value for d in at.dataframe if "remaining" in d.value.columns)
    assert "input" in set(plan["split"]) and "unsplit" in set(plan["split"])
    at = no_exception(app(out, "BD-rate & Pareto"))
    bd_shown = next(d.value for d in at.dataframe if "bd_rate" in d.value.columns)
    assert "input" in set(bd_shown["split"]) and -2 not in set(bd_shown["split"])
    at = no_exception(app(out, "Image drill-down"))
    names = at.selectbox(key="drill_config").options
    assert any(" / split input / jpeg " in n for n in names) and any(" / split unsplit / none" in n for n in names)
    assert not any("split -" in n for n in names)
    assert "input" in app(out, "Table").sidebar.multiselect(key="f_split").options[0]


def test_codec_kinds_never_cross_splits_in_a_unit():
    """An image codec at a node split, or a tensor codec at `input`, is a failed task naming the split; the rest run."""
    from tasks.runtime import SplitRunner
    from tasks.work import run_head, run_tasks
    from tests.tinydet import photo

    adapter = detectors.adapter("boxes-labels-scores", {k: v for k, v in adapter_settings().items() if k != "type"})
    runner = SplitRunner(tiny_detector().SerializeToString(), [3])
    jpeg, uniform = setting("jpeg", {"quality": 50}), setting("uniform", {"bits": 4})
    head = run_head(runner, adapter, photo(1))
    out = run_tasks(runner, adapter, head, [(3, jpeg), (INPUT_SPLIT, uniform), (INPUT_SPLIT, jpeg), (3, uniform)])
    assert [o.ok for o in out] == [False, False, True, True]
    assert "codes the input picture" in out[0].error and "split 3" in out[0].error
    assert "codes cut tensors, not pictures" in out[1].error
    assert out[2].result.split == INPUT_SPLIT and out[2].result.coded_bytes > 0 and len(out[2].detections)
