"""The device's cost of each split: head-only latency (the head model alone, as a device runs it), head MACs and parameters.

The sweep's own ``head_s`` is the one shared run of the whole network that exposes every
cut at once (tasks.work.run_head): the same at every split, so it says nothing about what
a device pays for a split. Here each split's head model (tasks.graph.SplitGraph.head_model:
exactly the nodes the cut tensors need) is run alone in onnxruntime on a few of the
sweep's images (``SAMPLE_IMAGES``, median of ``REPEATS`` runs after a warm-up), once per
(model, variant) as a Ray task, and stored in ``RESULTS/variants/device.parquet``:

    model, variant, split, variant_split, head_only_s (median over images), head_only_s_min,
    head_only_s_max, head_params (weights the head holds), n_images, threads, error

Split −1 is the whole model on the device (local inference). A later run skips the
(model, variant) pairs already measured with the same splits. Head MACs come from
``variants/splits.parquet``; :func:`device_table` joins both.
"""

from __future__ import annotations

import functools
import io
import statistics
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from orchestrator.results.schema import BASELINE_SPLIT, DEVICE_TABLE, SPLIT_TABLE

__all__ = ["DEVICE_TABLE", "SAMPLE_IMAGES", "REPEATS", "measure_heads", "measure_sweep", "device_table"]

SAMPLE_IMAGES = 3
REPEATS = 3
DEVICE_COLUMNS = ("model", "variant", "split", "variant_split", "head_only_s", "head_only_s_min", "head_only_s_max",
                  "head_params", "n_images", "threads", "error")


def measure_heads(
    model_bytes: bytes, adapter: str, adapter_settings: Mapping[str, Any], splits: Mapping[int, int],
    images: Sequence[bytes], *, threads: int = 1, repeats: int = REPEATS,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
) -> list[dict[str, Any]]:
    """One row per sweep split (``splits``: sweep split → this variant's node index; −1
    the whole model): the head model's latency on each image, its parameters. Pure
    compute; a split whose head cannot be built or run gets its error, the others go on."""
    from tasks import detectors
    from tasks.graph import SplitGraph
    from tasks.images import decode_image
    from tasks.macs import count_params, measure_latency
    from tasks.work import describe_error

    graph = SplitGraph(bytes(model_bytes), input_shapes=input_shapes)
    adapter_obj = detectors.adapter(adapter, dict(adapter_settings))
    feeds = []
    for i, img in enumerate(images):
        try:
            feeds.append(dict(adapter_obj.preprocess(decode_image(img, name=f"sample image {i}")).feeds))
        except Exception:  # noqa: BLE001 - an image that cannot be decoded is not measured on
            continue
    rows = []
    for split, node in splits.items():
        row: dict[str, Any] = {"split": int(split), "variant_split": int(node), "n_images": len(feeds),
                               "threads": int(threads), "error": None}
        try:
            head = graph.model if node == BASELINE_SPLIT else graph.head_model(node)
            data = head.SerializeToString()
            names = {i.name for i in head.graph.input}
            times = [measure_latency(data, {k: v for k, v in f.items() if k in names}, threads=threads, repeats=repeats)
                     for f in feeds]
            if not times:
                raise ValueError("none of the sample images could be decoded")
            row.update(head_only_s=statistics.median(times), head_only_s_min=min(times), head_only_s_max=max(times),
                       head_params=count_params(head).params)
        except Exception as exc:  # noqa: BLE001 - one split's head failing leaves the others measured
            row.update(head_only_s=None, head_only_s_min=None, head_only_s_max=None, head_params=None,
                       error=describe_error(exc))
        rows.append(row)
    return rows


@functools.cache
def _measure_task():
    """The Ray task, made on first use so that importing this module needs no Ray."""
    import ray

    return ray.remote(num_cpus=1)(measure_heads)


def _stored(store) -> pd.DataFrame | None:
    if not store.exists(DEVICE_TABLE):
        return None
    try:
        return pq.read_table(io.BytesIO(store.read_bytes(DEVICE_TABLE))).to_pandas()
    except (OSError, pa.ArrowException):
        return None


def measure_sweep(plan, store, variants: Mapping[str, Any], *, threads: int = 1, out: TextIO | None = None) -> None:
    """Measure every (model, variant) of the plan not yet in ``device.parquet`` (Ray tasks, in parallel)."""
    import ray

    stored = _stored(store)
    records = list(plan.records)[:SAMPLE_IMAGES]
    if not records:
        return
    images = []
    for r in records:
        try:
            images.append(plan.dataset.image_bytes(r))
        except Exception:  # noqa: BLE001 - a missing or unreadable image: its tasks fail on their own
            continue
    if not images:
        return
    jobs = {}
    for m in plan.models:
        for v in m.variants:
            build = variants.get(f"{m.name}/{v.label}")
            if build is None or build.error or not build.model_bytes:
                continue
            splits = {BASELINE_SPLIT: BASELINE_SPLIT}
            splits.update({int(k): int(n) for k, n in build.split_map.items() if int(k) >= 0})
            if stored is not None:
                have = stored[(stored["model"] == m.name) & (stored["variant"] == v.label)]
                if set(have["split"].astype(int)) >= set(splits):
                    continue
            input_shapes = {k: tuple(s) for k, s in (m.spec.input_shapes or {}).items()} or None
            ref = _measure_task().remote(build.model_bytes, m.spec.adapter_type, dict(m.spec.adapter_settings),
                                         splits, images, threads=threads, input_shapes=input_shapes)
            jobs[(m.name, v.label)] = ref
    if not jobs:
        return
    if out is not None:
        out.write(f"device cost: head-only latency of {len(jobs)} model variant(s) on {len(images)} image(s)\n")
    rows = []
    for (model, variant), ref in jobs.items():
        try:
            measured = ray.get(ref)
        except Exception as exc:  # noqa: BLE001 - the device's cost is extra: it never stops a sweep
            if out is not None:
                out.write(f"warning: device cost of {model}/{variant} not measured: {type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''}\n")
            continue
        for row in measured:
            rows.append({"model": model, "variant": variant, **row})
    if not rows:
        return
    table = pd.DataFrame(rows, columns=list(DEVICE_COLUMNS))
    if stored is not None:
        keep = ~stored.set_index(["model", "variant"]).index.isin(list(jobs))
        table = pd.concat([stored[keep], table], ignore_index=True)
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(table, preserve_index=False), buf)
    store.write_bytes(DEVICE_TABLE, buf.getvalue())


def device_table(store) -> pd.DataFrame:
    """Per (model, variant, split): head_only_s (+ min, max), head_params, head_macs,
    tail_macs — whatever of ``device.parquet`` and ``splits.parquet`` the store has."""
    frames = []
    device = _stored(store)
    if device is not None and len(device):
        frames.append(device[["model", "variant", "split", "head_only_s", "head_only_s_min", "head_only_s_max",
                              "head_params"]])
    if store.exists(SPLIT_TABLE):
        try:
            splits = pq.read_table(io.BytesIO(store.read_bytes(SPLIT_TABLE))).to_pandas()
        except (OSError, pa.ArrowException):
            splits = None
        if splits is not None and {"head_macs", "tail_macs"} <= set(splits.columns):
            frames.append(splits[["model", "variant", "split", "head_macs", "tail_macs"]])
    if not frames:
        return pd.DataFrame(columns=["model", "variant", "split"])
    out = frames[0]
    for frame in frames[1:]:
        out = out.merge(frame, on=["model", "variant", "split"], how="outer")
    out["split"] = out["split"].astype("int64")
    return out.drop_duplicates(["model", "variant", "split"], keep="last").reset_index(drop=True)
