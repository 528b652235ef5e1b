"""Thread-sensitive sync <-> async adapters that work on asyncio and trio.

These are asgiref's own ``sync_to_async``, ``async_to_sync``,
``SyncToAsync``, ``AsyncToSync`` and ``ThreadSensitiveContext``, re-exported
rather than re-implemented. Django's async APIs (``aget``, ``asave``,
sessions, ``aauthenticate``, ``Signal.asend``, ...) call asgiref directly, so
a second implementation could never cover them; one set of classes, made
loop-neutral, covers both user code and Django.

asgiref only knows asyncio. On trio the runtime installs a bridge
(:mod:`channels_runtime.compat.asgiref_trio`) that teaches these very classes
to run on trio, keeping asgiref's semantics: thread-sensitive calls share one
thread, ``async_to_sync`` inside a sync call runs on the calling loop, and
nested thread-sensitive calls come back to the waiting thread. The first call
made on trio installs it (see :mod:`channels_runtime.compat.bridge_hooks`), so
these adapters work on trio from anywhere; :func:`ensure_bridge` installs it
ahead of time. On asyncio nothing is installed.

The one behaviour that differs: cancelling a ``sync_to_async`` call on trio
waits for the thread to finish before the cancellation propagates, while
asgiref on asyncio returns at once and leaves the thread running.
"""

from __future__ import annotations

from asgiref.sync import (
    AsyncToSync,
    SyncToAsync,
    ThreadSensitiveContext,
    async_to_sync,
    sync_to_async,
)

from channels_runtime.compat.backend import ensure_bridge

__all__ = [
    "AsyncToSync",
    "SyncToAsync",
    "ThreadSensitiveContext",
    "async_to_sync",
    "ensure_bridge",
    "sync_to_async",
]
