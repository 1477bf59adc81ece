"""``hevc``: HEVC intra (libx265 through PyAV's FFmpeg) at a fixed QP, one 4:2:0 8-bit frame.

The picture is converted to YUV 4:2:0 by FFmpeg's swscale (BT.601, limited range, the
FFmpeg default for ``rgb24 → yuv420p``), coded as one intra frame with a constant QP
(``qp=N`` in x265's parameters: no rate control) and written as an Annex-B stream:
VPS, SPS, PPS and the slice, without x265's informational SEI (``info=0``), which no
decoder needs. 4:2:0 needs an even width and height: an odd one is padded by repeating
the last column / row, and the true size travels in an 8-byte prefix of our own (four zero
bytes, which no Annex-B stream starts with, then width and height), counted in the coded
bytes; the model inputs swept here are even. The decoder is FFmpeg's own ``hevc``; the frame comes back to RGB through
the same matrix. x265 runs single-threaded (``pools=1``, ``frame-threads=1``): a sweep
already runs one worker per core.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from ..errors import CodecError
from .base import REQUIRED, Field
from .image import ImageCodec

__all__ = ["HevcCodec", "available", "INSTALL"]

INSTALL = "hevc needs PyAV with libx265 (the `av` wheel carries it): pip install av, or run scripts/bootstrap.sh"
PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow", "placebo")


def available() -> bool:
    """True when PyAV imports and its FFmpeg has the libx265 encoder and the hevc decoder."""
    try:
        import av
    except ImportError:
        return False
    return {"libx265", "hevc"} <= set(av.codecs_available)


class HevcCodec(ImageCodec):
    name = "hevc"
    doc = (
        "Remote inference: the input image as one HEVC intra frame (libx265 via PyAV), YUV 4:2:0 8-bit, "
        "constant QP; coded bytes are the Annex-B stream (VPS, SPS, PPS, slice)."
    )
    fields = (
        Field("qp", int, REQUIRED, "x265 constant quantization parameter (8-bit)", low=0, high=51),
        Field(
            "preset",
            int,
            5,
            "x265 preset: 0 ultrafast … 5 medium … 9 placebo",
            low=0,
            high=len(PRESETS) - 1,
        ),
    )

    @classmethod
    def check_together(cls, params, *, file, key) -> None:
        if not available():
            raise CodecError(INSTALL, file=file, key=key)

    def encode_image(self, rgb: np.ndarray) -> bytes:
        import av

        height, width = rgb.shape[:2]
        if width % 2 or height % 2:
            # 4:2:0 needs even sizes: repeat the last column / row (the decoder crops it away again)
            rgb = np.pad(rgb, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")
        ctx = av.CodecContext.create("libx265", "w")
        ctx.width, ctx.height = rgb.shape[1], rgb.shape[0]
        ctx.pix_fmt = "yuv420p"
        ctx.time_base = Fraction(1, 25)
        params = f"qp={self.params['qp']}:keyint=1:info=0:log-level=none:pools=1:frame-threads=1"
        ctx.options = {"preset": PRESETS[self.params["preset"]], "x265-params": params}
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
        packets = [*ctx.encode(frame), *ctx.encode(None)]
        data = b"".join(bytes(p) for p in packets)
        if (width, height) != (rgb.shape[1], rgb.shape[0]):
            # the crop travels in two bytes of our own ahead of the stream: odd sizes only
            return b"\x00\x00\x00\x00" + width.to_bytes(2, "big") + height.to_bytes(2, "big") + data
        return data

    def decode_image(self, data: bytes) -> np.ndarray:
        import av

        crop = None
        if data[:4] == b"\x00\x00\x00\x00":
            crop = int.from_bytes(data[4:6], "big"), int.from_bytes(data[6:8], "big")
            data = data[8:]
        ctx = av.CodecContext.create("hevc", "r")
        try:
            frames = [*ctx.decode(av.Packet(bytes(data))), *ctx.decode(None)]
        except av.FFmpegError as exc:
            raise CodecError(f"damaged bytes: not an HEVC stream ({exc})") from None
        if len(frames) != 1:
            raise CodecError(f"damaged bytes: the HEVC stream holds {len(frames)} pictures, not 1")
        rgb = frames[0].to_ndarray(format="rgb24")
        if crop is not None:
            rgb = rgb[: crop[1], : crop[0]]
        return self._decoded(rgb)
