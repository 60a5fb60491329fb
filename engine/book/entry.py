"""Direct entry points into compiled functions, skipping numba's per-call type dispatch.

`Dispatcher.compile(signature)` compiles (or loads from the disk cache) the function for
exactly these argument types and returns its compiled wrapper, which converts the arguments
to that signature and runs. Calling it costs about half of a dispatcher call with many
arrays, because nothing is typed per call.

Invariant the callers keep: the arrays passed later have the types they were bound with
(growth replaces arrays by arrays of the same dtype and rank), and the integer arguments are
plain ints: the wrapper converts like int(), so a float would be truncated, not refused
(Book's methods and the core check types before calling).
"""

from __future__ import annotations

from numba import typeof

_ENTRIES: dict = {}


def entry_point(function, arrays: tuple, integers: int, trailing: tuple = ()):
    """The compiled wrapper of `function` for `arrays` followed by `integers` int64s, then
    arguments of the types of the examples in `trailing`."""
    signature = tuple(typeof(a) for a in arrays) + (typeof(0),) * integers
    signature += tuple(typeof(x) for x in trailing)
    key = (function, signature)
    if key not in _ENTRIES:
        _ENTRIES[key] = function.compile(signature)
    return _ENTRIES[key]
