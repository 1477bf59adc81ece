"""The byte layout every codec writes: a checked preamble, a tensor directory, payloads.

Layout (all integers little-endian)::

    preamble, 20 bytes
      magic       4s   b"SSWC"
      version     u8   1
      codec id    u8   which codec wrote it (none 0, float16 1, bfloat16 2, uniform 3, nncodec 4, hevc 5)
      flags       u8   bit 0: the body is one zstd frame
      reserved    u8   0
      body length u64  bytes after the preamble (after zstd when flag 0 is set)
      body crc32  u32  zlib.crc32 of those bytes
    body
      count       u32  number of tensors
      stream len  u64  length of the shared stream at the end (NNCodec's NNR bitstream, HEVC's Annex-B stream)
      per tensor, in encoding order:
        name len u16, name (UTF-8), dtype code u8, rank u8, dims u64 × rank,
        method u8 (how the payload is coded), meta len u32, meta (method parameters),
        payload len u64
      payloads, in the same order
      stream

So the fixed cost of a container is ``header_size(names, ranks)`` =
``32 + Σ (17 + len(name in UTF-8) + 8·rank)`` bytes plus each tensor's ``meta``
(empty for raw, float16 and bfloat16; bits, mode and min/scale for uniform). The crc32
and exact length checks mean a damaged or truncated string is rejected here, before any
decoder (NNCodec's C++ one included) sees a byte of it.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import CodecError

__all__ = [
    "MAGIC",
    "DTYPES",
    "RAW",
    "FLOAT16",
    "BFLOAT16",
    "UNIFORM",
    "NNR",
    "HEVC",
    "Entry",
    "Container",
    "pack",
    "unpack",
    "header_size",
    "codec_name",
    "raw_entry",
    "raw_array",
    "as_bytes",
]

MAGIC = b"SSWC"
VERSION = 1
FLAG_ZSTD = 1

# payload methods: a codec picks one per tensor (non-float tensors are always RAW)
RAW, FLOAT16, BFLOAT16, UNIFORM, NNR, HEVC = 0, 1, 2, 3, 4, 5
_METHODS = {RAW: "raw", FLOAT16: "float16", BFLOAT16: "bfloat16", UNIFORM: "uniform", NNR: "nnr", HEVC: "hevc"}

_CODEC_NAMES = {0: "none", 1: "float16", 2: "bfloat16", 3: "uniform", 4: "nncodec", 5: "hevc"}

DTYPES: dict[np.dtype, int] = {
    np.dtype(t): i
    for i, t in enumerate(
        [
            "bool",
            "int8",
            "uint8",
            "int16",
            "uint16",
            "int32",
            "uint32",
            "int64",
            "uint64",
            "float16",
            "float32",
            "float64",
        ],
        start=1,
    )
}
_DTYPE_OF_CODE = {code: dt for dt, code in DTYPES.items()}

_PREAMBLE = struct.Struct("<4sBBBBQI")
_BODY_HEAD = struct.Struct("<IQ")
_ENTRY_FIXED = 2 + 1 + 1 + 1 + 4 + 8  # name len, dtype, rank, method, meta len, payload len


@dataclass(frozen=True)
class Entry:
    """One tensor in a container: what it is and how its payload was coded."""

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]
    method: int
    meta: bytes
    payload: bytes | memoryview

    @property
    def size(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class Container:
    codec_id: int
    entries: tuple[Entry, ...]
    stream: bytes | memoryview


def codec_name(codec_id: int) -> str:
    return _CODEC_NAMES.get(codec_id, f"#{codec_id}")


def header_size(names: Iterable[str], ranks: Iterable[int | Sequence[int]]) -> int:
    """Bytes a container spends besides payloads and meta: depends only on names and ranks.

    ``ranks`` may hold ranks or shapes.
    """
    total = _PREAMBLE.size + _BODY_HEAD.size
    for name, rank in zip(names, ranks, strict=True):
        if not isinstance(rank, int):
            rank = len(rank)
        total += _ENTRY_FIXED + len(name.encode("utf-8")) + 8 * rank
    return total


def raw_entry(name: str, arr: np.ndarray) -> Entry:
    return Entry(name, arr.dtype, arr.shape, RAW, b"", as_bytes(arr))


def as_bytes(arr: np.ndarray) -> memoryview:
    """The array's memory as bytes, without a copy when it is already contiguous."""
    return memoryview(np.ascontiguousarray(arr.reshape(-1)).view(np.uint8))


def raw_array(entry: Entry) -> np.ndarray:
    """A writable array from a RAW entry (copied, so it does not pin the whole input)."""
    expected = entry.size * entry.dtype.itemsize
    if len(entry.payload) != expected:
        raise CodecError(
            f"damaged bytes: tensor {entry.name!r} has {len(entry.payload)} payload bytes, "
            f"expected {expected}"
        )
    return np.frombuffer(entry.payload, dtype=entry.dtype).reshape(entry.shape).copy()


