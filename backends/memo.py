"""A small per-operator cache: recompute a stage only when its own inputs changed."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable, Hashable, TypeVar

T = TypeVar("T")


class Memo:
    def __init__(self, capacity: int = 8) -> None:
        self._items: OrderedDict[Hashable, Any] = OrderedDict()
        self._capacity = capacity
        self.hits = 0
        self.misses = 0
        self._input: Any = None

    def bind(self, source: Any) -> None:
        """Forget everything when the input object (the image tensor) is a different one."""
        if source is not self._input:
            self._items.clear()
            self._input = source

    def get(self, key: Hashable, compute: Callable[[], T]) -> T:
        if key in self._items:
            self._items.move_to_end(key)
            self.hits += 1
            return self._items[key]
        self.misses += 1
        value = compute()
        self._items[key] = value
        if len(self._items) > self._capacity:
            self._items.popitem(last=False)
        return value

    def __contains__(self, key: Hashable) -> bool:
        return key in self._items

    def clear(self) -> None:
        self._items.clear()
