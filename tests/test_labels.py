"""One label per configuration, sorted by value: status, the report and the dashboard agree."""

from __future__ import annotations

from dashboard.data import read_configs, read_progress
from orchestrator.results.schema import codec_label, codec_sort_key, setting_label
from orchestrator.results.status import sweep_status
from tasks import codecs
from tests.test_dashboard import make_results


def test_codec_label_is_the_registry_label_and_survives_unknown_codecs():
    assert codec_label("nncodec", '{"qp":-18}') == codecs.label(codecs.setting("nncodec", {"qp": -18})) == "nncodec qp=-18"
    assert codec_label("uniform", {"bits": 4}) == "uniform bits=4" and setting_label("uniform", {"bits": 4}) == "bits=4"
    assert codec_label("none", "{}") == "none"
    assert codec_label("myplugin", '{"q":3,"a":true}') == "myplugin a=True q=3"  # not installed here
    assert codec_label("x", "not json") == "x not json"


def test_settings_sort_by_value_not_by_text():
    settings = [("nncodec", {"qp": q}) for q in (-10, -26, 4, -38)] + [("uniform", {"bits": b}) for b in (16, 4, 8)]
    ordered = sorted(settings, key=lambda s: codec_sort_key(*s))
    assert [p for c, p in ordered if c == "nncodec"] == [{"qp": -38}, {"qp": -26}, {"qp": -10}, {"qp": 4}]
    assert [p["bits"] for c, p in ordered if c == "uniform"] == [4, 8, 16]
    assert sorted(["nncodec qp=-10", "nncodec qp=-26"]) == ["nncodec qp=-10", "nncodec qp=-26"]  # what text order did


def test_status_report_and_dashboard_print_one_label_in_numeric_order(tmp_path):
    root = make_results(tmp_path / "r")
    status = sweep_status(str(root))
    split3 = [r for r in status.rows if r["split"] == 3]
    assert [r["codec"] for r in split3] == [
        "nncodec qp=-30", "nncodec qp=-26", "nncodec qp=-22", "nncodec qp=-18",
        "uniform bits=2", "uniform bits=4", "uniform bits=6", "uniform bits=8",
    ]  # fmt: skip
    assert {r["codec_name"] for r in split3} == {"nncodec", "uniform"} and split3[0]["qp"] == -30
    status_labels = {(r["variant"], r["split"], r["codec_name"], r["codec_params"]): r["codec"] for r in status.rows}
    configs = read_configs(str(root), update=False).table
    report_labels = {
        (v, s, c, p): label
        for v, s, c, p, label in configs[["variant", "split", "codec", "codec_params", "label"]].itertuples(index=False)
    }
    assert report_labels == status_labels
    plan = read_progress(str(root)).plan
    assert plan["label"].tolist() == [r["codec"] for r in status.rows]
    assert plan.loc[plan["codec"] == "nncodec", "qp"].dropna().tolist() == [-30, -26, -22, -18, -30]
