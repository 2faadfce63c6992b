"""Which Redis errors are worth waiting out, and which are the fault of what was being done.

redis-py turns the error replies it knows into their own classes and strips the code from the
message: ``NOSCRIPT`` becomes ``NoScriptError("No matching script...")``, ``READONLY`` a
``ReadOnlyError``, ``OOM`` an ``OutOfMemoryError`` (also when a script's write hits it),
``LOADING`` a ``BusyLoadingError`` (a ``ConnectionError``), ``NOPERM`` a ``NoPermissionError``.
So the code cannot be looked for in the text: the class says it. Only a plain ``ResponseError``
keeps its code (``ERR``, ``WRONGTYPE``, ``BUSY``, ``MASTERDOWN``...).
"""

from __future__ import annotations

from redis.exceptions import DataError, ResponseError

# Plain error replies that say "not now" rather than "never": a script running too long, a replica
# cut off from its primary, a cluster or a failover in progress, writes refused after a failed save
# (a full or failing disk).
_TRANSIENT_CODES = (
    "BUSY ",
    "MASTERDOWN ",
    "TRYAGAIN ",
    "CLUSTERDOWN ",
    "NOREPLICAS ",
    "MISCONF ",
)


def transient(exc: BaseException) -> bool:
    """True when the same call may well succeed later: Redis unreachable, timing out, loading,
    read-only (a demoted primary), out of memory, missing a script (restarted or flushed), refusing
    our credentials or permissions (an operator's fix), busy, refusing writes after a failed save.
    False for what would fail the same way every time: any other plain error reply (``ERR`` from a
    script that fails on this input, ``WRONGTYPE``) and an argument Redis cannot take
    (``DataError``). Anything else (an ``OSError``, redis-py's ``ConnectionError`` or
    ``TimeoutError``) is transient."""
    if isinstance(exc, DataError):
        return False
    if type(exc) is ResponseError:
        return str(exc).startswith(_TRANSIENT_CODES)
    return True
