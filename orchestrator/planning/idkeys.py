"""Task ids as integers: a million 32-hex-digit ids matched and de-duplicated as 128-bit
numbers in pandas' uint64 hash tables instead of Arrow's string hash tables (several times
faster, and a fraction of the memory).

An id's 32 hex digits are decoded, chunk by chunk, into two uint64 words (16 bytes instead
of 36 bytes of string and offsets, and no combined copy of a chunked column); the words are
mixed into one hash key and every match on the key is confirmed on both words, so results
are exact. Ids that are not all 32 lowercase hex digits (or a key collision, which only
makes the table non-unique) take Arrow's / pandas' string path instead.

Each function takes ids as an Arrow string column, an Arrow ``binary(16)`` column of
decoded ids (``ResultsStore.stored_tasks``), a numpy ``S32`` array or decoded words
(``id_words``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["Ids", "id_words", "hex_ids", "index_in", "factorize"]

Ids = pa.Array | pa.ChunkedArray | np.ndarray

_WIDTH = 32  # hex digits of an id
_MIX = np.uint64(0x9E3779B97F4A7C15)  # odd: multiplying by it is a bijection of uint64
_STEP = 1 << 16  # ids decoded per slice: small temporaries
_NIBBLE = np.full(256, 255, dtype=np.uint8)  # ASCII → hex digit value; 255: not a lowercase hex digit
_NIBBLE[ord("0") : ord("9") + 1] = np.arange(10)
_NIBBLE[ord("a") : ord("f") + 1] = np.arange(10, 16)
_HEX = np.array([f"{i:02x}".encode() for i in range(256)], dtype="S2")


def _decode(text: np.ndarray, out: np.ndarray) -> bool:
    """``text``: ``(n, 32)`` uint8 ASCII; fills ``out`` (``(n, 2)`` uint64); False on a non-hex digit."""
    for start in range(0, len(text), _STEP):
        nibbles = _NIBBLE[text[start : start + _STEP]]
        if nibbles.max(initial=0) > 15:
            return False
        packed = (nibbles[:, 0::2] << 4) | nibbles[:, 1::2]  # (k, 16) bytes, C-contiguous
        out[start : start + len(packed)] = packed.view(np.uint64)
    return True


def id_words(ids: Ids) -> np.ndarray | None:
    """``(n, 2)`` uint64: each id's 128 bits; None when some id is null or not 32 lowercase hex digits."""
    if isinstance(ids, np.ndarray):
        if ids.ndim == 2 and ids.dtype == np.uint64:
            return ids
        if ids.dtype != np.dtype(f"S{_WIDTH}"):
            return None
        out = np.empty((ids.size, 2), dtype=np.uint64)
        return out if _decode(np.ascontiguousarray(ids).view(np.uint8).reshape(-1, _WIDTH), out) else None
    chunks = ids.chunks if isinstance(ids, pa.ChunkedArray) else [ids]
    out = np.empty((len(ids), 2), dtype=np.uint64)
    at = 0
    for chunk in chunks:
        n = len(chunk)
        if chunk.null_count:
            return None
        if chunk.type == pa.binary(_WIDTH // 2):  # already decoded (ResultsStore.stored_tasks)
            out[at : at + n] = np.frombuffer(chunk.buffers()[1], dtype=np.uint64, count=2 * n,
                                             offset=16 * chunk.offset).reshape(n, 2)  # fmt: skip
            at += n
            continue
        if not pa.types.is_string(chunk.type):
            return None
        if n == 0:
            continue
        offsets = np.frombuffer(chunk.buffers()[1], dtype=np.int32, count=n + 1, offset=4 * chunk.offset)
        if offsets[-1] - offsets[0] != n * _WIDTH or not (np.diff(offsets) == _WIDTH).all():
            return None
        text = np.frombuffer(chunk.buffers()[2], dtype=np.uint8, count=n * _WIDTH, offset=int(offsets[0]))
        if not _decode(text.reshape(n, _WIDTH), out[at : at + n]):
            return None
        at += n
    return out


def hex_ids(words: np.ndarray) -> np.ndarray:
    """Decoded words back to ids: a numpy ``S32`` array."""
    text = _HEX[np.ascontiguousarray(words).view(np.uint8).reshape(-1, _WIDTH // 2)]
    return np.ascontiguousarray(text).view(f"S{_WIDTH}").reshape(-1)


def _strings(ids: Ids) -> pa.Array | pa.ChunkedArray:
    if not isinstance(ids, np.ndarray):
        if ids.type != pa.binary(_WIDTH // 2):
            return ids
        ids = id_words(ids)
    if ids.ndim == 2:
        ids = hex_ids(ids)
    return pa.array(ids.astype(object).tolist() if ids.size else [], pa.binary()).cast(pa.string())


def _key(words: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return words[:, 0] ^ (words[:, 1] * _MIX)


def _same(a: np.ndarray, rows_a: np.ndarray, b: np.ndarray, rows_b: np.ndarray) -> bool:
    """Whether ids ``a[rows_a]`` equal ``b[rows_b]`` (word by word: small temporaries)."""
    return all((a[rows_a, j] == b[rows_b, j]).all() for j in range(a.shape[1]))


def index_in(values: Ids, value_set: Ids) -> np.ndarray:
    """For each of ``values`` its position in ``value_set`` (ids unique there), or -1."""
    theirs = id_words(value_set)
    mine = id_words(values) if theirs is not None else None
    if mine is not None and theirs is not None:
        index = pd.Index(_key(theirs))
        if index.is_unique:
            where = index.get_indexer(_key(mine)).astype(np.int64)
            found = where >= 0
            if _same(theirs, where[found], mine, np.flatnonzero(found)):
                return where
    where = pc.index_in(_strings(values), value_set=_strings(value_set))
    return pc.fill_null(where, -1).to_numpy(zero_copy_only=False).astype(np.int64)


def factorize(ids: Ids) -> tuple[np.ndarray, int]:
    """A code per id (equal ids, equal codes) and the number of distinct ids.

    Sorted rather than hashed: at a million ids a sort's temporaries are about half a hash
    table's, for a few tens of milliseconds more."""
    words = id_words(ids)
    if words is not None:
        n = len(words)
        key = _key(words)
        order = np.argsort(key, kind="stable")
        sorted_key = key[order]
        del key
        starts = np.ones(n, dtype=bool)
        starts[1:] = sorted_key[1:] != sorted_key[:-1]
        del sorted_key
        codes = np.empty(n, dtype=np.int64)
        codes[order] = np.cumsum(starts) - 1
        distinct = int(codes.max()) + 1 if n else 0
        if distinct == n:  # distinct keys: distinct ids
            return codes, n
        first = order[starts]  # the first of each key, in code order (stable sort)
        if _same(words, first[codes], words, np.arange(n)):
            return codes, distinct
    column = _strings(ids)
    codes, uniques = pd.factorize(np.asarray(column.to_numpy(zero_copy_only=False), dtype=object))
    return codes, len(uniques)
