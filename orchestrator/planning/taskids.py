"""Task ids for a whole plan at once: the canonical key of every task, hashed without a
Python object per task.

A task id is ``sha256(json.dumps([SCHEMA_VERSION, model_hash, adapter, variant,
variant_settings, split, codec, codec_settings, image_id], separators=(",", ":")))``, first
32 hex digits (``task_id`` below; stores written since schema 2 hold these ids, so they
must never change). The JSON of a list is the JSON of its items joined by commas, so every
key of a (model, variant) block is ``prefix + pair + image``: a prefix per block, a part per
(split, codec setting) and ``"<image_id>]"``. The hash state after ``prefix + pair`` is
computed once per pair and copied for each image: the per-task work is one copy, one
update of a few bytes and one digest, in a tight loop. A plan keeps its ids as the digests'
first 16 bytes (two uint64 words, ``idkeys``); where text is needed numpy turns them into
hex and hands it to Arrow as one buffer (no ``str`` per task).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from orchestrator.planning.idkeys import hex_ids
from orchestrator.results.schema import SCHEMA_VERSION

__all__ = ["task_id_key", "block_prefix", "pair_part", "block_task_words", "block_task_ids", "ids_to_arrow", "ID_CHARS"]

ID_CHARS = 32  # hex digits kept of the sha256


def _dumps(value) -> str:
    return json.dumps(value, separators=(",", ":"))


def task_id_key(*, model_hash: str, adapter: str, variant_name: str, variant_canonical: str, split: int, codec: str,
                codec_canonical: str, image_id: int) -> str:
    """The canonical key of one task (what ``plan.task_id`` hashes)."""
    return _dumps([SCHEMA_VERSION, model_hash, adapter, variant_name, variant_canonical, int(split), codec,
                   codec_canonical, int(image_id)])  # fmt: skip


def block_prefix(*, model_hash: str, adapter: str, variant_name: str, variant_canonical: str) -> str:
    """``[SCHEMA_VERSION,model_hash,adapter,variant,variant_settings,`` — shared by a (model, variant)."""
    return _dumps([SCHEMA_VERSION, model_hash, adapter, variant_name, variant_canonical])[:-1] + ","


def pair_part(split: int, codec: str, codec_canonical: str) -> str:
    """``split,codec,codec_settings,`` — one (split, codec setting) of a block."""
    return _dumps([int(split), codec, codec_canonical])[1:-1] + ","


def block_task_words(prefix: str, pairs: Sequence[str], image_ids: Sequence[int] | np.ndarray) -> np.ndarray:
    """Ids of every (image, pair) of a block, image-major (the plan's order), as their 128
    bits: a ``(len(images) * len(pairs), 2)`` uint64 array (``idkeys.id_words``' form)."""
    suffixes = [f"{int(i)}]".encode() for i in np.asarray(image_ids, dtype=np.int64).tolist()]
    n_images, n_pairs = len(suffixes), len(pairs)
    digests = np.empty((n_images, n_pairs, ID_CHARS // 2), dtype=np.uint8)
    sha256 = hashlib.sha256
    for p, part in enumerate(pairs):
        base = sha256((prefix + part).encode())
        copy = base.copy
        out = []
        append = out.append
        for suffix in suffixes:
            h = copy()
            h.update(suffix)
            append(h.digest()[: ID_CHARS // 2])
        digests[:, p] = np.frombuffer(b"".join(out), dtype=np.uint8).reshape(n_images, ID_CHARS // 2)
    return digests.reshape(-1, ID_CHARS // 2).view(np.uint64)


def block_task_ids(prefix: str, pairs: Sequence[str], image_ids: Sequence[int] | np.ndarray) -> np.ndarray:
    """The same ids as text: a ``len(images) × len(pairs)`` array of 32-byte ASCII strings (numpy ``S32``)."""
    return hex_ids(block_task_words(prefix, pairs, image_ids)).reshape(len(image_ids), len(pairs))


def ids_to_arrow(ids: np.ndarray) -> pa.Array:
    """A numpy ``S32`` array → an Arrow string array over the same bytes (no str per id)."""
    flat = np.ascontiguousarray(ids.reshape(-1))
    n = flat.size
    width = flat.dtype.itemsize
    offsets = (np.arange(n + 1, dtype=np.int64) * width).astype(np.int32 if n * width < 2**31 else np.int64)
    kind = pa.string() if offsets.dtype == np.int32 else pa.large_string()
    arr = pa.Array.from_buffers(kind, n, [None, pa.py_buffer(offsets), pa.py_buffer(flat.view(np.uint8))])
    return arr if kind == pa.string() else arr.cast(pa.string())
