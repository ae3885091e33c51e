"""A name -> factory registry with decorator registration, "did you mean" errors and declared
capabilities, shared by datasets (:mod:`cprl_fast.data`), models (:mod:`cprl_fast.models`),
training objectives (:mod:`cprl_fast.train.objectives`), attacks (:mod:`cprl_fast.attacks`)
and kernel backends (:mod:`cprl_fast.ops._backend`). The CLI's choices and help are generated
from them."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


class Registry:
    """``what`` names the kind of entry in error messages ("dataset", "model")."""

    def __init__(self, what: str):
        self.what = what
        self._entries: dict[str, Any] = {}
        self._info: dict[str, dict[str, Any]] = {}

    def register(self, name: str, **info: Any) -> Callable[[T], T]:
        """Decorator: registers the entry as ``name`` with its declared capabilities ``info``
        (e.g. a model's default objective, a dataset's official split)."""

        def wrap(entry: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.what} {name!r} is registered twice")
            self._entries[name] = entry
            self._info[name] = dict(info)
            return entry

        return wrap

    def check(self, name: str) -> None:
        """Raises ValueError naming the known entries (and the closest one) if ``name`` is not
        registered."""
        if name not in self._entries:
            close = difflib.get_close_matches(str(name), self._entries, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            known = ", ".join(sorted(self._entries))
            raise ValueError(f"unknown {self.what} {name!r} (known: {known}){hint}")

    def get(self, name: str) -> Any:
        self.check(name)
        return self._entries[name]

    def info(self, name: str) -> dict[str, Any]:
        """The capabilities ``name`` was registered with."""
        self.check(name)
        return self._info[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)
