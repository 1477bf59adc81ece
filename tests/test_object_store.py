"""The object-store path against a real S3-compatible server on 127.0.0.1 (moto's standalone
server): a sweep with ``output: s3://…`` runs through the real CLI, is killed, resumes, and
its status, report and dashboard read the bucket — the same rows as the same sweep on disk."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow.compute as pc
import pytest

from orchestrator.results.store import ResultsStore, latest_rows
from tests.tinydet import tiny_detector, write_coco_folder, write_spec

ROOT = Path(__file__).resolve().parent.parent
BUCKET = "sweeps"
CODECS = "  none: {}\n  float16: {}\n  uniform: {bits: [8, 4]}\n  nncodec: {qp: [-26, -18]}\n"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "splitsweep-test", "AWS_SECRET_ACCESS_KEY": "splitsweep-test",
               "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3(monkeypatch_module):
    """An S3-compatible server on 127.0.0.1 with one bucket; the standard AWS variables set."""
    moto_server = pytest.importorskip("moto.server", reason="moto[server] is in the dev extra")
    import pyarrow.fs as pafs

    for key, value in CREDENTIALS.items():
        monkeypatch_module.setenv(key, value)
    port = _free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        endpoint = f"127.0.0.1:{port}"
        fs = pafs.S3FileSystem(endpoint_override=f"http://{endpoint}", scheme="http", allow_bucket_creation=True)
        fs.create_dir(BUCKET)
        yield endpoint
    finally:
        server.stop()


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def _uri(endpoint: str, prefix: str) -> str:
    return f"s3://{BUCKET}/{prefix}?endpoint_override={endpoint}&scheme=http"


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "orchestrator", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


def _rows(location: str) -> dict[str, tuple]:
    table = latest_rows(
        ResultsStore(location).read_rows(["task_id", "status", "coded_bytes", "detections", "finished_at"])
    )
    assert pc.all(pc.equal(table.column("status"), "ok")).as_py()
    dets = table.column("detections").to_pylist()
    return {t: (b, repr(d)) for t, b, d in zip(table.column("task_id").to_pylist(), table.column("coded_bytes").to_pylist(), dets)}


@pytest.mark.slow
def test_sweep_to_s3_killed_resumed_reported_and_shown(s3, tmp_path):
    size = 160  # ~200 KB cuts: long enough to be killed after its first part files
    model = tmp_path / "tinydet.onnx"
    model.write_bytes(tiny_detector(size=size).SerializeToString())
    images, ann = write_coco_folder(tmp_path / "data", n_images=10)
    extra = "execution: {workers: 1, flush_seconds: 0.2, chunk_tasks: 4}\n"
    uri = _uri(s3, "tiny/run")

    def spec(output, name):
        return write_spec(tmp_path, model=model, images=images, annotations=ann, output=output, codecs=CODECS,
                          extra=extra, size=size, name=name)  # fmt: skip

    remote, local = spec(uri, "remote.yaml"), spec(tmp_path / "local", "local.yaml")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator", "run", str(remote)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    store = ResultsStore(uri)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        if store.exists("rows") and store.part_files():
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.stdout.read().decode()[-2000:]
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = _rows(uri)

    resumed = _cli("run", str(remote))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"{len(partial)} of" in resumed.stderr and "already stored" in resumed.stderr, resumed.stderr[-2000:]
    done = _cli("run", str(local))
    assert done.returncode == 0, done.stderr[-2000:]

    a, b = _rows(uri), _rows(str(tmp_path / "local"))
    assert set(a) == set(b) and len(a) > len(partial) > 0
    assert a == b  # same bytes and detections as on disk: every codec here is deterministic
    ids = ResultsStore(uri).read_rows(["task_id"])["task_id"].to_pylist()
    assert len(ids) == len(set(ids))  # the kill duplicated nothing

    status = _cli("status", uri)
    assert status.returncode == 0, status.stderr
    assert f"{len(a)} ok" in status.stdout.replace(",", ""), status.stdout

    csv = tmp_path / "report.csv"
    report = _cli("report", uri, "--csv", str(csv))
    assert report.returncode == 0, report.stderr
    local_csv = tmp_path / "local.csv"
    assert _cli("report", str(tmp_path / "local"), "--csv", str(local_csv)).returncode == 0
    remote_table, local_table = pd.read_csv(csv), pd.read_csv(local_csv)
    varying = [c for c in remote_table.columns if c.endswith("_s") or c.endswith("_key")]
    assert varying and len(remote_table) == len(local_table) > 10
    # The report of the bucket is the report of the disk, but for the seconds each step took.
    pd.testing.assert_frame_equal(remote_table.drop(columns=varying), local_table.drop(columns=varying))

    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=60)
    at.session_state["results_location"] = uri
    at.session_state["view"] = "Table"
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    shown = [d.value for d in at.dataframe]
    assert shown and max(len(t) for t in shown) == len(remote_table)  # one row per configuration


def test_store_reads_and_writes_a_bucket(s3):
    """The store's primitives on the bucket: atomic-publish writes, reads, listing, existence."""
    store = ResultsStore(_uri(s3, "unit/store"))
    assert not store.exists("meta.json")
    store.write_json("meta.json", {"a": 1})
    store.write_bytes("rows/part-r0001-000000.parquet", b"x")
    assert store.read_json("meta.json") == {"a": 1}
    assert store.exists("rows")
    assert store.read_bytes("rows/part-r0001-000000.parquet") == b"x"
    assert store.path("meta.json") == f"{BUCKET}/unit/store/meta.json"


def test_sweep_into_a_bucket_resumes_and_reports_like_a_directory(s3, ray_local, tmp_path):
    from orchestrator.execution.sweep import SweepOptions, run_sweep
    from orchestrator.planning.spec import load_spec
    from orchestrator.reporting.report import build_report

    model = tmp_path / "tinydet.onnx"
    model.write_bytes(tiny_detector().SerializeToString())
    images, ann = write_coco_folder(tmp_path / "data", n_images=2)
    uri = _uri(s3, "unit/sweep")
    results = {}
    for name, output in (("remote", uri), ("local", tmp_path / "local")):
        spec = write_spec(tmp_path, model=model, images=images, annotations=ann, output=output, codecs=CODECS,
                          name=f"{name}.yaml")  # fmt: skip
        first = run_sweep(load_spec(spec), SweepOptions(workers=2))
        assert first.plan_counts["remaining"] == 0 and first.plan_counts["ok"] > 0
        if name == "remote":  # resume from the bucket: everything is found stored, nothing runs
            again = run_sweep(load_spec(spec), SweepOptions(workers=2))
            assert again.plan_counts["remaining"] == 0 and again.plan_counts["ok"] == first.plan_counts["ok"]
        results[name] = build_report(str(output)).table
    a, b = _rows(uri), _rows(str(tmp_path / "local"))
    assert a == b
    assert len(ResultsStore(uri).read_rows(["task_id"])) == len(a)  # the second run wrote no row
    # Equal but for the seconds each step took and the fingerprints of the finish times.
    varying = [c for c in results["local"].columns if c.endswith("_s") or c.endswith("_key")]
    pd.testing.assert_frame_equal(results["remote"].drop(columns=varying), results["local"].drop(columns=varying))
    assert ResultsStore(uri).exists("report/configs.parquet")
