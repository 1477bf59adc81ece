"""Faults a cluster and a busy lab produce, through the real CLI: each case asserts the
one-line message, the exit code, and that nothing stored was lost or altered.

Fast cases call ``orchestrator.cli.main`` in this process (on the module's local Ray);
signals and concurrent drivers run ``python -m orchestrator`` as real subprocesses (slow).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from orchestrator.cli import main
from orchestrator.data.datasets import path_image_id
from orchestrator.results.lease import LEASE_FILE
from orchestrator.results.store import ResultsStore, latest_rows
from tests.tinydet import adapter_spec, photo, tiny_detector, write_coco_folder

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}


# -- helpers ------------------------------------------------------------------------------


def cli(capsys, *argv: str) -> tuple[int, list[str], str]:
    """Exit code, the non-empty stderr lines (progress bars aside) and stdout of one CLI call
    (`run` with one worker: starting actors is most of a tiny sweep's time)."""
    if argv[0] == "run" and "--workers" not in argv:
        argv = (*argv, "--workers", "1")
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    lines = [ln for ln in captured.err.splitlines() if ln.strip() and " tasks (" not in ln]
    return code, lines, captured.out


def tree_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file under root (names relative): what 'nothing changed' is checked with."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def write_png(path: Path, seed: int, *, width: int = 96, height: int = 80) -> None:
    Image.fromarray(photo(seed, width=width, height=height)).save(path)


def spec_file(root: Path, name: str, *, output: Path, dataset: str, model: Path, codecs: str = "  none: {}\n  float16: {}\n",
              sweep: str = "faults", extra: str = "", splits: str = "[3, 5]") -> Path:
    path = root / name
    path.write_text(f"""sweep: {sweep}
output: {output}
dataset: {dataset}
models:
  - name: tinydet
    path: {model}
    adapter: {json.dumps(adapter_spec())}
    splits: {splits}
codecs:
{codecs}
{extra}""")
    return path


def rows_of(location: Path) -> list[dict]:
    return latest_rows(ResultsStore(str(location)).read_rows()).to_pylist()


def nan_detector(path: Path) -> Path:
    """The tiny detector with its scores multiplied by NaN."""
    from onnx import helper, numpy_helper

    model = tiny_detector()
    for node in model.graph.node:
        if "scores" in node.output:
            node.output[:] = ["scores_raw"]
    model.graph.initializer.append(numpy_helper.from_array(np.array(np.nan, np.float32), "nan_c"))
    model.graph.node.append(helper.make_node("Mul", ["scores_raw", "nan_c"], ["scores"], name="nan_mul"))
    path.write_bytes(model.SerializeToString())
    return path


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A model, a COCO folder (one truncated PNG) and a finished results store on it."""
    root = tmp_path_factory.mktemp("faults")
    model = root / "tinydet.onnx"
    model.write_bytes(tiny_detector().SerializeToString())
    images, ann = write_coco_folder(root / "coco", n_images=3)
    coco = f"{{type: coco, images: {images}, annotations: {ann}}}"
    return root, model, coco


@pytest.fixture(scope="module")
def finished(lab, ray_local):
    """A results store of a finished sweep (3 images × 5 tasks, all ok), built once."""
    root, model, coco = lab
    out = root / "finished"
    spec = spec_file(root, "finished.yaml", output=out, dataset=coco, model=model)
    assert main(["run", str(spec), "--workers", "1"]) == 0
    return out


# -- stable image identity ----------------------------------------------------------------


def test_folder_images_added_removed_renamed_replaced_keep_their_rows(tmp_path, ray_local, capsys):
    model = tmp_path / "tinydet.onnx"
    model.write_bytes(tiny_detector().SerializeToString())
    folder = tmp_path / "photos"
    folder.mkdir()
    write_png(folder / "b.png", 2, width=64, height=64)
    write_png(folder / "c.png", 3)
    out = tmp_path / "res"
    spec = spec_file(tmp_path, "s.yaml", output=out, dataset="{type: folder, path: photos}", model=model,
                     extra="evaluation: {mode: reference}\n")
    per_image = 5  # baseline + 2 splits × 2 codecs

    def check_rows_belong_to_their_files():
        """Every stored row's id, size and content hash are those of the file with that id now
        (or of a file that was there when it ran, for images the plan no longer has)."""
        rows = rows_of(out)
        files = {path_image_id(p.name): p for p in folder.iterdir()}
        for r in rows:
            if r["image_id"] in files:
                p = files[r["image_id"]]
                with Image.open(p) as im:
                    assert (r["image_width"], r["image_height"]) == im.size, p.name
                assert r["image_hash"] == hashlib.sha256(p.read_bytes()).hexdigest()[:32], p.name
        return rows

    assert cli(capsys, "run", spec)[0] == 0
    first = {r["task_id"]: r for r in check_rows_belong_to_their_files()}
    assert len(first) == 2 * per_image

    # Added: a.png sorts first; b.png and c.png keep their ids and their rows.
    write_png(folder / "a.png", 4)
    code, err, out_text = cli(capsys, "run", spec)
    assert code == 0 and any(f"resume: {2 * per_image} of {3 * per_image} tasks already stored" in ln for ln in err)
    rows = {r["task_id"]: r for r in check_rows_belong_to_their_files()}
    assert {t: rows[t] for t in first} == first  # untouched
    assert {r["image_id"] for r in rows.values()} == {path_image_id(n) for n in ("a.png", "b.png", "c.png")}

    # Removed: nothing runs, status counts only the planned images, stored rows stay.
    (folder / "c.png").unlink()
    code, err, _ = cli(capsys, "run", spec)
    assert code == 0 and any(f"resume: {2 * per_image} of {2 * per_image} tasks" in ln for ln in err)
    assert len(rows_of(out)) == 3 * per_image
    code, _, status = cli(capsys, "status", out)
    assert code == 0 and f"{2 * per_image} ok, 0 failed, 0 remaining of {2 * per_image} tasks" in status

    # Renamed: a new name is a new image; the old id is no longer planned.
    (folder / "b.png").rename(folder / "d.png")
    code, err, _ = cli(capsys, "run", spec)
    assert code == 0 and any(f"resume: {per_image} of {2 * per_image} tasks" in ln for ln in err)
    check_rows_belong_to_their_files()

    # Replaced in place: same name, other content → its stored rows are run again, said once.
    write_png(folder / "a.png", 9, width=64, height=48)
    code, err, _ = cli(capsys, "run", spec)
    changed = [ln for ln in err if "content changed" in ln]
    assert code == 0 and len(changed) == 1 and f"{per_image} stored tasks of 1 image(s)" in changed[0]
    rows = check_rows_belong_to_their_files()
    a = [r for r in rows if r["image_id"] == path_image_id("a.png")]
    assert len(a) == per_image and all(r["image_width"] == 64 and r["image_height"] == 48 for r in a)
    ids = ResultsStore(str(out)).read_rows(["task_id"])["task_id"].to_pylist()
    assert max(Counter(ids).values()) == 2  # a.png's tasks: the old rows and the re-run, nothing else twice


def test_results_of_the_previous_schema_are_refused_untouched(finished, tmp_path, capsys):
    old = tmp_path / "old"
    shutil.copytree(finished, old)
    meta = json.loads((old / "meta.json").read_text())
    (old / "meta.json").write_text(json.dumps({**meta, "schema_version": 1}))
    before = tree_hashes(old)
    spec = spec_file(tmp_path, "old.yaml", output=old, dataset="{type: demo}", model=tmp_path / "missing.onnx")
    # the store is checked by status / report / run alike
    for argv in (("status", old), ("report", old)):
        code, err, _ = cli(capsys, *argv)
        assert code == 2 and len(err) == 1 and "schema version 1" in err[0], err
    assert tree_hashes(old) == before
    assert spec.exists()


# -- exit codes ---------------------------------------------------------------------------


def test_exit_codes_all_ok_some_failed_bad_input(lab, finished, tmp_path, ray_local, capsys):
    root, model, _ = lab
    # all ok (and resumed: nothing to do) → 0
    code, err, out = cli(capsys, "run", root / "finished.yaml")
    assert code == 0 and "15 ok, 0 failed" in out
    # some failed: one truncated image among three → 3, last line: count and the most common error
    images, ann = write_coco_folder(tmp_path / "coco", n_images=3, corrupt=(2,))
    spec = spec_file(tmp_path, "some.yaml", output=tmp_path / "some", model=model,
                     dataset=f"{{type: coco, images: {images}, annotations: {ann}}}")
    code, err, out = cli(capsys, "run", spec)
    assert code == 3, err
    assert err[-1].startswith("splitsweep: 5 of 15 tasks failed; most common error (5×): DataError:")
    assert "img002.png" in err[-1]
    # --retry-failed: the same image fails again → still 3
    assert cli(capsys, "run", spec, "--retry-failed")[0] == 3
    # bad input → 2, one line
    bad = tmp_path / "bad.yaml"
    bad.write_text(spec.read_text().replace("codecs:", "codecz:"))
    code, err, _ = cli(capsys, "run", bad)
    assert code == 2 and len(err) == 1 and "codecz" in err[0]


def test_nan_model_outputs_are_failed_rows_with_the_reason(lab, tmp_path, ray_local, capsys):
    root, _, coco = lab
    spec = spec_file(tmp_path, "nan.yaml", output=tmp_path / "nan", dataset=coco, model=nan_detector(tmp_path / "nan.onnx"))
    code, err, _ = cli(capsys, "run", spec)
    assert code == 3
    rows = rows_of(tmp_path / "nan")
    assert len(rows) == 15 and {r["status"] for r in rows} == {"failed"}
    assert all("model output 'scores' has 6 of 6 values NaN" in r["error"] for r in rows)
    assert "ModelError: model output 'scores'" in err[-1]


# -- `splitsweep demo`: the exit codes of `run` ------------------------------------------


def test_demo_exit_codes_follow_run(lab, finished, tmp_path, ray_local, capsys):
    """The demo's closing step on real sweeps (the full demo is too slow for this suite):
    0 all ok, 3 with the count and most common error; a foreign --output is refused with
    2 before anything is fetched; interruptions map to 130 / 143 with the resume hint."""
    from orchestrator.cli import exit_code
    from orchestrator.commands.demo import finish
    from orchestrator.execution.sweep import SweepOptions, Terminated, run_sweep
    from orchestrator.planning.spec import load_spec

    root, model, _ = lab
    ok = run_sweep(load_spec(root / "finished.yaml"), SweepOptions(workers=1))
    capsys.readouterr()
    assert finish(ok, shown=str(finished)) == 0
    captured = capsys.readouterr()
    assert "15 ok, 0 failed of 15 tasks" in captured.out and "splitsweep:" not in captured.err

    images, ann = write_coco_folder(tmp_path / "coco", n_images=3, corrupt=(2,))
    spec = spec_file(tmp_path, "some.yaml", output=tmp_path / "some", model=model,
                     dataset=f"{{type: coco, images: {images}, annotations: {ann}}}")
    some = run_sweep(load_spec(spec), SweepOptions(workers=1))
    capsys.readouterr()
    assert finish(some, shown="some") == 3
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("splitsweep: 5 of 15 tasks failed; most common error (5×): DataError:") and "img002.png" in last

    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine\n")
    before = tree_hashes(foreign)
    code, err, out = cli(capsys, "demo", "--output", foreign)
    assert code == 2 and len(err) == 1 and "not a splitsweep results location" in err[0] and str(foreign) in err[0]
    assert tree_hashes(foreign) == before and not out

    assert exit_code(Terminated(), command="demo") == 143
    assert exit_code(KeyboardInterrupt(), command="demo") == 130
    assert capsys.readouterr().err.splitlines() == [
        "splitsweep: interrupted by SIGTERM; every row finished so far is stored (run the same command again to resume)",
        "splitsweep: interrupted by Ctrl-C; every row finished so far is stored (run the same command again to resume)",
    ]


# -- bad images ---------------------------------------------------------------------------


def test_zero_byte_and_truncated_png_fail_only_their_tasks(tmp_path, ray_local, capsys):
    model = tmp_path / "tinydet.onnx"
    model.write_bytes(tiny_detector().SerializeToString())
    folder = tmp_path / "photos"
    folder.mkdir()
    write_png(folder / "good.png", 1)
    (folder / "zero.png").write_bytes(b"")
    write_png(folder / "cut.png", 2)
    (folder / "cut.png").write_bytes((folder / "cut.png").read_bytes()[:40])  # header truncated
    spec = spec_file(tmp_path, "s.yaml", output=tmp_path / "res", dataset="{type: folder, path: photos}", model=model,
                     extra="evaluation: {mode: reference}\n")
    code, err, out = cli(capsys, "validate", spec)
    assert code == 0 and "2 image(s) unreadable" in out
    warned = {Path(ln.split(": ")[2]).name for ln in err if ln.startswith("splitsweep: warning:")}
    assert warned == {"zero.png", "cut.png"}
    code, err, _ = cli(capsys, "run", spec)
    assert code == 3
    by_image = {}
    for r in rows_of(tmp_path / "res"):
        by_image.setdefault(r["image_id"], set()).add(r["status"])
    assert by_image == {path_image_id("good.png"): {"ok"}, path_image_id("zero.png"): {"failed"},
                        path_image_id("cut.png"): {"failed"}}


# -- the results location -----------------------------------------------------------------


def test_output_on_a_foreign_directory_is_refused_and_untouched(lab, tmp_path, capsys):
    root, model, coco = lab
    foreign = tmp_path / "mine"
    (foreign / "rows").mkdir(parents=True)
    (foreign / "spec.yaml").write_text("my own spec\n")
    (foreign / "plan.parquet").write_bytes(b"my plan")
    (foreign / ".notes.tmp-0badf00d").write_text("in flight")
    (foreign / "rows" / "data.csv").write_text("1,2\n")
    before = tree_hashes(foreign)
    spec = spec_file(tmp_path, "s.yaml", output=foreign, dataset=coco, model=model)
    code, err, _ = cli(capsys, "run", spec)
    assert code == 2 and len(err) == 1
    assert "not empty and is not a splitsweep results location" in err[0] and str(foreign) in err[0]
    assert tree_hashes(foreign) == before
    assert sorted(p.name for p in foreign.iterdir()) == [".notes.tmp-0badf00d", "plan.parquet", "rows", "spec.yaml"]


def test_status_and_report_errors_are_one_line(finished, tmp_path, capsys):
    # status on a damaged plan.parquet
    damaged = tmp_path / "damaged"
    shutil.copytree(finished, damaged)
    (damaged / "plan.parquet").write_bytes((damaged / "plan.parquet").read_bytes()[:100])
    # a Parquet file of another schema in rows/
    foreign = tmp_path / "foreign"
    shutil.copytree(finished, foreign)
    pq.write_table(pa.table({"task_id": [1, 2], "x": [0.5, 1.5]}), foreign / "rows" / "part-r0099-000001.parquet")
    stores = {p: tree_hashes(p) for p in (damaged, foreign, finished)}
    cases = [
        (("status", damaged), "plan.parquet is damaged"),
        (("status", finished / "meta.json"), "not a results directory (it is a file)"),
        (("report", finished / "meta.json"), "not a results directory (it is a file)"),
        (("report", finished, "--csv", finished / "meta.json" / "sub" / "out.csv"), "cannot write the CSV file"),
        (("report", foreign), "not a task-row part file (column task_id is int64, expected string)"),
    ]
    for argv, message in cases:
        code, err, _ = cli(capsys, *argv)
        assert code == 2 and len(err) == 1, (argv, err)
        assert err[0].startswith("splitsweep: error: ") and message in err[0], (argv, err)
    for p, before in stores.items():
        if p == finished:  # report rewrote nothing but its own report file
            after = tree_hashes(p)
            assert {k: v for k, v in after.items() if not k.startswith("report/")} == \
                   {k: v for k, v in before.items() if not k.startswith("report/")}
        else:
            assert tree_hashes(p) == before, p


def _hold_lease(location: Path) -> subprocess.Popen:
    """Another driver holding the lease: a real process on this host."""
    code = ("import sys, time; from orchestrator.results.store import ResultsStore; "
            "lease = ResultsStore(sys.argv[1]).open_for_sweep(sweep='faults'); print('held', flush=True); time.sleep(600)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(location)], env=ENV, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_second_driver_is_refused_naming_the_holder(finished, tmp_path, capsys):
    store = tmp_path / "held"
    shutil.copytree(finished, store)
    holder = _hold_lease(store)
    try:
        before = {k: v for k, v in tree_hashes(store).items() if k != LEASE_FILE}
        spec = (finished.parent / "finished.yaml").read_text().replace(str(finished), str(store))
        (tmp_path / "s.yaml").write_text(spec)
        code, err, _ = cli(capsys, "run", tmp_path / "s.yaml")
        assert code == 2 and len(err) == 1, err
        assert f"another splitsweep run is writing here: {socket.gethostname()} pid {holder.pid}" in err[0]
        assert {k: v for k, v in tree_hashes(store).items() if k != LEASE_FILE} == before
    finally:
        holder.kill()
        holder.wait()


def test_stale_lease_of_a_dead_driver_is_taken_over(finished, tmp_path, ray_local, capsys):
    store = tmp_path / "stale"
    shutil.copytree(finished, store)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lease = {"host": socket.gethostname(), "pid": int(dead.stdout), "started_at": "2026-01-01T00:00:00+00:00",
             "heartbeat": time.time(), "run": 1, "token": "x"}
    (store / LEASE_FILE).write_text(json.dumps(lease))  # kill -9 leaves it behind; its flock is gone
    rows_before = tree_hashes(store / "rows")
    spec = (finished.parent / "finished.yaml").read_text().replace(str(finished), str(store))
    (tmp_path / "s.yaml").write_text(spec)
    code, err, _ = cli(capsys, "run", tmp_path / "s.yaml")
    assert code == 0, err
    took = [ln for ln in err if "taking over the stale lease" in ln]
    assert len(took) == 1 and f"pid {lease['pid']}" in took[0] and "its process is gone" in took[0]
    assert tree_hashes(store / "rows") == rows_before  # nothing to run, nothing rewritten
    assert not (store / LEASE_FILE).exists()  # released at the end
    assert (store / "specs" / "run-0002.yaml").exists()  # the run number came from the lease


def _foreign_holder(location: Path) -> bytes:
    """What another driver writes when it takes the lease (another host of a network
    filesystem, where flock does not reach): its own host, pid, run and token."""
    from orchestrator.results.lease import Holder

    ours = Holder.parse((location / LEASE_FILE).read_bytes())
    return Holder("elsewhere", 4242, "2026-01-02T03:04:05+00:00", time.time(), ours.run + 1, "theirs").to_bytes()


def test_lease_taken_mid_run_stops_the_run_and_stores_nothing_further(lab, tmp_path, ray_local, capsys):
    from orchestrator.cli import EXIT_LEASE_LOST, exit_code
    from orchestrator.execution.sweep import SweepOptions, run_sweep
    from orchestrator.planning.plan import build_plan
    from orchestrator.planning.spec import load_spec
    from tasks.errors import LeaseLostError

    root, model, coco = lab
    out = tmp_path / "res"
    spec = load_spec(spec_file(tmp_path, "s.yaml", output=out, dataset=coco, model=model,
                               codecs="  none: {}\n  float16: {}\n  uniform: {bits: [8, 6, 4, 2]}\n",
                               extra="execution: {workers: 1, flush_seconds: 0.001, chunk_tasks: 1}\n"))
    planned = len(build_plan(spec).tasks)
    store = ResultsStore(str(out))
    taken: dict = {}
    calls = []

    def take_when_stored(rows):
        calls.append(len(rows))
        if not taken and store.exists("rows") and store.part_files():
            taken["parts"] = tree_hashes(out / "rows")
            taken["lease"] = _foreign_holder(out)
            (out / LEASE_FILE).write_bytes(taken["lease"])  # rewritten in place, as the other host does
            taken["call"] = len(calls)

    with pytest.raises(LeaseLostError) as raised:
        run_sweep(spec, SweepOptions(workers=1, on_rows=take_when_stored))
    assert taken, "the sweep finished before any part file was stored"
    # dispatching stopped: at most the units already in flight came back after the take-over
    assert len(calls) - taken["call"] <= 2
    # nothing published after the take-over; what was stored is intact and not duplicated
    assert tree_hashes(out / "rows") == taken["parts"]
    ids = [r["task_id"] for r in ResultsStore(str(out)).read_rows(["task_id"]).to_pylist()]
    assert 0 < len(ids) == len(set(ids)) < planned
    # the new holder's lease is left alone (not removed by our release)
    assert (out / LEASE_FILE).read_bytes() == taken["lease"]
    # the CLI's line and code
    assert exit_code(raised.value, command="run") == EXIT_LEASE_LOST == 4
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("splitsweep:")]
    assert len(err) == 1 and err[0].startswith(f"splitsweep: error: {out}: lease: another driver took this run's lease")
    assert "elsewhere pid 4242, started 2026-01-02T03:04:05+00:00" in err[0] and "stores nothing further" in err[0]


def test_local_lease_notices_a_new_holder_and_leaves_its_lease(tmp_path):
    from orchestrator.results.lease import Holder, Lease
    from tasks.errors import LeaseLostError

    store = ResultsStore(str(tmp_path / "res"))
    lease = store.open_for_sweep(sweep="l")
    try:
        # removed by hand and nobody else took it: the heartbeat takes it back
        (tmp_path / "res" / LEASE_FILE).unlink()
        lease.heartbeat()
        assert lease.lost is None
        assert Holder.parse((tmp_path / "res" / LEASE_FILE).read_bytes()).token == lease.holder.token
        lease.verify()
        # removed and re-created by another driver (a new file, its own flock): lost to it
        (tmp_path / "res" / LEASE_FILE).unlink()
        other = Lease.acquire(ResultsStore(str(tmp_path / "res")), next_run=lambda: 9)
        try:
            lease.heartbeat()
            assert lease.lost is not None and f"pid {os.getpid()}" in lease.lost and "run 9" in lease.lost
            with pytest.raises(LeaseLostError, match="run 9"):
                lease.verify()
            with pytest.raises(LeaseLostError):
                store.writer(run=lease.run, lease=lease).add([{"task_id": "x"}])
            lease.release()
            assert Holder.parse((tmp_path / "res" / LEASE_FILE).read_bytes()).token == other.holder.token
        finally:
            other.release()
        assert not (tmp_path / "res" / LEASE_FILE).exists()
    finally:
        lease.release()


def test_report_describes_the_current_plan(lab, tmp_path, ray_local, capsys):
    root, model, coco = lab
    out = tmp_path / "res"
    spec = spec_file(tmp_path, "s.yaml", output=out, dataset=coco, model=model)
    assert cli(capsys, "run", spec)[0] == 0
    # the same sweep name, fewer images and fewer codecs
    fewer = spec_file(tmp_path, "fewer.yaml", output=out, model=model, codecs="  none: {}\n",
                      dataset=coco.replace("}", ", limit: 2}"))
    assert cli(capsys, "run", fewer)[0] == 0
    code, err, table = cli(capsys, "report", out, "--format", "json")
    assert code == 0
    configs = json.loads(table)["configs"]
    assert {c["codec"] for c in configs} == {"none"} and {c["n_images"] for c in configs} == {2}
    left = [ln for ln in err if "not in the current plan" in ln]
    assert left == ["splitsweep: left out 2 stored configurations and 1 image not in the current plan "
                    "(9 stored rows); --all to include them"]
    code, err, table = cli(capsys, "report", out, "--format", "json", "--all")
    configs = json.loads(table)["configs"]
    assert code == 0 and len(configs) == 5 and {c["n_images"] for c in configs} == {3}
    assert not [ln for ln in err if "current plan" in ln]


# -- signals and concurrent drivers (real subprocesses) -----------------------------------


def _slow_spec(tmp_path: Path, name: str) -> Path:
    """A sweep that lasts tens of seconds on 2 cores: big cut tensors, NNCodec, small chunks."""
    from tests.tinydet import write_spec

    size = 192
    model = tmp_path / "big.onnx"
    if not model.exists():
        model.write_bytes(tiny_detector(size=size).SerializeToString())
    images, ann = write_coco_folder(tmp_path / "data", n_images=6)
    codecs = "  none: {}\n  float16: {}\n  uniform: {bits: [8, 2]}\n  nncodec: {qp: [-30, -26, -22, -18, -14]}\n"
    return write_spec(tmp_path, model=model, images=images, annotations=ann, output=tmp_path / name, codecs=codecs,
                      extra="execution: {workers: 1, flush_seconds: 0.2, chunk_tasks: 4}\n", size=size,
                      name=f"{name}.yaml")


def _start(spec: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "orchestrator", "run", str(spec)], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


@pytest.mark.slow
@pytest.mark.parametrize("signum, code, word", [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGINT, 130, "Ctrl-C")])
def test_signal_mid_sweep_stops_cleanly_and_resumes(tmp_path, signum, code, word):
    spec = _slow_spec(tmp_path, "res")
    store = ResultsStore(str(tmp_path / "res"))
    proc = _start(spec)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if store.exists("rows") and len(store.part_files()) >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read()[-2000:]
    os.kill(proc.pid, signum)  # the driver only, as SLURM / Kubernetes / a terminal do
    _, err = proc.communicate(timeout=120)
    lines = [ln for ln in err.splitlines() if ln.strip() and " tasks (" not in ln]
    assert proc.returncode == code, err[-3000:]
    assert lines[-1] == (f"splitsweep: interrupted by {word}; every row finished so far is stored "
                         "(run the same command again to resume)")
    assert "Traceback" not in err and "StackTrace" not in err and "stack trace" not in err.lower()
    partial = ResultsStore(str(tmp_path / "res")).read_rows(["task_id"])["task_id"].to_pylist()
    assert 0 < len(partial) == len(set(partial))
    assert not (tmp_path / "res" / LEASE_FILE).exists()  # lease released
    resumed = subprocess.run([sys.executable, "-m", "orchestrator", "run", str(spec)], env=ENV,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0 and f"resume: {len(partial)} of " in resumed.stderr, resumed.stderr[-2000:]
    ids = ResultsStore(str(tmp_path / "res")).read_rows(["task_id"])["task_id"].to_pylist()
    assert len(ids) == len(set(ids)) and set(partial) <= set(ids)


@pytest.mark.slow
def test_two_drivers_started_together_one_is_refused(tmp_path):
    from orchestrator.planning.plan import build_plan
    from orchestrator.planning.spec import load_spec

    spec = _slow_spec(tmp_path, "res")
    procs = [_start(spec), _start(spec)]
    results = [p.communicate(timeout=600) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], [r[1][-1500:] for r in results]
    refused = next(err for p, (_, err) in zip(procs, results) if p.returncode == 2)
    lines = [ln for ln in refused.splitlines() if ln.strip()]
    assert len(lines) == 1 and "another splitsweep run is writing here" in lines[0]
    ids = ResultsStore(str(tmp_path / "res")).read_rows(["task_id"])["task_id"].to_pylist()
    planned = {t.task_id for t in build_plan(load_spec(spec)).tasks}
    assert len(ids) == len(set(ids)) and set(ids) == planned  # no duplicate, no lost row
    parts = sorted(p.name for p in (tmp_path / "res" / "rows").iterdir())
    assert all(p.startswith("part-r0001-") for p in parts)  # one run number


@pytest.mark.slow
def test_local_ray_listens_on_loopback_only():
    import ray

    from orchestrator.execution.execute import RayOptions, connect

    ray.shutdown()
    started = connect(RayOptions(num_cpus=1))
    try:
        assert started
        assert ray.get_runtime_context().gcs_address.startswith("127.0.0.1:")
        assert ray.util.get_node_ip_address() == "127.0.0.1"
        mine = _descendants(os.getpid())
        listening = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True).stdout.splitlines()
        ours = [ln.split()[3] for ln in listening if any(f"pid={p}," in ln for p in mine)]
        assert ours and all(addr.rsplit(":", 1)[0] in ("127.0.0.1", "[::ffff:127.0.0.1]") for addr in ours), ours
    finally:
        ray.shutdown()


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                ppid = int(Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d))
    out, todo = set(), [pid]
    while todo:
        p = todo.pop()
        out.add(p)
        todo += children.get(p, [])
    return out


@pytest.mark.slow
def test_sigterm_to_dashboard_stops_streamlit(finished, tmp_path):
    port = 8591
    log = tmp_path / "dashboard.log"
    with open(log, "w") as fh:  # a file, not a pipe: Streamlit's own output must never block on a full pipe
        proc = subprocess.Popen([sys.executable, "-m", "orchestrator", "dashboard", str(finished), "--no-browser",
                                 "--port", str(port)], env=ENV, stdout=fh, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and "dashboard of" not in log.read_text() and proc.poll() is None:
        time.sleep(0.2)
    assert "dashboard of" in log.read_text(), log.read_text()[-2000:]
    children = _descendants(proc.pid) - {proc.pid}
    assert children
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 143
    time.sleep(0.5)
    alive = [p for p in children if Path(f"/proc/{p}").exists() and "Z" not in Path(f"/proc/{p}/stat").read_text().split()[2]]
    assert not alive


@pytest.fixture
def s3_location(monkeypatch):
    """A bucket on a real S3-compatible server (moto) on 127.0.0.1, as a pyarrow URI."""
    from moto.server import ThreadedMotoServer

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    try:
        import pyarrow.fs as pafs

        fs = pafs.S3FileSystem(endpoint_override=f"http://127.0.0.1:{port}", scheme="http", allow_bucket_creation=True,
                               access_key="test", secret_key="test", region="us-east-1")
        fs.create_dir("bucket")
        yield f"s3://bucket/res?endpoint_override=127.0.0.1:{port}&scheme=http&region=us-east-1"
    finally:
        server.stop()


def test_object_store_lease_refuses_a_second_driver_and_takes_over_a_stale_one(s3_location):
    from orchestrator.results.lease import Holder, Lease
    from tasks.errors import ResultsError

    store = ResultsStore(s3_location)
    first = store.open_for_sweep(sweep="s3")
    assert first.run == 1 and Holder.parse(store.read_bytes(LEASE_FILE)).pid == os.getpid()
    with pytest.raises(ResultsError, match=f"another splitsweep run is writing here: {socket.gethostname()} pid "):
        ResultsStore(s3_location).open_for_sweep(sweep="s3")
    first.heartbeat()
    first.release()
    assert not store.exists(LEASE_FILE)

    # A holder on another host that stopped beating 10 minutes ago: taken over, with a message.
    old = Holder("elsewhere", 4242, "2026-01-01T00:00:00+00:00", time.time() - 600, 7, "t")
    store.write_bytes(LEASE_FILE, old.to_bytes())
    said = io.StringIO()
    lease = Lease.acquire(store, next_run=lambda: 8, out=said, settle_s=0.2)
    try:
        assert "taking over the stale lease of elsewhere pid 4242" in said.getvalue()
        assert "no heartbeat for 600 s" in said.getvalue() or "no heartbeat for 60" in said.getvalue()
        assert lease.run == 8 and Holder.parse(store.read_bytes(LEASE_FILE)).token == lease.holder.token
        # …but a fresh holder on another host is never taken over
    finally:
        lease.release()
    store.write_bytes(LEASE_FILE, Holder("elsewhere", 4242, "x", time.time(), 9, "t").to_bytes())
    with pytest.raises(ResultsError, match="elsewhere pid 4242"):
        Lease.acquire(store, next_run=lambda: 10, settle_s=0.2)


def test_object_store_lease_lost_to_another_driver_stops_writes(s3_location):
    from orchestrator.results.lease import Holder
    from tasks.errors import LeaseLostError

    store = ResultsStore(s3_location.replace("/res?", "/lost?"))  # moto's state outlives one server
    lease = store.open_for_sweep(sweep="s3")
    writer = store.writer(run=lease.run, flush_seconds=60, lease=lease)
    theirs = Holder("elsewhere", 4242, "2026-01-02T03:04:05+00:00", time.time(), lease.run + 1, "theirs").to_bytes()
    store.write_bytes(LEASE_FILE, theirs)  # a driver that took over while this one was stalled
    lease.heartbeat()
    assert "elsewhere pid 4242" in (lease.lost or "")
    with pytest.raises(LeaseLostError, match="elsewhere pid 4242"):
        writer.due()
    writer.close()  # drops, writes nothing
    lease.release()
    assert store.read_bytes(LEASE_FILE) == theirs and not store.part_files()


@pytest.mark.slow
def test_lease_taken_from_a_running_cli_sweep_exits_4(tmp_path):
    spec = _slow_spec(tmp_path, "res")
    out = tmp_path / "res"
    store = ResultsStore(str(out))
    proc = _start(spec)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if store.exists("rows") and len(store.part_files()) >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read()[-2000:]
    theirs = _foreign_holder(out)
    (out / LEASE_FILE).write_bytes(theirs)
    taken_at = tree_hashes(out / "rows")
    _, err = proc.communicate(timeout=120)
    lines = [ln for ln in err.splitlines() if ln.strip() and " tasks (" not in ln]
    assert proc.returncode == 4, err[-3000:]
    assert lines[-1].startswith(f"splitsweep: error: {out}: lease: another driver took this run's lease")
    assert "elsewhere pid 4242" in lines[-1] and "Traceback" not in err
    # at most the one part being published while the file was rewritten; nothing after
    after = tree_hashes(out / "rows")
    assert {k: v for k, v in after.items() if k in taken_at} == taken_at and len(after) - len(taken_at) <= 1
    ids = store.read_rows(["task_id"])["task_id"].to_pylist()
    assert len(ids) == len(set(ids))
    assert (out / LEASE_FILE).read_bytes() == theirs