def pack(codec_id: int, entries: Sequence[Entry], *, stream: bytes = b"", zstd_level: int = 0) -> bytes:
    parts: list[bytes | memoryview] = [_BODY_HEAD.pack(len(entries), len(stream))]
    for e in entries:
        name = e.name.encode("utf-8")
        if len(name) > 0xFFFF or len(e.shape) > 0xFF:
            raise CodecError(f"tensor {e.name!r}: name over 65535 bytes or rank over 255", key=e.name)
        parts.append(
            struct.pack(f"<H{len(name)}sBB{len(e.shape)}QBI", len(name), name, DTYPES[e.dtype],
                        len(e.shape), *e.shape, e.method, len(e.meta))
        )
        parts.append(e.meta)
        parts.append(struct.pack("<Q", len(e.payload)))
    parts.extend(e.payload for e in entries)
    parts.append(stream)

    flags = 0
    if zstd_level:
        import zstandard  # only the zstd stage needs it

        parts = [zstandard.ZstdCompressor(level=zstd_level).compress(b"".join(parts))]
        flags |= FLAG_ZSTD
    crc = 0
    length = 0
    for p in parts:
        crc = zlib.crc32(p, crc)
        length += len(p)
    preamble = _PREAMBLE.pack(MAGIC, VERSION, codec_id, flags, 0, length, crc)
    return b"".join([preamble, *parts])


def unpack(data: bytes | bytearray | memoryview) -> Container:
    """Parse and check a container; any damage raises CodecError."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CodecError(f"codecs decode bytes, got {type(data).__name__}")
    view = memoryview(data).cast("B")
    if len(view) < _PREAMBLE.size:
        raise CodecError(f"damaged bytes: {len(view)} bytes is shorter than the {_PREAMBLE.size}-byte preamble")
    magic, version, codec_id, flags, _, length, crc = _PREAMBLE.unpack_from(view)
    if magic != MAGIC:
        raise CodecError("not splitsweep codec bytes (bad magic)")
    if version != VERSION:
        raise CodecError(f"codec bytes of format version {version}; this splitsweep reads {VERSION}")
    body = view[_PREAMBLE.size :]
    if len(body) != length:
        raise CodecError(f"damaged bytes: body is {len(body)} bytes, the header says {length} (truncated?)")
    if zlib.crc32(body) != crc:
        raise CodecError("damaged bytes: checksum mismatch")
    if flags & ~FLAG_ZSTD:
        raise CodecError(f"codec bytes use unknown flags {flags:#x}")
    if flags & FLAG_ZSTD:
        import zstandard

        try:
            body = memoryview(zstandard.ZstdDecompressor().decompress(body))
        except zstandard.ZstdError as exc:
            raise CodecError(f"damaged bytes: zstd stage: {exc}") from None
    return _parse_body(codec_id, _Reader(body))


class _Reader:
    def __init__(self, view: memoryview) -> None:
        self.view = view
        self.pos = 0

    def take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > len(self.view):
            raise CodecError("damaged bytes: directory runs past the end")
        out = self.view[self.pos : self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str) -> tuple:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))


def _parse_body(codec_id: int, r: _Reader) -> Container:
    count, stream_len = r.unpack("<IQ")
    heads = []
    for _ in range(count):
        (name_len,) = r.unpack("<H")
        try:
            name = bytes(r.take(name_len)).decode("utf-8")
        except UnicodeDecodeError:
            raise CodecError("damaged bytes: tensor name is not UTF-8") from None
        code, rank = r.unpack("<BB")
        if code not in _DTYPE_OF_CODE:
            raise CodecError(f"damaged bytes: tensor {name!r} has unknown dtype code {code}")
        shape = r.unpack(f"<{rank}Q")
        method, meta_len = r.unpack("<BI")
        if method not in _METHODS:
            raise CodecError(f"damaged bytes: tensor {name!r} has unknown method {method}")
        meta = bytes(r.take(meta_len))
        (payload_len,) = r.unpack("<Q")
        heads.append((name, _DTYPE_OF_CODE[code], tuple(int(d) for d in shape), method, meta, payload_len))
    entries = tuple(
        Entry(name, dtype, shape, method, meta, r.take(payload_len))
        for name, dtype, shape, method, meta, payload_len in heads
    )
    stream = r.take(stream_len)
    if r.pos != len(r.view):
        raise CodecError(f"damaged bytes: {len(r.view) - r.pos} unexpected trailing bytes")
    if len({e.name for e in entries}) != len(entries):
        raise CodecError("damaged bytes: a tensor name appears twice")
    return Container(codec_id, entries, stream)
