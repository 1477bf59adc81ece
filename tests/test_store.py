"""The Parquet results store: atomic parts, resume state, damaged files, schema versions."""

from __future__ import annotations

import datetime as dt
import json
import os

import pyarrow.parquet as pq
import pytest

from orchestrator.results.schema import ROW_SCHEMA, SCHEMA_VERSION
from orchestrator.results.store import DamagedPartWarning, ResultsStore
from tasks.errors import ResultsError

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def row(task_id, status="ok", seconds=0, **extra):
    return {"task_id": task_id, "status": status, "finished_at": T0 + dt.timedelta(seconds=seconds),
            "detections": [{"category_id": 1, "bbox": [1.0, 2.0, 3.0, 4.0], "score": 0.5}], **extra}


@pytest.fixture
def store(tmp_path):
    s = ResultsStore(str(tmp_path / "res"))
    s.open_for_sweep(sweep="t").release()
    return s


def test_parts_are_numbered_per_run_and_read_back(store):
    w = store.writer(run=store.next_run(), flush_seconds=3600)
    w.add([row("a"), row("b", "failed", error="CodecError: x")])
    assert store.part_files() == []  # buffered, not yet visible
    w.close()
    assert [os.path.basename(p) for p in store.part_files()] == ["part-r0001-000001.parquet"]
    table = pq.read_table(store.part_files()[0])
    assert table.schema.equals(ROW_SCHEMA, check_metadata=False)
    assert store.task_status() == {"a": "ok", "b": "failed"}
    assert store.done_ids() == {"a", "b"}
    assert store.done_ids(retry_failed=True) == {"a"}
    assert store.next_run() == 2


def test_a_second_writer_of_one_run_numbers_on_and_replaces_nothing(store):
    # image selection and adaptive-search rounds execute a run in steps, a writer each
    run = store.next_run()
    first = store.writer(run=run, flush_seconds=3600)
    first.add([row("a")])
    first.close()
    second = store.writer(run=run, flush_seconds=3600)
    second.add([row("b")])
    second.close()
    assert [os.path.basename(p) for p in store.part_files()] == ["part-r0001-000001.parquet", "part-r0001-000002.parquet"]
    assert store.task_status() == {"a": "ok", "b": "ok"}


def test_flush_by_row_count_and_time(store):
    w = store.writer(run=1, flush_seconds=3600, flush_rows=2)
    w.add([row("a")])
    assert not w.due()
    w.add([row("b")])  # reaches flush_rows: written
    assert len(store.part_files()) == 1 and w.pending == 0
    w2 = store.writer(run=2, flush_seconds=0.0)
    w2.add([row("c")])
    assert len(store.part_files()) == 2


def write(store, run, rows):
    w = store.writer(run=run)
    w.add(rows)
    w.close()


def test_later_row_supersedes_failure(store):
    write(store, 1, [row("a", "failed")])
    write(store, 2, [row("a", "ok", seconds=5)])
    assert store.task_status() == {"a": "ok"}


def test_damaged_part_is_skipped_with_warning_and_kept(store):
    write(store, 1, [row("a")])
    write(store, 2, [row("b")])
    damaged = store.part_files()[0]
    with open(damaged, "r+b") as fh:
        fh.truncate(50)
    with pytest.warns(DamagedPartWarning, match="part-r0001-000001.parquet"):
        status = store.task_status()
    assert status == {"b": "ok"}  # a counts as not done: it will run again
    assert os.path.exists(damaged)


def test_other_schema_version_is_refused_and_untouched(tmp_path):
    loc = tmp_path / "old"
    loc.mkdir()
    meta = {"schema_version": SCHEMA_VERSION + 1, "sweep": "t"}
    (loc / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ResultsError, match=f"schema version {SCHEMA_VERSION + 1}") as info:
        ResultsStore(str(loc)).open_for_sweep(sweep="t")
    assert info.value.key == "schema_version"
    assert json.loads((loc / "meta.json").read_text()) == meta


def test_other_sweep_name_is_refused(store):
    with pytest.raises(ResultsError, match="holds sweep 't'"):
        ResultsStore(store.location).open_for_sweep(sweep="other")


