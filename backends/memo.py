"""A small per-operator cache: recompute a stage only when its own declared inputs changed.

A stage names the parameters it reads (``inputs``) and any other value it depends on
(``extra``: the query, a fit's state); its key is built from those, so a stage can neither
miss an input (a stale panel) nor depend on one it does not read (a needless recompute).
A stage that returns the very same tensors on a hit lets the worker and the views skip
converting and redrawing them. The whole cache is bound to the image key and forgets
everything when the image changes.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable, Hashable, Mapping, Sequence, TypeVar

T = TypeVar("T")

_UNBOUND = object()


class Memo:
    def __init__(self, capacity: int = 8) -> None:
        self._items: OrderedDict[Hashable, Any] = OrderedDict()
        self._capacity = capacity
        self.hits = 0
        self.misses = 0
        self._image_key: Any = _UNBOUND

    def bind(self, image_key: Hashable) -> None:
        """Forget everything when the image (named by its key) is a different one."""
        if not _same_key(image_key, self._image_key):
            self._items.clear()
            self._image_key = image_key

    def stage(
        self,
        name: str,
        params: Mapping[str, Any],
        inputs: Sequence[str],
        compute: Callable[[], T],
        extra: Hashable = (),
    ) -> T:
        """``compute()`` once per value of the parameters named in ``inputs`` and of ``extra``.

        A name that is not a parameter raises KeyError at once, so a misspelt input is caught by
        the first test that runs the stage."""
        return self.get(self.stage_key(name, params, inputs, extra), compute)

    @staticmethod
    def stage_key(name: str, params: Mapping[str, Any], inputs: Sequence[str], extra: Hashable = ()) -> Hashable:
        """The key :meth:`stage` uses: ``stage_key(...) in memo`` asks whether a stage is cached
        (to choose a fast frame plus ``settle`` over computing it now)."""
        return (name, tuple(params[n] for n in inputs), extra)

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


def _same_key(a: Any, b: Any) -> bool:
    """Keys are plain values (an int, a tuple); anything else (a tensor) is compared by identity."""
    if a is b:
        return True
    plain = (int, str, tuple)
    return isinstance(a, plain) and type(a) is type(b) and a == b
