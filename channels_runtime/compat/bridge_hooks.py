"""Hooks that put the trio bridge in place on first use, from any entry point.

Why this exists
---------------
The bridge (:mod:`channels_runtime.compat.asgiref_trio`) imports trio and
costs about 0.1 s to import, so it cannot simply be installed whenever
channels_runtime is imported: asyncio-only deployments would pay for trio.
Installing it "when a consumer starts on trio" was not enough either: a plain
test function, a management command or a library calling
``sync_to_async``/``database_sync_to_async``/``Signal.asend`` on trio before any
consumer ran got asgiref's ``RuntimeError: no running event loop``, and whether
a test passed depended on which tests ran before it.

So importing :mod:`channels_runtime` (any of its modules) installs these
hooks, which are cheap and import nothing new:

* ``SyncToAsync.__call__``, ``AsyncToSync.__call__`` and
  ``ThreadSensitiveContext.__aexit__`` become trampolines. While trio has never
  been imported, nothing can be running on trio, so they call asgiref's own
  code (the cost is one ``sys.modules`` lookup). The first call made in a
  process that has imported trio installs the bridge, which replaces the
  trampolines with its own methods, and hands the call over.
* ``django.dispatch.dispatcher.asyncio`` gets a stand-in whose ``gather`` runs
  on a task group in a trio task (``Signal.asend`` always calls
  ``asyncio.gather``), and ``django.utils.asyncio.get_running_loop`` also
  reports a running trio task, so Django's ``async_unsafe`` refuses sync ORM
  calls on the trio thread. Both forward to asyncio otherwise.

Checked with asgiref 3.9 to 3.13 and Django 4.2 and 5.2.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Awaitable, Callable
from types import ModuleType
from typing import Any

import django.dispatch.dispatcher as django_dispatcher
import django.utils.asyncio as django_asyncio
from asgiref.sync import AsyncToSync, SyncToAsync, ThreadSensitiveContext

__all__ = [
    "ORIGINAL_ASYNC_TO_SYNC_CALL",
    "ORIGINAL_CONTEXT_AEXIT",
    "ORIGINAL_SYNC_TO_ASYNC_CALL",
    "install_hooks",
    "on_trio",
]

# asgiref's own methods, captured before anything patches them (importing any
# channels_runtime module runs this first). The bridge's asyncio path calls these.
ORIGINAL_SYNC_TO_ASYNC_CALL: Callable[..., Awaitable[Any]] = SyncToAsync.__call__
ORIGINAL_ASYNC_TO_SYNC_CALL: Callable[..., Any] = AsyncToSync.__call__
ORIGINAL_CONTEXT_AEXIT: Callable[..., Awaitable[None]] = ThreadSensitiveContext.__aexit__


def on_trio() -> bool:
    """True in a trio task. Never imports trio: if it is not imported, it cannot run."""
    trio = sys.modules.get("trio")
    return trio is not None and bool(trio.lowlevel.in_trio_task())


def _bridge() -> ModuleType:
    """Install the bridge (idempotent) and return its module."""
    from channels_runtime.compat import asgiref_trio

    asgiref_trio.install()
    return asgiref_trio


def _sync_to_async_call(self: SyncToAsync[Any, Any], *args: Any, **kwargs: Any) -> Any:
    """``SyncToAsync.__call__`` until the bridge replaces it; returns the coroutine."""
    __traceback_hide__ = True
    if "trio" in sys.modules:
        return _bridge()._patched_sync_to_async_call(self, *args, **kwargs)
    return ORIGINAL_SYNC_TO_ASYNC_CALL(self, *args, **kwargs)


def _async_to_sync_call(self: AsyncToSync[Any, Any], *args: Any, **kwargs: Any) -> Any:
    """``AsyncToSync.__call__`` until the bridge replaces it.

    Called from a thread, where no trio task is visible: the test is only
    whether trio was imported, since a trio worker thread needs the bridge to
    get back to its loop.
    """
    __traceback_hide__ = True
    if "trio" in sys.modules:
        return _bridge()._patched_async_to_sync_call(self, *args, **kwargs)
    return ORIGINAL_ASYNC_TO_SYNC_CALL(self, *args, **kwargs)


def _context_aexit(self: ThreadSensitiveContext, exc: object, value: object, tb: object) -> Any:
    """``ThreadSensitiveContext.__aexit__`` until the bridge replaces it."""
    if "trio" in sys.modules:
        return _bridge()._patched_context_aexit(self, exc, value, tb)
    return ORIGINAL_CONTEXT_AEXIT(self, exc, value, tb)


class _DispatcherAsyncio:
    """Stands in for the ``asyncio`` module inside ``django.dispatch.dispatcher``.

    ``Signal.asend``/``asend_robust`` (Django 5) always call ``asyncio.gather``;
    in a trio task that runs on a task group instead. Every other attribute,
    and ``gather`` outside trio, is asyncio's own.
    """

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)

    def gather(self, *aws: Awaitable[Any], return_exceptions: bool = False) -> Awaitable[Any]:
        if on_trio():
            return _bridge().gather_on_trio(aws, return_exceptions)
        return asyncio.gather(*aws, return_exceptions=return_exceptions)

    def __repr__(self) -> str:
        return "<asyncio for django.dispatch.dispatcher, trio-aware (channels_runtime)>"


def _get_running_loop() -> object:
    """``asyncio.get_running_loop`` that also counts a running trio task.

    Django's ``async_unsafe`` only asks whether this raises. Checking for a
    trio *task* (not merely a trio run) keeps sync code between guest-mode
    ticks, such as pytest fixtures driving anyio's trio runner, allowed.
    """
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        trio = sys.modules.get("trio")
        if trio is not None and trio.lowlevel.in_trio_task():
            return trio.lowlevel.current_trio_token()
        raise


_lock = threading.Lock()
_installed = False


def install_hooks() -> None:
    """Install the trampolines and the Django stand-ins. Idempotent, thread-safe."""
    global _installed
    if _installed:
        return
    with _lock:
        if _installed:
            return
        # Only replace asgiref's own methods: the bridge may already have put its own.
        if SyncToAsync.__call__ is ORIGINAL_SYNC_TO_ASYNC_CALL:
            SyncToAsync.__call__ = _sync_to_async_call  # type: ignore[method-assign]
        if AsyncToSync.__call__ is ORIGINAL_ASYNC_TO_SYNC_CALL:
            AsyncToSync.__call__ = _async_to_sync_call  # type: ignore[method-assign]
        if ThreadSensitiveContext.__aexit__ is ORIGINAL_CONTEXT_AEXIT:
            ThreadSensitiveContext.__aexit__ = _context_aexit  # type: ignore[method-assign]
        # Django 4.2's dispatcher does not use asyncio (it has no asend).
        if getattr(django_dispatcher, "asyncio", None) is asyncio:
            setattr(django_dispatcher, "asyncio", _DispatcherAsyncio())  # noqa: B010
        if getattr(django_asyncio, "get_running_loop", None) is asyncio.get_running_loop:
            setattr(django_asyncio, "get_running_loop", _get_running_loop)  # noqa: B010
        _installed = True
