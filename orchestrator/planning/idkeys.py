"""Task ids as integers: a million 32-character ids matched and de-duplicated in pandas'
uint64 hash tables instead of Arrow's string hash tables (several times faster).

An id's 32 bytes are read in place as four uint64 words, the first two mixed into a key;
every match on the key is confirmed on all four words, so results are exact. Ids that are
not all 32 characters long (or a key collision, which only makes the table non-unique)
take Arrow's / pandas' string path instead.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["index_in", "factorize"]

_WIDTH = 32
_MIX = np.uint64(0x9E3779B97F4A7C15)  # odd: multiplying by it is a bijection of uint64


def _words(column: pa.Array | pa.ChunkedArray) -> np.ndarray | None:
    """``(n, 4)`` uint64 over the ids' bytes, or None when some id is null or not 32 bytes."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    n = len(array)
    if array.null_count or not pa.types.is_string(array.type):
        return None
    if n == 0:
        return np.empty((0, 4), dtype=np.uint64)
    offsets = np.frombuffer(array.buffers()[1], dtype=np.int32, count=n + 1, offset=4 * array.offset)
    if offsets[-1] - offsets[0] != n * _WIDTH or not (np.diff(offsets) == _WIDTH).all():
        return None
    data = np.frombuffer(array.buffers()[2], dtype=np.uint8, count=n * _WIDTH, offset=int(offsets[0]))
    return data.view(np.uint64).reshape(n, 4)  # unaligned views are fine for numpy


def _key(words: np.ndarray) -> np.ndarray:
    """The first 16 characters (64 bits of a hex id) as one uint64; the rest is compared on a match."""
    with np.errstate(over="ignore"):
        return words[:, 0] ^ (words[:, 1] * _MIX)


def _same(a: np.ndarray, rows_a: np.ndarray, b: np.ndarray, rows_b: np.ndarray) -> bool:
    """Whether ids ``a[rows_a]`` equal ``b[rows_b]`` (word by word: small temporaries)."""
    return all((a[rows_a, j] == b[rows_b, j]).all() for j in range(a.shape[1]))


def index_in(values: pa.Array | pa.ChunkedArray, value_set: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """For each of ``values`` its position in ``value_set`` (ids unique there), or -1."""
    mine, theirs = _words(values), _words(value_set)
    if mine is not None and theirs is not None:
        index = pd.Index(_key(theirs))
        if index.is_unique:
            where = index.get_indexer(_key(mine)).astype(np.int64)
            found = where >= 0
            if _same(theirs, where[found], mine, np.flatnonzero(found)):
                return where
    where = pc.index_in(values, value_set=value_set)
    return pc.fill_null(where, -1).to_numpy(zero_copy_only=False).astype(np.int64)


def factorize(column: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, int]:
    """A code per id (equal ids, equal codes) and the number of distinct ids."""
    words = _words(column)
    if words is not None:
        codes, uniques = pd.factorize(_key(words))
        if len(uniques) == len(codes):  # distinct keys: distinct ids
            return codes, len(uniques)
        first = np.empty(len(uniques), dtype=np.int64)
        first[codes[::-1]] = np.arange(len(codes) - 1, -1, -1)
        if _same(words, first[codes], words, np.arange(len(codes))):
            return codes, len(uniques)
    codes, uniques = pd.factorize(np.asarray(column.to_numpy(zero_copy_only=False), dtype=object))
    return codes, len(uniques)
