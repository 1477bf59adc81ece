"""Remote inference, the field's anchor: the picture coded with an image codec, decoded, the whole model run.

What a device sends here is the image at the model's input resolution as 8-bit RGB
(``tasks.detectors.image.input_image``: stretched to ``input_size``, or for a letterbox
adapter the scaled image without its padding), coded by one of the image codecs
(jpeg, webp, avif, hevc). ``coded_bytes`` is the length of that bitstream and nothing
else; ``raw_bytes`` is the uncoded 8-bit picture (width × height × 3) and
``float32_bytes`` the same elements at 4 bytes each, as for every split. The server
decodes the picture, preprocesses it exactly as it would the original (the same
geometry, so boxes map back to the original image's pixels) and runs the whole network.
``feature_mse`` / ``feature_psnr`` are the picture's MSE and PSNR (8-bit, peak 255) —
the usual image PSNR — not a tensor's. ``head_s`` is 0 (nothing runs on the device),
``tail_s`` the whole model's run on the decoded picture.
"""

from __future__ import annotations

import time

from .codecs.image import ImageCodec, image_psnr
from .detectors.image import input_image
from .errors import CodecError
from .rows import INPUT_SPLIT, CodecSetting, Detections, TaskResult

__all__ = ["INPUT_SPLIT", "remote_task"]


def remote_task(runner, adapter, head, setting: CodecSetting, codec) -> tuple[TaskResult, Detections]:
    """One remote-inference task of an image whose ``tasks.work.HeadOutput`` is ``head``
    (its ``image``, the original RGB, and ``meta``, its place in the model input)."""
    if not isinstance(codec, ImageCodec):
        raise CodecError(
            f"codec {setting.codec!r} codes cut tensors, not pictures: the split `input` takes an image codec",
            key=setting.codec,
            allowed="avif, hevc, jpeg, webp",
        )
    if head.image is None:
        raise ValueError("remote inference needs the original image (HeadOutput.image)")
    sent = input_image(head.image, adapter.settings)
    t0 = time.perf_counter()
    data = codec.encode_image(sent)
    t1 = time.perf_counter()
    decoded = codec.decode_image(data)
    t2 = time.perf_counter()
    if decoded.shape != sent.shape:
        raise CodecError(f"{setting.codec} decoded a {decoded.shape} picture from a {sent.shape} one")
    prepared = adapter.preprocess(decoded)
    server = runner.run_head(prepared.feeds)
    # The decoded picture sits where the original does: boxes map back with the original's geometry.
    detections = adapter.postprocess(server.outputs, head.meta)
    mse, psnr = image_psnr(sent, decoded)
    result = TaskResult(
        split=INPUT_SPLIT,
        setting=setting,
        raw_bytes=int(sent.nbytes),
        float32_bytes=int(4 * sent.size),
        coded_bytes=len(data),
        side_bytes=0,
        feature_mse=mse,
        feature_psnr=psnr,
        head_s=0.0,
        encode_s=t1 - t0,
        decode_s=t2 - t1,
        tail_s=server.seconds,
        outputs=server.outputs,
    )
    return result, detections
