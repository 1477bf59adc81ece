"""A small named registry, one per plug-in kind (codecs, detector adapters, model variants)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from .errors import SplitsweepError, nearest

T = TypeVar("T")

__all__ = ["Registry"]


class Registry(Generic[T]):
    """Maps a name to a plug-in; lookup errors name the kind and the allowed names.

    Built-ins register themselves in the module that defines the registry's package
    ``__init__`` (imported explicitly there), so a lookup never depends on some other
    module having happened to be imported first.
    """

    def __init__(self, kind: str, error: type[SplitsweepError]) -> None:
        self.kind = kind
        self._error = error
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(entry: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._entries[name] = entry
            return entry

        return add

    def get(self, name: str, *, file: str | None = None, key: str | None = None) -> T:
        try:
            return self._entries[name]
        except KeyError:
            hint = nearest(name, self._entries)
            suffix = f"; did you mean {hint!r}?" if hint else ""
            raise self._error(
                f"unknown {self.kind} {name!r}{suffix}",
                file=file,
                key=key,
                allowed=sorted(self._entries),
            ) from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))
