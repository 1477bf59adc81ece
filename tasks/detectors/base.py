"""The detector adapter interface: image → model feeds, model outputs → COCO detections."""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ..errors import DetectorError
from ..registry import Field, Plugin
from ..rows import Detections
from .image import ImageMeta, prepare_image
from .settings import ImageSettings, fields_of

__all__ = ["Adapter", "Prepared", "finish"]


@dataclass(frozen=True)
class Prepared:
    """What ``preprocess`` returns: the model's feeds and where the image sits in them."""

    feeds: Mapping[str, np.ndarray]
    meta: ImageMeta


class Adapter(Plugin, ABC):
    """One detector family's pre- and post-processing around an ONNX model.

    Subclasses set ``Settings`` (a frozen dataclass deriving from ImageSettings, whose
    fields are declared with ``setting()``: they are the plug-in's ``fields``) and
    implement ``output_names`` and ``decode``. Adapters hold no per-image state: one
    instance serves every image and can be pickled to workers.
    """

    plugin_kind = "detector adapter"
    error = DetectorError
    Settings: ClassVar[type[ImageSettings]] = ImageSettings
    fields: ClassVar[tuple[Field, ...]] = fields_of(ImageSettings)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.fields = fields_of(cls.Settings)

    @classmethod
    def check_together(cls, params: dict[str, Any], *, file: str | None, key: str | None) -> None:
        cls.Settings(**params)  # its __post_init__ raises SettingProblem

    @classmethod
    def from_settings(
        cls, settings: Mapping[str, Any] | None = None, *, file: str | None = None, key: str | None = None
    ) -> Adapter:
        """This adapter with ``settings`` validated (DetectorError names the bad key and what is allowed)."""
        return cls(cls.Settings(**cls.check_settings(settings, file=file, key=key)))

    def __init__(self, settings: ImageSettings | None = None) -> None:
        self.settings = settings if settings is not None else self.Settings()

    @property
    def input_names(self) -> tuple[str, ...]:
        return (self.settings.input,)

    @property
    @abstractmethod
    def output_names(self) -> tuple[str, ...]:
        """The model outputs ``postprocess`` reads."""

    def params(self) -> dict[str, Any]:
        """The settings as plain JSON-able values (lists for tuples)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self.settings).items()}

    def preprocess(self, rgb: np.ndarray) -> Prepared:
        """RGB uint8 H×W×3 → model feeds and the geometry to map boxes back."""
        tensor, meta = prepare_image(rgb, self.settings)
        return Prepared({self.settings.input: tensor}, meta)

    def postprocess(self, outputs: Mapping[str, np.ndarray], meta: ImageMeta) -> Detections:
        """Model outputs (by name) → detections in original-image pixels with COCO category ids."""
        missing = [n for n in self.output_names if n not in outputs]
        if missing:
            raise DetectorError(
                f"model outputs {missing} missing from the results", key=self.name, allowed=sorted(outputs)
            )
        return self.decode(outputs, meta)

    @abstractmethod
    def decode(self, outputs: Mapping[str, np.ndarray], meta: ImageMeta) -> Detections:
        """Postprocessing proper (outputs are known to be present)."""

    def check_model(self, input_names: Sequence[str], output_names: Sequence[str]) -> None:
        """Raise DetectorError if the model lacks the input or outputs these settings name."""
        if self.settings.input not in input_names:
            raise DetectorError(
                f"the model has no input {self.settings.input!r}", key=f"{self.name}.input", allowed=list(input_names)
            )
        missing = [n for n in self.output_names if n not in output_names]
        if missing:
            raise DetectorError(
                f"the model has no output {', '.join(repr(m) for m in missing)}",
                key=self.name,
                allowed=list(output_names),
            )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.settings!r})"


def finish(
    boxes_xyxy: np.ndarray,
    scores: np.ndarray,
    category_ids: np.ndarray,
    meta: ImageMeta,
    settings: ImageSettings,
) -> Detections:
    """Input-pixel xyxy boxes → Detections: threshold, best first, capped, in original pixels as x, y, w, h."""
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    boxes = meta.to_original(boxes_xyxy)
    category_ids = np.asarray(category_ids).reshape(-1)
    keep = (scores >= settings.score_threshold) & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    idx = np.flatnonzero(keep)
    idx = idx[np.lexsort((idx, -scores[idx]))][: settings.max_detections]
    xyxy = boxes[idx]
    xywh = np.stack([xyxy[:, 0], xyxy[:, 1], xyxy[:, 2] - xyxy[:, 0], xyxy[:, 3] - xyxy[:, 1]], axis=1)
    return Detections(xywh.astype(np.float32), scores[idx], category_ids[idx].astype(np.int32))