def test_unwritable_location_is_a_clear_error(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as a user who can write anywhere (root)")
        with pytest.raises(ResultsError, match="cannot create|not writable"):
            ResultsStore(str(ro / "res")).open_for_sweep(sweep="t")
    finally:
        ro.chmod(0o700)


def test_file_as_location_is_a_clear_error(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ResultsError, match="not a results directory \\(it is a file\\)"):
        ResultsStore(str(f)).open_for_sweep(sweep="t")


def test_only_temp_files_of_dead_writers_are_removed(store):
    import socket
    import subprocess
    import sys

    rows_dir = os.path.dirname(store.path("rows", "x"))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = socket.gethostname()
    stale = os.path.join(rows_dir, f".part-r0001-000001.parquet.tmp-{host}-{int(dead.stdout)}-deadbeef")
    live = os.path.join(rows_dir, f".part-r0002-000001.parquet.tmp-{host}-{os.getpid()}-0badf00d")
    unknown = os.path.join(rows_dir, ".part-r0003-000001.parquet.tmp-deadbeef")  # old name: writer unknown, recent
    for path in (stale, live, unknown):
        with open(path, "wb") as fh:
            fh.write(b"half a file")
    assert store.part_files() == []
    ResultsStore(store.location).open_for_sweep(sweep="t").release()
    assert not os.path.exists(stale)
    assert os.path.exists(live) and os.path.exists(unknown)


def test_atomic_json_and_spec_copies(store):
    store.write_json("x.json", {"a": 1})
    assert store.read_json("x.json") == {"a": 1}
    store.save_spec("sweep: t\n", run=3)
    assert store.read_bytes("spec.yaml") == b"sweep: t\n"
    assert store.read_bytes("specs/run-0003.yaml") == b"sweep: t\n"
    assert store.next_run() == 4


def test_stored_tasks_decode_ids_and_agree_with_the_text_path(store):
    """stored_tasks holds ids as their 128 bits; the latest row per task, older parts'
    missing columns and the text fallback agree with read_rows + latest_rows."""
    import hashlib

    import pyarrow as pa

    from orchestrator.planning import idkeys
    from orchestrator.results.store import latest_rows

    ids = [hashlib.sha256(str(i).encode()).hexdigest()[:32] for i in range(5)]
    write(store, 1, [row(ids[0], "failed", image_hash="h0"), row(ids[1], image_hash="h1")])
    write(store, 2, [row(ids[0], "ok", seconds=3, image_hash="h0b"), row(ids[2], "failed", image_hash="h2")])
    # a part written before image_hash existed: the column reads as nulls
    old = pa.Table.from_pylist([row(ids[3], seconds=1)], schema=ROW_SCHEMA).drop_columns(["image_hash"])
    pq.write_table(old, os.path.join(os.path.dirname(store.part_files()[0]), "part-r0003-000001.parquet"))
    stored = store.stored_tasks(("status", "image_hash"))
    assert stored["task_id"].type == pa.binary(16)
    got = dict(zip(idkeys.hex_ids(idkeys.id_words(stored["task_id"])).astype(str),
                   zip(stored["status"].to_pylist(), stored["image_hash"].to_pylist())))
    assert got == {ids[0]: ("ok", "h0b"), ids[1]: ("ok", "h1"), ids[2]: ("failed", "h2"), ids[3]: ("ok", None)}
    text = latest_rows(store.read_rows(["task_id", "finished_at", "status", "image_hash"]))
    assert dict(zip(text["task_id"].to_pylist(), zip(text["status"].to_pylist(), text["image_hash"].to_pylist()))) == got
    assert idkeys.index_in(pa.array([ids[2], ids[4], ids[3]]), stored["task_id"]).tolist() == [
        list(got).index(ids[2]), -1, list(got).index(ids[3])]
    # an id that is not 32 hex digits (a foreign row): the column stays text, same answers
    write(store, 4, [row("not-a-task-id", image_hash="x")])
    stored = store.stored_tasks(("status",))
    assert stored["task_id"].type == pa.string() and set(stored["task_id"].to_pylist()) == {*ids[:4], "not-a-task-id"}
