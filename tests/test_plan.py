"""The columnar plan: task ids equal to the per-task reference (stores keep their ids),
units, resume masks, counts and plan.parquet's digest, on a varied plan without Ray."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pyarrow as pa
import pytest

from orchestrator.execution.execute import spread_units
from orchestrator.planning import taskids
from orchestrator.planning.plan import FAILED, OK, REMAINING, build_plan, task_id
from orchestrator.planning.spec import load_spec
from orchestrator.results.schema import SCHEMA_VERSION
from tests.tinydet import adapter_settings, tiny_detector, write_coco_folder

CODECS = """codecs:
  none: {}
  float16: {}
  uniform: {bits: [2, 8]}
  nncodec: {qp: [-20]}
  jpeg: {quality: [50, 90]}
"""


@pytest.fixture(scope="module")
def varied(tmp_path_factory):
    """2 models (different files), 2 variants each, 3 / 2 node splits, remote inference on
    one, 7 codec settings (an image codec among them), 3 images."""
    root = tmp_path_factory.mktemp("plan")
    for seed in (0, 1):
        (root / f"m{seed}.onnx").write_bytes(tiny_detector(seed=seed).SerializeToString())
    images, ann = write_coco_folder(root / "data", n_images=3)
    spec = root / "spec.yaml"
    spec.write_text(
        f"""sweep: varied
