"""numba's disk cache with a narrow load, for :mod:`padam_core._fused_cpu_loop` (needs numba).

numba's ``FunctionCache.load_overload`` refreshes the whole target context before it reads a
cached function: that imports and registers every implementation numba has (its linear algebra
pulls in ``scipy.linalg``, its random generators, typed containers, ...), 0.4-1 s of a fresh
process, although machine code loaded from disk needs none of it. :class:`NarrowLoadCache`
loads without that refresh; it initialises only numba's runtime (NRT), whose symbols the cached
code links against, and it checks that every external symbol the cached code references is
already known to LLVM (otherwise it refreshes first, as numba does). On a cache miss it refreshes
before returning: compiling needs every registry, and numba's own compile path would refresh
too. Nothing compiled lives in this file, so changing it can never leave stale cached code.

:func:`install` puts the cache on a dispatcher when its ``cache=True`` cache is numba's own
``FunctionCache`` and the internals this relies on are there; otherwise it leaves numba's cache
in place (same results, slower first call).
"""

from __future__ import annotations

from typing import Any

import llvmlite.binding as ll
from numba.core.caching import FunctionCache
from numba.core.runtime import nrt

__all__ = ["NarrowLoadCache", "install", "missing_symbols"]

_INTERNALS = ("_enabled", "_index_key", "_cache_file", "_impl")
_PAYLOAD_LENGTH = 9  # fields of numba's CompileResult._reduce() (as of numba 0.68)


def missing_symbols(libdata: Any) -> list[str] | None:
    """External functions that the serialised library references and LLVM cannot resolve yet.

    ``libdata`` is numba's ``(name, 'object', (object_code, bitcode))``; the bitcode is the
    module the object code was compiled from, so its declarations are the object's external
    functions (LLVM intrinsics excepted). None when ``libdata`` is not in that form.
    """
    try:
        _name, kind, (_object_code, bitcode) = libdata
    except (TypeError, ValueError):
        return None
    if kind != "object" or not isinstance(bitcode, bytes):
        return None
    module = ll.parse_bitcode(bitcode)
    return [
        function.name
        for function in module.functions
        if function.is_declaration
        and not function.name.startswith("llvm.")
        and not ll.address_of_symbol(function.name)
    ]


class NarrowLoadCache(FunctionCache):
    """numba's ``FunctionCache`` (same files, same index keys), loading without the refresh."""

    def load_overload(self, sig: Any, target_context: Any) -> Any:
        if not self._enabled:
            return None
        nrt.rtsys.initialize(target_context)  # NRT_* symbols and the runtime's atomics
        key = self._index_key(sig, target_context.codegen())
        data = self._cache_file.load(key)
        if data is None:
            target_context.refresh()  # a compile follows: it needs every registry
            return None
        # data: CompileResult._reduce(): (libdata, fndesc, env, signature, objectmode, lifted,
        # typeann, reload_init, referenced_envs). reload_init (the parfors' threading layer,
        # which registers its own symbols) runs first, as in CompileResult._rebuild. Another
        # layout (another numba): numba's own order, refresh first.
        if not (isinstance(data, tuple) and len(data) == _PAYLOAD_LENGTH):
            target_context.refresh()
            return self._impl.rebuild(target_context, data)
        for initialise in data[7] or ():
            initialise()
        missing = missing_symbols(data[0])
        if missing is None or missing:
            target_context.refresh()
        return self._impl.rebuild(target_context, data)


def install(dispatcher: Any) -> Any:
    """Replace a ``cache=True`` dispatcher's numba ``FunctionCache`` by a
    :class:`NarrowLoadCache` on the same function; returns the dispatcher."""
    cache = getattr(dispatcher, "_cache", None)
    if type(cache) is FunctionCache and all(hasattr(cache, name) for name in _INTERNALS):
        narrow = NarrowLoadCache(dispatcher.py_func)
        if all(hasattr(narrow, name) for name in _INTERNALS):
            dispatcher._cache = narrow
    return dispatcher
