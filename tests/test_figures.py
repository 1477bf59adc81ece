"""Rates of the field (bpp, kbps, kB) and the paper output of `splitsweep report --figures`."""

from __future__ import annotations

import argparse

import pandas as pd
import pytest

from orchestrator.commands import report as report_command
from orchestrator.reporting.figures import _plain, bd_latex, bd_markdown
from orchestrator.reporting.report import with_rates
from tests.fixtures_results import HEIGHT, WIDTH, SynthConfig, write_store

NN = dict(split=3, codec="nncodec", raw_bytes=4000, feature_psnr=30.0)
CONFIGS = [
    SynthConfig(),
    SynthConfig(params={"qp": -8}, detections="exact", coded_bytes=1000, **NN),
    SynthConfig(params={"qp": -4}, detections="drop_half", coded_bytes=500, **NN),
    SynthConfig(params={"qp": 0}, detections="shift", coded_bytes=250, **NN),
    SynthConfig(params={"qp": 4}, detections="none", coded_bytes=100, **NN),
]


def test_rate_columns():
    table = pd.DataFrame({"coded_bytes": [1000.0, 250.0], "bpp": [8 * 1000 / (640 * 480), 8 * 250 / (640 * 480)],
                          "delta_ap_low": [-1.0, 0.5], "delta_ap_high": [0.5, 2.0]})
    still = with_rates(table, None)
    assert still["kB"].tolist() == [1.0, 0.25] and "kbps" not in still
    assert still["delta_noise"].tolist() == [True, False]
    video = with_rates(table, 25.0)
    # 1000 bytes a frame at 25 frames/s = 200,000 bit/s = 200 kbps; kbps = bpp · pixels · fps / 1000.
    assert video["kbps"].tolist() == pytest.approx([200.0, 50.0])
    assert video["kbps"].tolist() == pytest.approx((video["bpp"] * 640 * 480 * 25 / 1000).tolist())


def test_plain_ticks():
    assert [_plain(v) for v in (0.002, 0.05, 0.5, 1, 20, 5000)] == ["0.002", "0.05", "0.5", "1", "20", "5,000"]


def test_report_figures_and_bd_tables(tmp_path, capsys):
    store = write_store(tmp_path / "r", CONFIGS, n_images=6)
    parser = argparse.ArgumentParser()
    report_command.add_arguments(parser)
    figures = tmp_path / "figures"
    csv = tmp_path / "r.csv"
    assert report_command.run(parser.parse_args([str(store.root), "--figures", str(figures), "--csv", str(csv)])) == 0
    names = sorted(p.name for p in figures.iterdir())
    assert names == ["bd.md", "bd.tex", "rate-accuracy-toy.pdf", "rate-accuracy-toy.png", "rate-accuracy-toy.svg"]
    assert (figures / "rate-accuracy-toy.pdf").read_bytes()[:5] == b"%PDF-"
    assert (figures / "rate-accuracy-toy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = (figures / "rate-accuracy-toy.svg").read_text()
    assert "bits per pixel, bpp" in svg and "95% CI" in svg and "uncompressed" in svg
    # The same bytes on a second run: no timestamps in the files.
    first = (figures / "rate-accuracy-toy.svg").read_bytes()
    report_command.run(parser.parse_args([str(store.root), "--figures", str(figures)]))
    assert (figures / "rate-accuracy-toy.svg").read_bytes() == first
    out = capsys.readouterr()
    assert "wrote 5 files" in out.err
    rows = pd.read_csv(csv)
    assert rows["bpp"].tolist()[1:] == pytest.approx([8 * b / (WIDTH * HEIGHT) for b in (1000, 500, 250, 100)])
    assert rows["kB"].tolist()[1:] == pytest.approx([1.0, 0.5, 0.25, 0.1])


def test_bd_table_as_latex_and_markdown():
    bd = pd.DataFrame({"model": ["m_1"], "variant": ["fp32"], "split": [-2], "codec": ["jpeg"], "points": [6],
                       "bd_rate": [-12.345], "bd_ap": [float("nan")], "anchor": ["hevc"], "anchor_split": [-2]})
    md = bd_markdown(bd)
    assert "| m_1 | fp32 | input | jpeg | 6 | -12.35 | – |" in md and "remote inference with hevc" in md
    tex = bd_latex(bd)
    assert r"m\_1 & fp32 & input & jpeg & 6 & $-$12.35 & -- \\" in tex
    assert tex.count(r"\toprule") == 1 and r"\end{tabular}" in tex
