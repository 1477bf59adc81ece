"""`splitsweep inspect`: table, JSON, --valid-only, --input-shape, errors; once as a real process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

from orchestrator.cli import main
from orchestrator.commands.inspect import human_bytes
from tests import graphs

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("models")
    paths = {}
    for name in ("chain", "side_input", "symbolic_batch", "resnet_fpn"):
        paths[name] = folder / f"{name}.onnx"
        onnx.save(getattr(graphs, name)(), str(paths[name]))
    return paths


def test_table(saved, capsys) -> None:
    assert main(["inspect", str(saved["chain"])]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == f"{saved['chain']}: 13 nodes"
    assert "x float32[1,3,16,16]" in lines[1] and "y float32[1,8]" in lines[2]
    row = next(line for line in lines if line.split()[:3] == ["3", "Conv", "conv2"])
    assert row.split()[3:7] == ["2", "16.0", "KiB", "yes"]
    block = out[out.index(row):].split("\n     4 ")[0]  # the row and its continuation lines
    assert "relu1_out float32[1,8,16,16] 8.0 KiB" in block and "conv2_out float32[1,8,16,16] 8.0 KiB" in block
    assert max(len(line) for line in lines) <= 120  # fits a 120-column terminal
    assert next(line for line in lines if line.split()[:2] == ["0", "Constant"]).split()[3:6] == ["0", "0", "B"]
    assert "11 valid split points of 13: 1-11" in out
    assert "not valid: 0 (Constant 'half')" in out and "not valid: 12 (Identity 'out')" in out


def test_side_inputs_are_shown(saved, capsys) -> None:
    assert main(["inspect", str(saved["side_input"]), "--valid-only"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if "+ side inputs: scale float32[1,1,4] 16 B" in line]
    assert len(rows) == 11  # one per valid split (on its row or the row's continuation line)


def test_long_names_are_elided_in_the_middle_and_pipes_close_quietly(saved, monkeypatch) -> None:
    import os
    import sys

    from orchestrator.commands.inspect import elide, wrap_parts

    assert len(elide("x" * 300, 40)) == 40 and elide("short", 40) == "short"
    assert elide("backbone/stage3/conv_12", 11) == "backb…nv_12"
    assert wrap_parts("2 maps:", ["aaaa", "bbbb", "cccc"], 12) == ["2 maps: aaaa;", "bbbb; cccc"]
    # `inspect --json | head -1`: the reader has left; writing fails with EPIPE, which
    # ends the command quietly with 0 instead of a BrokenPipeError traceback.
    read_end, write_end = os.pipe()
    os.close(read_end)
    closed = open(write_end, "w", buffering=1)
    monkeypatch.setattr(sys, "stdout", closed)
    try:
        assert main(["inspect", str(saved["chain"]), "--json"]) == 0
    finally:
        monkeypatch.undo()
        closed.close()


def test_json_valid_only(saved, capsys) -> None:
    assert main(["inspect", str(saved["chain"]), "--json", "--valid-only"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["nodes"] == 13 and data["valid"] == list(range(1, 12)) and data["valid_ranges"] == "1-11"
    assert [p["split"] for p in data["split_points"]] == list(range(1, 12))
    p3 = data["split_points"][2]
    assert p3["split"] == 3 and p3["branches"] == 2 and p3["total_bytes"] == 16384 and p3["valid"]
    assert p3["tensors"][0] == {"name": "relu1_out", "dtype": "float32", "shape": [1, 8, 16, 16], "bytes": 8192,
                                "kind": "data", "measured": False}


def test_input_shape_option(saved, capsys) -> None:
    assert main(["inspect", str(saved["symbolic_batch"]), "--json"]) == 0
    loose = json.loads(capsys.readouterr().out)
    assert loose["split_points"][0]["total_bytes"] is None
    assert main(["inspect", str(saved["symbolic_batch"]), "--json", "--input-shape", "x=2x3x10x12"]) == 0
    fixed = json.loads(capsys.readouterr().out)
    assert fixed["split_points"][0]["tensors"][0]["shape"] == [2, 4, 10, 12]
    assert fixed["split_points"][0]["total_bytes"] == 2 * 4 * 10 * 12 * 4
    assert fixed["inputs"][0]["shape"] == [2, 3, 10, 12]


def test_errors_are_one_line_and_exit_2(saved, tmp_path, capsys) -> None:
    assert main(["inspect", str(tmp_path / "missing.onnx")]) == 2
    err = capsys.readouterr().err
    assert err == f"splitsweep: error: {tmp_path / 'missing.onnx'}: model file not found\n"
    assert main(["inspect", str(saved["symbolic_batch"]), "--input-shape", "images=1x3x8x8"]) == 2
    err = capsys.readouterr().err
    assert "input_shapes" in err and "(allowed: x)" in err and err.count("\n") == 1
    with pytest.raises(SystemExit) as exit_:
        main(["inspect", str(saved["chain"]), "--input-shape", "x=1xAx3"])
    assert exit_.value.code == 2
    assert "NAME=DxDx" in capsys.readouterr().err


def test_resnet_fpn_lists_all_split_points(saved, capsys) -> None:
    assert main(["inspect", str(saved["resnet_fpn"]), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    points = data["split_points"]
    assert data["nodes"] == len(points) == 1997
    assert data["valid_ranges"] == "0-1995" and points[-1]["valid"] is False
    end_of_stage1 = next(p for p in points if p["node_name"] == f"s1b{graphs.RESNET_FPN_STAGES[1][0] - 1}_relu")
    assert end_of_stage1["branches"] == 2
    assert [t["bytes"] for t in end_of_stage1["tensors"]] == [8 * 8 * 8 * 4, 12 * 4 * 4 * 4]
    assert end_of_stage1["total_bytes"] == 2816
    assert points[0]["tensors"][0] == {"name": "stem_out", "dtype": "float32", "shape": [1, 8, 16, 16], "bytes": 8192,
                                      "kind": "data", "measured": False}


def test_as_a_real_process(saved) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator", "inspect", str(saved["resnet_fpn"]), "--valid-only"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if line.strip()[:1].isdigit() and " yes " in line]
    assert len(rows) == 1996
    assert "1996 valid split points of 1997: 0-1995" in done.stdout.splitlines()


def test_not_onnx_as_a_real_process(tmp_path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_text("hello")
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator", "inspect", str(bad)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.startswith(f"splitsweep: error: {bad}: not an ONNX model")


@pytest.mark.parametrize(("n", "text"), [(None, "?"), (0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"),
                                         (1536, "1.5 KiB"), (5 * 2**20, "5.0 MiB"), (3 * 2**30, "3.0 GiB")])
def test_human_bytes(n, text) -> None:
    assert human_bytes(n) == text