output: {root / "res"}
dataset: {{type: coco, images: {images}, annotations: {ann}}}
models:
  - name: a
    path: {root / "m0.onnx"}
    adapter: {json.dumps(adapter_settings())}
    variants: [fp32, fp16]
    splits: [input, 3, 5, 9]
  - name: b
    path: {root / "m1.onnx"}
    adapter: {json.dumps(adapter_settings())}
    variants: [fp32, {{prune-magnitude: {{sparsity: 0.5}}}}]
    splits: [-1, 3, 7]
{CODECS}"""
    )
    return build_plan(load_spec(spec))


def test_vectorised_ids_equal_the_per_task_reference(varied):
    plan = varied
    ids = plan.task_ids.to_pylist()
    expected = []
    for b in plan.blocks:
        for rec in plan.records:
            for split, setting in b.pairs:
                expected.append(task_id(model_hash=b.model.model_hash, adapter=b.model.adapter_canonical,
                                        variant=b.variant, split=split, setting=setting, image_id=rec.image_id))
    assert ids == expected
    splits = {s for b in plan.blocks for s, _ in b.pairs}
    assert {-2, -1, 3, 5, 7, 9} <= splits  # remote inference and the unsplit model are covered
    assert len(set(ids)) == len(ids) == plan.size == 3 * (2 * (1 + 2 + 3 * 5) + 2 * (1 + 2 * 5))
    # Task objects carry the same ids and fields, in plan order
    assert [t.task_id for t in plan.tasks] == ids
    assert plan.tasks[0].split == -1 and plan.tasks[1].split == -2 and plan.tasks[1].setting.codec == "jpeg"


def test_reference_id_is_the_hash_of_the_json_key(varied):
    """The key format of stores written since schema 2 (so existing stores resume)."""
    b = varied.blocks[0]
    split, setting = b.pairs[3]
    image_id = varied.records[1].image_id
    key = [SCHEMA_VERSION, b.model.model_hash, b.model.adapter_canonical, b.variant.name, b.variant.canonical,
           split, setting.codec, setting.canonical, image_id]
    want = hashlib.sha256(json.dumps(key, separators=(",", ":")).encode()).hexdigest()[:32]
    assert task_id(model_hash=b.model.model_hash, adapter=b.model.adapter_canonical, variant=b.variant, split=split,
                   setting=setting, image_id=image_id) == want
    assert varied.task_ids[1 * len(b.pairs) + 3].as_py() == want


def test_block_ids_with_unicode_and_large_image_ids():
    prefix = taskids.block_prefix(model_hash="ff" * 32, adapter='{"type":"x","name":"näive ✓"}', variant_name="fp32",
                                  variant_canonical="{}")
    pairs = [taskids.pair_part(-2, "jpeg", '{"quality":50}'), taskids.pair_part(12, "nncodec", '{"qp":-20}')]
    images = np.array([1, 2**52 + 7, 123456789012], dtype=np.int64)
    ids = taskids.ids_to_arrow(taskids.block_task_ids(prefix, pairs, images)).to_pylist()
    want = []
    for image in images.tolist():
        for split, codec, params in ((-2, "jpeg", '{"quality":50}'), (12, "nncodec", '{"qp":-20}')):
            key = taskids.task_id_key(model_hash="ff" * 32, adapter='{"type":"x","name":"näive ✓"}',
                                      variant_name="fp32", variant_canonical="{}", split=split, codec=codec,
                                      codec_canonical=params, image_id=image)
            want.append(hashlib.sha256(key.encode()).hexdigest()[:32])
    assert ids == want


def test_table_columns_match_the_tasks(varied):
    table = varied.to_table()
    assert table.column_names == ["task_id", "model", "variant", "split", "codec", "codec_params", "qp", "image_id"]
    rows = table.to_pylist()
    for t, r in zip(varied.tasks, rows):
        assert (r["task_id"], r["model"], r["variant"], r["split"], r["codec"], r["codec_params"], r["qp"],
                r["image_id"]) == (t.task_id, t.model, t.variant, t.split, t.setting.codec, t.setting.canonical,
                                   t.setting.qp, t.image_id)  # fmt: skip
    assert any(r["qp"] == -20 for r in rows) and table.schema.metadata[b"splitsweep.plan_digest"].decode() == varied.digest


def test_state_resume_and_units(varied):
    plan = varied
    ids = plan.task_ids.to_pylist()
    hashes = [f"h{r.image_id}" for r in plan.records]
    image_of = [t.image_id for t in plan.tasks]
    # stored: task 0 ok, task 1 failed, task 2 ok but its image changed, plus a task not in the plan
    stored = pa.table({
        "task_id": [ids[0], ids[1], ids[2], "0" * 32],
        "status": ["ok", "failed", "ok", "ok"],
        "image_hash": [f"h{image_of[0]}", f"h{image_of[1]}", "old", "x"],
    })  # fmt: skip
    state = plan.state(stored)
    assert state[:4].tolist() == [OK, FAILED, OK, REMAINING] and (state[3:] == REMAINING).all()
    assert plan.counts(state) == {"tasks": plan.size, "units": 4 * 3, "ok": 2, "failed": 1,
                                  "remaining": plan.size - 3}  # fmt: skip
    done, changed = plan.resume(stored, image_hashes=hashes)
    assert np.flatnonzero(done).tolist() == [0, 1] and np.flatnonzero(changed).tolist() == [2]
    done, changed = plan.resume(stored, image_hashes=hashes, retry_failed=True)
    assert np.flatnonzero(done).tolist() == [0] and np.flatnonzero(changed).tolist() == [2]

    units = plan.units(skip=done, chunk_tasks=5)
    assert sum(u.size for u in units) == plan.size - 1
    covered = [t.task_id for u in units for t in u.tasks]
    assert covered == ids[1:]  # plan order, nothing twice
    for u in units:  # one head run each: same model, variant and image
        assert {(t.model, t.variant, t.image_id) for t in u.tasks} == {u.head_key} and u.size <= 5
    # the same units from a collection of ids
    assert [u.positions.tolist() for u in plan.units(skip={ids[0]}, chunk_tasks=5)] == [
        u.positions.tolist() for u in units]  # fmt: skip
    # per configuration
    configs = plan.config_counts(state)
    assert sum(c["tasks"] for c in configs) == plan.size and sum(c["ok"] for c in configs) == 2
    assert all(c["tasks"] == 3 for c in configs)  # one per image


def test_sub_plans_keep_ids(varied):
    ids = varied.task_ids.to_pylist()
    keep = varied.records[1].image_id
    sub = varied.with_images([keep])
    assert set(sub.task_ids.to_pylist()) == {t.task_id for t in varied.tasks if t.image_id == keep}
    base = varied.baseline_only(model="b", variant="fp32")
    assert [t.task_id for t in base.tasks] == [t.task_id for t in varied.tasks
                                              if t.model == "b" and t.variant == "fp32" and t.split == -1]
    assert set(base.task_ids.to_pylist()) <= set(ids) and base.size == 3
    assert sub.digest != varied.digest and build_again_digest(varied) == varied.digest


def build_again_digest(plan) -> str:
    return build_plan(plan.spec).digest


def test_spread_units_gives_every_worker_a_piece(varied):
    units = varied.with_images([varied.records[0].image_id]).baseline_only().units()
    assert len(units) == 4 and not any(u.shared_head for u in units)
    assert spread_units(units, 3) == units  # enough units: unchanged (locality)
    two = varied.with_images([varied.records[0].image_id, varied.records[1].image_id])
    units = [u for u in two.units(chunk_tasks=1000) if u.model == "a" and u.variant == "fp32"]
    assert len(units) == 2 and units[0].size == 18
    pieces = spread_units(units, 6)
    assert len(pieces) == 6 and all(p.shared_head for p in pieces)
    assert sorted(i for p in pieces for i in p.positions.tolist()) == sorted(
        i for u in units for i in u.positions.tolist())  # every task once  # fmt: skip
    assert [p.size for p in pieces] == [6, 6, 6, 6, 6, 6]
    # never more pieces than tasks
    tiny = two.baseline_only(model="a", variant="fp32").units()
    assert [p.size for p in spread_units(tiny, 6)] == [1, 1]


def test_plan_parquet_written_only_when_the_plan_changes_and_its_ids_reused(varied, tmp_path):
    from orchestrator.results.planfile import reuse_stored_ids, write_plan
    from orchestrator.results.reading import read_plan
    from orchestrator.results.store import ResultsStore

    store = ResultsStore(str(tmp_path / "res"))
    assert write_plan(store, varied) is True
    path = tmp_path / "res" / "plan.parquet"
    before = path.stat().st_mtime_ns
    assert write_plan(store, build_plan(varied.spec)) is False and path.stat().st_mtime_ns == before
    fresh = build_plan(varied.spec)
    assert "id_words" not in fresh._cache
    assert reuse_stored_ids(store, fresh) and "id_words" in fresh._cache  # read back, not hashed
    assert fresh.task_ids.to_pylist() == varied.task_ids.to_pylist()
    assert read_plan(store)["task_id"].to_pylist() == varied.task_ids.to_pylist()
    # another plan (fewer images): its own ids, and the file is replaced
    other = varied.with_images([varied.records[0].image_id])
    assert not reuse_stored_ids(store, other) and "id_words" not in other._cache
    assert write_plan(store, other) is True and read_plan(store).num_rows == other.size


def test_id_keys_match_and_deduplicate_exactly():
    from orchestrator.planning import idkeys

    ids = [hashlib.sha256(str(i).encode()).hexdigest()[:32] for i in range(2000)]
    values = pa.chunked_array([ids[1500:] + ["0" * 32], ids[:10]])
    where = idkeys.index_in(values, pa.array(ids))
    assert where.tolist() == list(range(1500, 2000)) + [-1] + list(range(10))
    # not 32 characters: Arrow's string path, same answers
    assert idkeys.index_in(pa.array(["a", "b", "zz"]), pa.array(["b", "a"])).tolist() == [1, 0, -1]
    codes, distinct = idkeys.factorize(pa.chunked_array([ids[:5], ids[3:8]]))
    assert distinct == 8 and codes[3] == codes[5] and codes[4] == codes[6] and len(set(codes[:5])) == 5
    codes, distinct = idkeys.factorize(pa.array(["a", "b", "a"]))
    assert distinct == 2 and codes[0] == codes[2] != codes[1]
    # ids as decoded words, as the plan's numpy text, and from sliced chunks: the same answers
    words = idkeys.id_words(pa.array(ids))
    assert idkeys.hex_ids(words).astype(str).tolist() == ids
    text = np.array([i.encode() for i in ids], dtype="S32")
    assert (idkeys.id_words(text) == words).all()
    sliced = pa.chunked_array([pa.array(ids).slice(1500), pa.array(ids).slice(0, 10)])
    assert idkeys.index_in(sliced, words).tolist() == list(range(1500, 2000)) + list(range(10))
    assert idkeys.index_in(text[[5, 3]], sliced).tolist() == [505, 503]
    # 32 characters but not lowercase hex: not decoded, matched as text (case matters)
    upper = ids[7].upper()
    assert idkeys.id_words(pa.array([upper])) is None and idkeys.id_words(np.array([b"x" * 31], dtype="S32")) is None
    assert idkeys.index_in(pa.array([upper, ids[7], "g" * 32]), words).tolist() == [-1, 7, -1]
    assert idkeys.index_in(pa.array([ids[9]]), pa.array([upper, ids[9]])).tolist() == [1]
    codes, distinct = idkeys.factorize(pa.array([upper, ids[7], upper]))
    assert distinct == 2 and codes[0] == codes[2] != codes[1]
