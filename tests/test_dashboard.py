"""The Streamlit dashboard, driven in-process with AppTest on a synthetic results store whose numbers are known."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from streamlit.testing.v1 import AppTest

from dashboard import charts
from dashboard.data import Filters, apply_filters, codec_label, read_configs, read_progress, results_version
from dashboard.views.drilldown import draw_boxes
from dashboard.views.overview import summarize
from dashboard.views.variants import variant_frame
from orchestrator.commands import dashboard as dashboard_command
from orchestrator.commands.report import mpeg_columns
from orchestrator.reporting.bdrate import bd_rate
from orchestrator.reporting.report import build_report, load_report
from orchestrator.results.schema import META_FILE, SCHEMA_VERSION, split_label
from tasks.errors import ResultsError
from tasks.rows import Detections
from tests.fixtures_results import HEIGHT, KNOWN_AP, WIDTH, SynthConfig, make_detections, task_id, write_store

APP = str(Path(__file__).resolve().parents[1] / "dashboard" / "app.py")
N_IMAGES = 6
RAW3, RAW7 = 1_478_656, 600_000
NN3 = [(-30, "exact", 300_000), (-26, "drop_half", 150_000), (-22, "shift", 100_000), (-18, "none", 50_000)]
UNI3 = [(8, "exact", 200_000), (6, "drop_half", 120_000), (4, "shift", 60_000), (2, "none", 30_000)]
CONFIGS = [
    SynthConfig(variant="fp32"),
    SynthConfig(variant="fp16", detections="drop_half"),
    *[
        SynthConfig(split=3, codec="nncodec", params={"qp": qp}, detections=kind, raw_bytes=RAW3, coded_bytes=size,
                    feature_psnr=40.0 + qp / 2)
        for qp, kind, size in NN3
    ],
    *[
        SynthConfig(split=3, codec="uniform", params={"bits": bits}, detections=kind, raw_bytes=RAW3, coded_bytes=size,
                    feature_psnr=10.0 + 3 * bits)
        for bits, kind, size in UNI3
    ],
    SynthConfig(split=7, codec="nncodec", params={"qp": -30}, raw_bytes=RAW7, coded_bytes=90_000, feature_psnr=38.0,
                failed_images=(2,), skipped_images=(6,)),
    SynthConfig(split=7, codec="float16", raw_bytes=RAW7, coded_bytes=300_000, feature_psnr=90.0),
]  # fmt: skip
VARIANTS = [
    {"model": "toy", "variant": "fp32", "family": "fp32", "settings": "{}", "file_bytes": 4_000_000,
     "transmission_bytes": 3_700_000, "transmission": "zlib-6", "params": 1_000_000, "nonzero_params": 1_000_000,
     "macs": 500_000_000, "build_s": 0.0, "notes": "", "error": None},
    {"model": "toy", "variant": "fp16", "family": "fp16", "settings": "{}", "file_bytes": 2_000_000,
     "transmission_bytes": 1_800_000, "transmission": "zlib-6", "params": 1_000_000, "nonzero_params": 1_000_000,
     "macs": 500_000_000, "build_s": 0.5, "notes": "", "error": None},
]  # fmt: skip
SPLITS = [
    {"model": "toy", "variant": v, "split": s, "variant_split": s, "head_macs": h, "tail_macs": 500_000_000 - h}
    for v in ("fp32", "fp16")
    for s, h in ((3, 100_000_000), (7, 300_000_000))
]


def _write_parquet(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


def make_results(root: Path, *, plan: bool = True, variants: bool = True, report: bool = True) -> Path:
    """The synthetic store of this module: known APs, bytes, failures, remaining tasks."""
    store = write_store(root, CONFIGS, n_images=N_IMAGES)
    if plan:
        tasks = [(c, i) for c in CONFIGS for i in store.image_ids]
        pq.write_table(
            pa.table(
                {
                    "task_id": [task_id(c, i) for c, i in tasks],
                    "model": [c.model for c, _ in tasks],
                    "variant": [c.variant for c, _ in tasks],
                    "split": pa.array([c.split for c, _ in tasks], pa.int32()),
                    "codec": [c.codec for c, _ in tasks],
                    "codec_params": [c.codec_params for c, _ in tasks],
                    "qp": pa.array([c.params.get("qp") for c, _ in tasks], pa.int32()),
                    "image_id": pa.array([i for _, i in tasks], pa.int64()),
                }
            ),
            root / "plan.parquet",
        )
    if variants:
        _write_parquet(root / "variants" / "variants.parquet", VARIANTS)
        _write_parquet(root / "variants" / "splits.parquet", SPLITS)
    if report:
        build_report(root)
    return root


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory) -> Path:
    """A results directory for the dashboard (synthetic until a real-sweep fixture exists)."""
    return make_results(tmp_path_factory.mktemp("dash") / "results")


@pytest.fixture(scope="module")
def report(results_dir) -> pd.DataFrame:
    return load_report(results_dir)


def app(location: Path | str, view: str = "Overview", **state) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["results_location"] = str(location)
    at.session_state["view"] = view
    for key, value in state.items():
        at.session_state[key] = value
    return at.run()


def no_exception(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(at: AppTest, kind: str) -> list[str]:
    return [e.value for e in at.get(kind)]


def frame_with(at: AppTest, column: str) -> pd.DataFrame:
    found = [d.value for d in at.dataframe if column in d.value.columns]
    assert found, f"no table with a {column!r} column; tables: {[list(d.value.columns) for d in at.dataframe]}"
    return found[0]


def vega(at: AppTest) -> list[dict]:
    """Every Altair chart on the page: its spec and its datasets as DataFrames."""
    out = []
    for node in at.main:
        if getattr(node, "type", None) == "vega_lite_chart":
            spec = json.loads(node.proto.spec)
            data = {d.name: pa.ipc.open_stream(d.data.data).read_all().to_pandas() for d in node.proto.datasets}
            out.append({"spec": spec, "data": data})
    return out


def row_of(report: pd.DataFrame, split: int, codec: str, variant: str = "fp32", **params) -> pd.Series:
    wanted = json.dumps(params, sort_keys=True, separators=(",", ":"))
    hit = report[(report["split"] == split) & (report["codec"] == codec) & (report["variant"] == variant)
                 & (report["codec_params"] == wanted)]  # fmt: skip
    assert len(hit) == 1
    return hit.iloc[0]


# -- any results directory: the synthetic one, and a real sweep's where conftest has one --


@pytest.fixture(params=["synthetic", "sweep"])
def any_results(request) -> Path:
    if request.param == "synthetic":
        return request.getfixturevalue("results_dir")
    try:
        return Path(request.getfixturevalue("sweep_results"))
    except pytest.FixtureLookupError:
        pytest.skip("no sweep_results fixture (a real sweep) in this checkout")


def test_every_view_renders_without_exception(any_results):
    for view in ("Overview", "Rate–accuracy", "Split points", "BD-rate & Pareto", "Variants", "Image drill-down", "Table"):
        no_exception(app(any_results, view))


def test_table_equals_the_report_for_every_configuration(any_results):
    at = no_exception(app(any_results, "Table"))
    report = load_report(any_results)
    key = ["model", "variant", "split", "codec", "qp", "n_images"]
    table = frame_with(at, "ap").sort_values(key).reset_index(drop=True)
    # the table shows splits by label (input / unsplit / node index)
    expected = report.assign(split=[split_label(s) for s in report["split"]]).sort_values(key).reset_index(drop=True)
    assert len(table) == len(expected) > 0
    assert list(table["split"]) == list(expected["split"]) and "unsplit" in set(table["split"])
    for column in ("ap", "ap50", "coded_bytes", "raw_bytes", "n_images", "n_failed"):
        assert table[column].to_numpy(dtype=float, na_value=np.nan) == pytest.approx(
            expected[column].to_numpy(dtype=float, na_value=np.nan), nan_ok=True
        ), column


def test_each_codec_filter_leaves_only_that_codec(any_results):
    report = load_report(any_results)
    for codec in sorted(report["codec"].unique()):
        table = frame_with(no_exception(app(any_results, "Table", f_codec=[codec])), "ap")
        assert set(table["codec"]) == {codec} and len(table) == int((report["codec"] == codec).sum())


def test_overview_counts_match_the_stored_rows(any_results):
    from orchestrator.results.reading import open_results

    status = open_results(any_results).task_status()
    metrics = {m.label: m.value for m in no_exception(app(any_results)).metric}
    ok = sum(s == "ok" for s in status.values())
    if (Path(any_results) / "plan.parquet").exists():  # counted among the planned tasks, as `status` does
        from orchestrator.results.status import sweep_status

        ok = sweep_status(str(any_results)).totals["ok"]
    assert metrics["done (ok)"] == f"{ok:,}"


def test_curves_have_a_point_per_coded_configuration(any_results):
    report = load_report(any_results)
    coded = report[(report["split"] != -1) & (report["coded_bytes"] > 0) & report["ap"].notna()]
    drawn = vega(no_exception(app(any_results, "Rate–accuracy")))
    assert len(drawn) == report["model"].nunique()  # one chart per model, against bpp by default
    lines = [next(layer for layer in c["spec"]["layer"] if layer["mark"]["type"] == "line") for c in drawn]
    assert all(layer["encoding"]["x"]["field"] == "bpp" for layer in lines)
    counted = sum(len(next(f for f in c["data"].values() if "curve" in f.columns)) for c in drawn)
    assert counted == len(coded)


def test_drilldown_detections_match_the_stored_row(any_results):
    import pyarrow.compute as pc

    from orchestrator.results.reading import detections_by_row, latest_rows, open_results

    report = load_report(any_results)
    config = report[report["split"] != -1].iloc[0]
    label = codec_label(config["codec"], config["codec_params"])
    name = f"{config['model']} / {config['variant']} / split {config['split']} / {label}"
    at = no_exception(app(any_results, "Image drill-down", drill_config=name))
    image_id = int(at.selectbox(key="drill_image").value)
    where = pc.field("image_id") == image_id
    for column in ("model", "variant", "codec", "codec_params"):
        where = where & (pc.field(column) == config[column])
    where = where & (pc.field("split") == int(config["split"]))
    rows = latest_rows(open_results(any_results).read_rows(["task_id", "finished_at", "status", "detections"], filter=where))
    assert rows.num_rows == 1
    numbers = frame_with(at, "detections").set_index("configuration")
    assert numbers.loc[name, "detections"] == len(detections_by_row(rows.column("detections"))[0])


# -- views on the synthetic store, whose numbers are known --------------------------------


def test_overview_counts_rate_and_failures(results_dir):
    at = no_exception(app(results_dir))
    metrics = {m.label: m.value for m in at.metric}
    # 12 configurations × 6 images planned; split 7 nncodec skipped image 6 and failed image 2.
    assert metrics["done (ok)"] == str(12 * N_IMAGES - 2)
    assert metrics["failed"] == "1"
    assert metrics["remaining"] == "1"
    assert metrics["last row"].endswith(" ago")
    # The synthetic rows finish at 2025-01-01 00:00:00 plus one millisecond per row.
    assert any(t.startswith("Last row stored 2025-01-01 00:00:00 UTC") for t in texts(at, "caption"))
    errors = frame_with(at, "error")
    assert errors["error"].tolist() == ["synthetic failure"] and errors["count"].tolist() == [1]
    assert errors["example"].tolist() == ["toy / fp32 / split 7 / nncodec"]
    progress = [c for c in vega(at) if "ok" in json.dumps(c["spec"])]
    assert progress, "no progress chart"
    data = next(iter(progress[0]["data"].values()))
    assert data.loc[(data["split"] == 7) & (data["state"] == "remaining"), "tasks"].sum() == 1


def test_overview_rate_is_the_clis_window_rate(results_dir):
    """The overview's rate is orchestrator.execution.progress.window_rate of the stored finish times
    (the CLI's): idle time after the last row does not lower it, and the ETA counts that
    time as work done."""
    from orchestrator.execution.progress import window_rate

    progress = read_progress(str(results_dir))
    stamps = progress.rows["finished_at"]
    last = stamps.max()
    summary = summarize(progress, Filters(), now=last, window_min=5.0)
    seconds = (stamps - stamps.min()).dt.total_seconds().to_numpy()
    assert summary.rate_per_min > 0
    assert summary.rate_per_min == pytest.approx(60 * window_rate(seconds, window_s=300))
    assert summary.eta_s == pytest.approx(summary.remaining / summary.rate_per_min * 60)
    later = summarize(progress, Filters(), now=last + pd.Timedelta(seconds=5), window_min=5.0)
    assert later.rate_per_min == summary.rate_per_min
    assert later.eta_s == pytest.approx(max(0.0, summary.eta_s - 5))
    only_uniform = summarize(progress, Filters(codecs=("uniform",)), now=last)
    assert (only_uniform.ok, only_uniform.failed, only_uniform.remaining) == (4 * N_IMAGES, 0, 0)


def test_table_shows_the_report_values_and_downloads_them(results_dir, report):
    at = no_exception(app(results_dir, "Table"))
    table = frame_with(at, "ap")
    assert len(table) == len(report) == len(CONFIGS)
    shown = table.set_index(["variant", "split", "label"])
    for qp, kind, size in NN3:
        row = row_of(report, 3, "nncodec", qp=qp)
        assert shown.loc[("fp32", "3", f"nncodec qp={qp}"), "ap"] == pytest.approx(row["ap"])
        assert row["ap"] == pytest.approx(KNOWN_AP[kind][0], abs=1e-6)
        assert shown.loc[("fp32", "3", f"nncodec qp={qp}"), "coded_bytes"] == size
    assert shown.loc[("fp16", "unsplit", "none"), "ap"] == pytest.approx(KNOWN_AP["drop_half"][0], abs=1e-6)
    assert shown.loc[("fp32", "7", "nncodec qp=-30"), "n_failed"] == 1


def test_download_is_the_filtered_table_as_report_csv(results_dir, report):
    from dashboard.views.table import csv_bytes

    shown = apply_filters(report, Filters(codecs=("uniform",)))
    data = pd.read_csv(io.BytesIO(csv_bytes(shown)))
    assert data["codec"].unique().tolist() == ["uniform"] and len(data) == 4
    assert data.columns.tolist() == mpeg_columns(report).columns.tolist()
    at = no_exception(app(results_dir, "Table", f_codec=["uniform"]))
    assert at.get("download_button"), "no download button"


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ({"f_codec": ["uniform"]}, lambda r: r["codec"] == "uniform"),
        ({"f_split": [7]}, lambda r: r["split"] == 7),
        ({"f_variant": ["fp16"]}, lambda r: r["variant"] == "fp16"),
        ({"f_model": ["toy"], "f_split": [-1, 7]}, lambda r: r["split"].isin([-1, 7])),
        ({"f_qp": (-26, -22)}, lambda r: r["qp"].isna() | r["qp"].between(-26, -22)),
    ],
    ids=["codec", "split", "variant", "model+split", "qp"],
)
def test_filters_keep_exactly_the_matching_rows(results_dir, report, state, expected):
    at = no_exception(app(results_dir, "Table", **state))
    table = frame_with(at, "ap")
    want = report[expected(report)]
    assert len(table) == len(want) > 0
    assert sorted(zip(table["split"], table["codec"], table["ap"].round(6))) == sorted(
        zip(want["split"].map(split_label), want["codec"], want["ap"].round(6))
    )


def test_filter_widgets_change_the_table(results_dir):
    at = no_exception(app(results_dir, "Table"))
    at.multiselect(key="f_codec").set_value(["nncodec"]).run()
    table = frame_with(no_exception(at), "ap")
    assert set(table["codec"]) == {"nncodec"} and len(table) == 5
    at.slider(key="f_qp").set_value((-30, -26)).run()
    table = frame_with(no_exception(at), "ap")
    assert sorted(table["qp"].tolist()) == [-30, -30, -26]


def test_filters_apply_to_the_overview(results_dir):
    at = no_exception(app(results_dir, "Overview", f_split=[3]))
    metrics = {m.label: m.value for m in at.metric}
    assert (metrics["done (ok)"], metrics["failed"], metrics["remaining"]) == (str(8 * N_IMAGES), "0", "0")
    assert any("No failed tasks among the filtered ones" in c for c in texts(at, "caption"))


def test_curves_draw_points_rules_and_pareto(results_dir, report):
    at = no_exception(app(results_dir, "Rate–accuracy"))
    drawn = vega(at)
    assert len(drawn) == 1  # one model, against bpp
    bytes_chart = drawn[0]
    lines = next(layer for layer in bytes_chart["spec"]["layer"] if layer["mark"]["type"] == "line")
    assert lines["encoding"]["x"]["field"] == "bpp" and lines["encoding"]["x"]["scale"]["type"] == "log"
    assert lines["encoding"]["x"]["title"] == "bits per pixel (bpp, log scale)"
    # 95% intervals as rules from ap_low to ap_high, the uncompressed interval as a band.
    assert any(layer["encoding"].get("y2", {}).get("field") == "ap_high" for layer in bytes_chart["spec"]["layer"])
    frames = list(bytes_chart["data"].values())
    points = next(f for f in frames if "curve" in f.columns)
    rules = next(f for f in frames if "text" in f.columns)
    assert len(points) == len(report[report["split"] != -1])
    assert sorted(rules["value"].round(4)) == sorted([round(KNOWN_AP["drop_half"][0], 4), 100.0])
    front = points[points["on_front"]].sort_values("coded_bytes")
    assert front["label"].tolist() == ["uniform bits=2", "uniform bits=4", "nncodec qp=-30"]
    assert front["coded_bytes"].tolist() == [30_000, 60_000, 90_000]
    assert set(points["group"]) == {"3", "7"}

    at.radio(key="curve_group").set_value("codec").run()
    points = next(f for f in list(vega(no_exception(at))[0]["data"].values()) if "curve" in f.columns)
    assert set(points["group"]) == {"nncodec", "uniform", "float16"}


def test_curve_points_and_rules_from_a_report(results_dir, report):
    enriched = read_configs(str(results_dir), update=False).table
    points = charts.curve_points(enriched, x="ratio", group="codec")
    assert (points["split"] != -1).all()
    row = row_of(report, 3, "uniform", bits=8)
    assert points.loc[points["label"] == "uniform bits=8", "ratio"].item() == pytest.approx(RAW3 / 200_000)
    assert row["ratio"] == pytest.approx(RAW3 / 200_000)
    rules = charts.baseline_rules(report)
    assert rules.set_index("variant")["value"].to_dict() == pytest.approx({"fp32": 100.0, "fp16": KNOWN_AP["drop_half"][0]})
    assert set(charts.curve_points(enriched, x="kB")["kB"]) == {b / 1000 for b in points["coded_bytes"]}
    with pytest.raises(ValueError):
        charts.curve_points(report, x="kbps")  # a store of stills has no kbps


def test_split_view_heatmap_bytes_and_timing(results_dir):
    at = no_exception(app(results_dir, "Split points"))
    drawn = vega(at)
    heat = next(c for c in drawn if c["spec"]["layer"][0]["mark"]["type"] == "rect")
    cells = next(iter(heat["data"].values()))
    assert sorted(zip(cells["split"], cells["qp"])) == [(3, -30), (3, -26), (3, -22), (3, -18), (7, -30)]
    assert heat["spec"]["layer"][0]["encoding"]["y"]["field"] == "split_name" and set(cells["split_name"]) == {"3", "7"}
    assert cells.set_index(["split", "qp"]).loc[(3, -22), "value"] == pytest.approx(KNOWN_AP["shift"][0], abs=1e-6)
    bars = next(c for c in drawn if c["spec"].get("mark", {}).get("type") == "bar" and "raw_bytes" in json.dumps(c["spec"]))
    raw = next(iter(bars["data"].values())).set_index("split")["raw_bytes"].to_dict()
    assert raw == {3: RAW3, 7: RAW7}
    timing = frame_with(at, "head")
    row = timing.set_index(["variant", "split", "codec"]).loc[("fp32", "3", "nncodec")]
    assert row[["head", "encode", "decode", "tail"]].tolist() == pytest.approx([0.010, 0.002, 0.001, 0.005])
    kb = [c for c in drawn if c["spec"].get("layer", [{}])[0].get("mark", {}).get("type") == "rect"][1]  # coded kB
    cells = next(iter(kb["data"].values()))
    assert set(cells["text_color"]) <= {"white", "black"} and (cells["value"] > 0).all()
    # White on the dark (purple) end of viridis, black on the light (yellow) end.
    assert charts._text_colours(np.array([0.0, 60.0, 100.0, np.nan])) == ["white", "black", "black", "black"]


def test_timing_frame_is_per_stage_means():
    configs = pd.DataFrame(
        {"model": "m", "variant": "v", "codec": "c", "split": [1, 1, 2], "head_s": [1.0, 3.0, 5.0], "encode_s": [0.5, 0.5, 1.0],
         "decode_s": [0.1, 0.3, 0.2], "tail_s": [2.0, 2.0, 1.0]}
    )  # fmt: skip
    frame = charts.timing_frame(configs)
    split1 = frame[frame["split"] == 1].set_index("stage")["seconds"]
    assert split1.to_dict() == pytest.approx({"head": 2.0, "encode": 0.5, "decode": 0.2, "tail": 2.0})
    assert frame[frame["split"] == 1]["stage"].tolist() == ["head", "encode", "decode", "tail"]
    spec = charts.timing_chart(frame).to_dict()
    assert spec["encoding"]["y"]["stack"] == "zero"


def test_bd_table_pareto_and_cheapest(results_dir):
    at = no_exception(app(results_dir, "BD-rate & Pareto"))
    bd = frame_with(at, "bd_rate")
    row = bd[(bd["split"] == "3") & (bd["codec"] == "uniform")].iloc[0]
    pixels = WIDTH * HEIGHT
    nn = [(8 * s / pixels, KNOWN_AP[k][0]) for _, k, s in NN3]
    uni = [(8 * s / pixels, KNOWN_AP[k][0]) for _, k, s in UNI3]
    expected = bd_rate([r for r, _ in nn], [a for _, a in nn], [r for r, _ in uni], [a for _, a in uni])
    assert row["anchor"] == "nncodec"
    assert row["bd_rate"] == pytest.approx(expected, rel=1e-6)
    assert row["bd_rate"] < 0  # uniform needs fewer bytes here
    front = frame_with(at, "front_noise")
    assert front["label"].tolist() == ["uniform bits=2", "uniform bits=4", "nncodec qp=-30"]
    cheapest = frame_with(at, "ap_uncompressed")
    assert cheapest[["split", "label", "coded_bytes"]].values.tolist() == [["7", "nncodec qp=-30", 90_000]]

    at.selectbox(key="bd_anchor").set_value("uniform").run()
    bd = frame_with(no_exception(at), "bd_rate")
    row = bd[(bd["split"] == "3") & (bd["codec"] == "nncodec")].iloc[0]
    assert row["bd_rate"] == pytest.approx(
        bd_rate([r for r, _ in uni], [a for _, a in uni], [r for r, _ in nn], [a for _, a in nn]), rel=1e-6
    )
    at.number_input(key="within_points").set_value(0.0).run()
    assert frame_with(no_exception(at), "ap_uncompressed")["coded_bytes"].tolist() == [90_000]


def test_variant_table_sizes_macs_and_ap_change(results_dir):
    at = no_exception(app(results_dir, "Variants"))
    table = frame_with(at, "file_bytes").set_index("variant")
    assert table.loc["fp32", "file_bytes"] == 4_000_000 and table.loc["fp16", "file_bytes"] == 2_000_000
    assert table.loc["fp16", "transmission_bytes"] == 1_800_000
    assert table.loc["fp16", "size_change"] == pytest.approx(-0.5)
    assert table.loc["fp16", "ap"] == pytest.approx(KNOWN_AP["drop_half"][0], abs=1e-6)
    assert table.loc["fp16", "ap_change"] == pytest.approx(KNOWN_AP["drop_half"][0] - 100.0, abs=1e-6)
    assert table.loc["fp32", "ap_change"] == 0
    macs = frame_with(at, "head_macs")
    split3 = macs[(macs["variant"] == "fp32") & (macs["split"] == 3)].iloc[0]
    assert split3["head_macs"] == 100_000_000 and split3["head_share"] == pytest.approx(0.2)

    at = no_exception(app(results_dir, "Variants", f_variant=["fp16"]))
    assert frame_with(at, "file_bytes")["variant"].tolist() == ["fp16"]


def test_drilldown_shows_detections_of_both_configurations(results_dir):
    label = "toy / fp32 / split 3 / nncodec qp=-26"
    at = no_exception(app(results_dir, "Image drill-down", drill_config=label))
    assert at.selectbox(key="drill_image").options == [f"{i} · {i}.jpg" for i in range(1, N_IMAGES + 1)]
    numbers = frame_with(at, "detections").set_index("configuration")
    base = "toy / fp32 / split unsplit / none (uncompressed)"
    assert numbers.loc[base, "detections"] == 4 and numbers.loc[label, "detections"] == 2  # drop_half
    assert numbers.loc[label, "coded_bytes"] == 150_000 and numbers.loc[label, "raw_bytes"] == RAW3
    assert numbers.loc[label, "feature_psnr"] == pytest.approx(40.0 - 13)
    assert len(at.image) == 3  # uncompressed, chosen, and both on one picture
    assert (numbers.loc[label, "TP"], numbers.loc[label, "FP"], numbers.loc[label, "FN"]) == (2, 0, 2)
    assert (numbers.loc[base, "TP"], numbers.loc[base, "FN"]) == (4, 0)
    assert numbers.loc[base, "AP (this image)"] == pytest.approx(100.0)
    assert numbers.loc[label, "AP (this image)"] == pytest.approx(KNOWN_AP["drop_half"][0], abs=0.01)
    assert any("blank 640×480 canvas" in t for t in texts(at, "info"))
    scores = frame_with(at, "score")["score"].tolist()
    assert scores == pytest.approx([0.9, 0.9 - 0.4 / 3])

    at.slider(key="drill_threshold").set_value(0.85).run()
    numbers = frame_with(no_exception(at), "shown").set_index("configuration")
    assert numbers.loc[label, "shown"] == 1 and numbers.loc[base, "shown"] == 1


def test_drilldown_failed_image_and_other_image(results_dir):
    label = "toy / fp32 / split 7 / nncodec qp=-30"
    at = no_exception(app(results_dir, "Image drill-down", drill_config=label, drill_image=2))
    numbers = frame_with(at, "status").set_index("configuration")
    assert numbers.loc[label, "status"] == "failed" and numbers.loc[label, "error"] == "synthetic failure"
    assert numbers.loc[label, "detections"] == 0
    # Image 6 was never run in this configuration: it is not offered.
    assert not any(o.startswith("6 ") for o in at.selectbox(key="drill_image").options)


def test_draw_boxes_paints_ground_truth_and_detections():
    boxes, scores, cats = make_detections("shift")
    gt = Detections(*make_detections("exact"))
    picture = draw_boxes(None, (WIDTH, HEIGHT), ground_truth=gt, detections=Detections(boxes, scores, cats), threshold=0.0)
    assert picture.shape == (HEIGHT, WIDTH, 3)
    x, y, w, h = gt.boxes[0].astype(int)
    assert tuple(picture[y + h // 2, x]) == (0, 200, 0)  # left edge of a ground-truth box
    dx = int(boxes[0][0])
    assert tuple(picture[y + h // 2, dx + w]) == (230, 30, 30)  # right edge of its shifted detection
    assert tuple(picture[5, 5]) == (235, 235, 235)  # blank canvas
    rgb = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    hidden = draw_boxes(rgb, (1, 1), ground_truth=None, detections=Detections(boxes, scores, cats), threshold=0.95)
    assert hidden.sum() == 0  # every detection is below the threshold


def test_image_of_decodes_a_dataset_image_and_explains_failures():
    from dataclasses import dataclass

    from PIL import Image

    from dashboard.data import image_of

    @dataclass(frozen=True)
    class Record:  # the fields of orchestrator.data.datasets.ImageRecord
        image_id: int
        file_name: str
        width: int
        height: int

    class Photos:  # the two calls the dashboard makes of a dataset
        def __init__(self, files: dict[str, bytes]):
            self.files = files

        def image_bytes(self, record: Record) -> bytes:
            return self.files[record.file_name]

    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (10, 20, 30)).save(buf, format="PNG")
    photos = Photos({"a.png": buf.getvalue(), "bad.jpg": b"not an image"})
    records = {1: Record(1, "a.png", 40, 30), 2: Record(2, "bad.jpg", 40, 30)}
    loaded = image_of(photos, records, 1)
    assert loaded.rgb.shape == (30, 40, 3) and tuple(loaded.rgb[0, 0]) == (10, 20, 30) and loaded.source == "a.png"
    assert "cannot be read" in image_of(photos, records, 2).note
    assert "not in the dataset" in image_of(photos, records, 3).note
    picture = draw_boxes(loaded.rgb, (1, 1), ground_truth=None, detections=None, threshold=0.5)
    assert picture.shape == (30, 40, 3)


# -- missing and partial results ---------------------------------------------------------


def test_empty_results_dir_shows_a_note(tmp_path):
    root = tmp_path / "empty"
    write_store(root, [], n_images=3)
    for view in ("Overview", "Rate–accuracy", "Variants", "Table", "Image drill-down"):
        at = no_exception(app(root, view))
        assert any("No task rows yet" in t for t in texts(at, "info")), view


def test_rows_without_report_build_it_and_note_it(tmp_path):
    root = make_results(tmp_path / "fresh", report=False, plan=False, variants=False)
    at = no_exception(app(root, "Table"))
    assert any("re-scored" in t for t in texts(at, "info"))
    assert len(frame_with(at, "ap")) == len(CONFIGS)
    assert (root / "report" / "configs.parquet").exists()
    at = no_exception(app(root, "Overview"))
    assert any("No plan.parquet" in t for t in texts(at, "info"))
    assert {m.label: m.value for m in at.metric}["remaining"] == "unknown"


def test_rows_without_report_and_without_updating_say_so(tmp_path):
    root = make_results(tmp_path / "fresh", report=False)
    at = no_exception(app(root, "Table", update_report=False))
    assert any("no report yet" in t for t in texts(at, "info"))
    assert not at.dataframe


def test_rows_without_ground_truth_note_the_report_error(tmp_path):
    root = make_results(tmp_path / "nogt", report=False)
    (root / "ground_truth.json").unlink()
    for view in ("Overview", "Table", "Rate–accuracy"):
        at = no_exception(app(root, view))
        assert any("could not be brought up to date" in t for t in texts(at, "warning")), view
    assert {m.label: m.value for m in app(root, "Overview").metric}["failed"] == "1"


def test_missing_variants_table_shows_a_note_and_the_baseline_ap(tmp_path):
    root = make_results(tmp_path / "novariants", variants=False, plan=False)
    at = no_exception(app(root, "Variants"))
    assert any("No variants/variants.parquet" in t for t in texts(at, "info"))
    table = frame_with(at, "ap_change").set_index("variant")
    assert table.loc["fp16", "ap_change"] == pytest.approx(KNOWN_AP["drop_half"][0] - 100.0, abs=1e-6)


def test_reference_evaluation_draws_the_reference_detections_as_ground_truth(tmp_path):
    root = tmp_path / "reference"
    write_store(root, CONFIGS[:3], n_images=3, evaluation="reference", reference_score_threshold=0.6)
    label = "toy / fp32 / split 3 / nncodec qp=-30"
    at = no_exception(app(root, "Image drill-down", drill_config=label))
    assert any("reference evaluation" in c and "≥ 0.6" in c for c in texts(at, "caption"))
    assert frame_with(at, "detections").set_index("configuration").loc[label, "detections"] == 4
    assert frame_with(no_exception(app(root, "Table")), "ap").set_index("label").loc["nncodec qp=-30", "ap"] == 100.0


def test_not_a_results_location_shows_the_error(tmp_path):
    at = no_exception(app(tmp_path / "nothing-here"))
    assert any("does not exist" in t for t in texts(at, "error"))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / META_FILE).write_text(json.dumps({"schema_version": SCHEMA_VERSION + 1}))
    at = no_exception(app(tmp_path / "other", "Table"))
    assert any("schema version" in t for t in texts(at, "error"))


def test_growing_results_change_the_version_and_the_numbers(tmp_path):
    from tests.fixtures_results import config_rows, write_part

    root = make_results(tmp_path / "growing", plan=False, variants=False)
    before = results_version(str(root))
    extra = SynthConfig(split=3, codec="nncodec", params={"qp": -10}, detections="exact", raw_bytes=RAW3, coded_bytes=20_000)
    write_part(root, config_rows(extra, range(1, N_IMAGES + 1)), "part-r0-99999.parquet")
    assert results_version(str(root)) != before
    at = no_exception(app(root, "Table"))
    table = frame_with(at, "ap")
    assert len(table) == len(CONFIGS) + 1
    assert table.set_index("label").loc["nncodec qp=-10", "ap"] == pytest.approx(100.0)


def test_read_configs_never_raises_for_a_missing_location(tmp_path):
    configs = read_configs(str(tmp_path / "missing"))
    assert configs.table is None and configs.notes[0].level == "error"


def test_variant_frame_without_tables_uses_the_report(report):
    frame = variant_frame(report, None).set_index("variant")
    assert frame.loc["fp32", "ap"] == 100.0 and math.isnan(frame.loc["fp32", "size_change"])


# -- the command -------------------------------------------------------------------------


def test_command_builds_a_headless_streamlit_run(tmp_path):
    command = dashboard_command.build_command(str(tmp_path), port=8765)
    assert command[1:4] == ["-m", "streamlit", "run"] and command[4].endswith("dashboard/app.py")
    assert command[command.index("--server.port") + 1] == "8765"
    assert command[command.index("--server.headless") + 1] == "true"
    assert command[-2:] == ["--", str(tmp_path)]


def test_command_refuses_a_missing_directory(tmp_path):
    import argparse

    parser = argparse.ArgumentParser()
    dashboard_command.add_arguments(parser)
    args = parser.parse_args([str(tmp_path / "nope"), "--no-browser"])
    with pytest.raises(ResultsError, match="does not exist"):
        dashboard_command.run(args)


def test_drilldown_opens_the_sweeps_own_images(sweep_results):
    from dashboard.data import read_image

    loaded = read_image(str(sweep_results), 1)
    assert loaded.note is None and loaded.rgb is not None
    assert loaded.rgb.shape == (80, 96, 3)  # tests/tinydet.photo's size
    broken = read_image(str(sweep_results), 4)  # the truncated file: a note, not an exception
    assert broken.rgb is None and broken.note == "image 4 cannot be read: OSError: image file is truncated"
