"""The one exception hierarchy for errors a user can cause.

    SplitsweepError            base: catch this one
    ├── SpecError              sweep spec: unknown key, wrong type, bad value
    ├── ModelError             model file missing, not ONNX, op not supported
    ├── SplitError             split index out of range, empty cut, unknown tensor
    ├── CodecError             unknown codec or setting, invalid QP, NaN/inf input
    ├── DetectorError          adapter settings, output names not in the model
    ├── DataError              image unreadable, annotations inconsistent
    ├── VariantError           a model variant cannot be built for this graph
    ├── AssetError             npm missing, download failed, checksum mismatch
    └── ResultsError           results store unwritable, other schema version, damaged file
        └── LeaseLostError     another driver took the results location's lease mid-run

Every error carries where it happened (``file``), what it is about (``key``) and,
where it applies, what would have been accepted (``allowed``); ``str()`` renders all
three in one line so the CLI can print it as is. Bugs are not caught into these.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "SplitsweepError",
    "SpecError",
    "ModelError",
    "SplitError",
    "CodecError",
    "DetectorError",
    "DataError",
    "VariantError",
    "AssetError",
    "ResultsError",
    "LeaseLostError",
    "nearest",
]


class SplitsweepError(Exception):
    """Base of every error a user can cause; one line: ``file: key: message (allowed: …)``."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        key: str | None = None,
        allowed: str | Iterable[object] | None = None,
    ) -> None:
        self.message = message
        self.file = None if file is None else str(file)
        self.key = key
        if allowed is not None and not isinstance(allowed, str):
            allowed = ", ".join(str(a) for a in allowed)
        self.allowed = allowed
        super().__init__(str(self))

    def __str__(self) -> str:
        where = ": ".join(part for part in (self.file, self.key) if part)
        text = f"{where}: {self.message}" if where else self.message
        if self.allowed:
            text += f" (allowed: {self.allowed})"
        return text

    def __reduce__(self):  # survive pickling across Ray workers with keyword fields intact
        return (_rebuild, (type(self), self.message, self.file, self.key, self.allowed))


def _rebuild(cls, message, file, key, allowed):
    return cls(message, file=file, key=key, allowed=allowed)


class SpecError(SplitsweepError):
    """The sweep spec is wrong: unknown key, wrong type, value out of range."""


class ModelError(SplitsweepError):
    """A model file is missing, is not ONNX, or uses an op we cannot handle."""


class SplitError(SplitsweepError):
    """A split point does not exist or its cut is empty."""


class CodecError(SplitsweepError):
    """Unknown codec or setting, invalid QP, or input the codec cannot carry."""


class DetectorError(SplitsweepError):
    """Detector adapter settings do not fit the model."""


class DataError(SplitsweepError):
    """An image or annotation file cannot be used."""


class VariantError(SplitsweepError):
    """A model variant cannot be built for this graph."""


class AssetError(SplitsweepError):
    """Fetching or converting the demo assets failed."""


class ResultsError(SplitsweepError):
    """The results store cannot be written or read safely."""


class LeaseLostError(ResultsError):
    """Another driver took this run's lease while it was writing: the run stops, stores
    nothing further, and the CLI exits with its own code (4) rather than 2."""


def nearest(word: str, choices: Iterable[str]) -> str | None:
    """The closest valid name to a misspelt one, for 'did you mean' hints."""
    found = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return found[0] if found else None
