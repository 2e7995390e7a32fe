"""Name -> object registries (models, unlearning methods, losses), as timm and open-unlearning do."""
from __future__ import annotations

from typing import Callable, Dict, Generic, Iterator, TypeVar

from dualoptim.errors import UsageError

T = TypeVar("T")


class Registry(Generic[T]):
    """A mapping from names to objects filled with the :meth:`register` decorator.

    ``kind`` names the flag the registry serves (``--arch``, ``--unlearn``), so a
    lookup of an unknown name fails with one line listing the valid names.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: Dict[str, T] = {}

    def register(self, *names: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            for name in names or (getattr(obj, "__name__"),):
                if name in self._entries:
                    raise KeyError(f"{self.kind}: {name!r} registered twice")
                self._entries[name] = obj
            return obj
        return decorator

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise UsageError(f"{self.kind}: unknown value {name!r}; expected one of "
                             f"{', '.join(sorted(self._entries))}") from None

    def names(self) -> list:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def __len__(self) -> int:
        return len(self._entries)
