"""A name -> factory registry with decorator registration and "did you mean" errors, shared by
the dataset loaders (:mod:`cprl_fast.data`) and the models (:mod:`cprl_fast.models`)."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator


class Registry:
    """``what`` names the kind of entry in error messages ("dataset", "model")."""

    def __init__(self, what: str):
        self.what = what
        self._entries: dict[str, Callable] = {}

    def register(self, name: str):
        def wrap(fn):
            if name in self._entries:
                raise ValueError(f"{self.what} {name!r} is registered twice")
            self._entries[name] = fn
            return fn

        return wrap

    def get(self, name: str) -> Callable:
        if name not in self._entries:
            close = difflib.get_close_matches(name, self._entries, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            known = ", ".join(sorted(self._entries))
            raise ValueError(f"unknown {self.what} {name!r} (known: {known}){hint}")
        return self._entries[name]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)
