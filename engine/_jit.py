"""Numba compile settings and per-call dispatch bypass shared by the book, the bars and the risk kernels.

Why these exist:

- ``kernel`` / ``inline_kernel`` compile without numba's reference counting (``_nrt=False``, a
  long-standing numba jit option). The hot kernels allocate nothing, and with NRT on numba wraps every
  helper call that takes arrays in atomic incref/decref pairs that its refcount pruning cannot remove
  when the helper has a loop: measured 40 ns against 1-3 ns for a one-level depth read or one order
  check. A kernel compiled this way fails loudly at compile time if it ever allocates.
  ``inline_kernel`` also inlines in numba IR: a call left to LLVM passes every array as a dozen words
  by value, which costs more than the small helpers' work.
- ``entry_point`` returns the compiled function for one fixed set of argument types, so a call skips
  numba's per-call type dispatch (microseconds with record arrays, about half of a single risk check).
  Callers must only ever call it with arguments of exactly those types.

If numba's internals change (``Dispatcher.overloads``, ``CompileResult.entry_point``) ``entry_point``
returns the dispatcher itself: everything still works, only slower. If ``_nrt`` were ever removed,
the two decorators here are the one place to change.
"""

from __future__ import annotations

import numba
from numba import njit

#: Kernel that allocates nothing, compiled without reference counting.
kernel = njit(cache=True, _nrt=False)
#: Small hot helper of such kernels, inlined in numba IR.
inline_kernel = njit(cache=True, _nrt=False, inline="always")


def entry_point(dispatcher, args: tuple):
    """The compiled ``dispatcher`` for exactly the types of ``args`` (compiled now if it was not yet),
    callable without numba's per-call type dispatch; the dispatcher itself if numba does not expose it."""
    try:
        signature = tuple(numba.typeof(a) for a in args)
        if signature not in dispatcher.overloads:
            dispatcher.compile(signature)
        entry = dispatcher.overloads[signature].entry_point
    except (AttributeError, KeyError, TypeError):  # pragma: no cover - depends on numba internals
        return dispatcher
    return entry if callable(entry) else dispatcher


class FixedTypes:
    """``dispatcher`` called through ``entry_point`` for the argument types of its first call.

    For call sites whose argument types never change (the same dtypes, dimensions and layouts, even
    when the arrays themselves are replaced): they pay numba's dispatch once, not per call."""

    __slots__ = ("_dispatcher", "_call")

    def __init__(self, dispatcher) -> None:
        self._dispatcher = dispatcher
        self._call = None

    def __call__(self, *args):
        call = self._call
        if call is None:
            call = self._call = entry_point(self._dispatcher, args)
        return call(*args)


__all__ = ["FixedTypes", "entry_point", "inline_kernel", "kernel"]
