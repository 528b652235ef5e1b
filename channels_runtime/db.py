"""Database connection hygiene for long-lived consumers.

Django closes stale connections around each HTTP request (``request_started``
and ``request_finished``). A WebSocket consumer lives for hours, so Channels
closes them instead before ``connect``, before each handler and after
disconnect; this module does the same, with two improvements:

* **No thread hop when there is nothing to close.** Connections are opened
  only in worker threads. We learn of every one through Django's
  ``connection_created`` signal and, from the event loop, read the few
  attributes that Django's ``BaseDatabaseWrapper.close_if_unusable_or_obsolete``
  looks at. When none of them would make that method act, running it would
  change nothing, so we skip it — the common case costs a lock and a dict
  lookup instead of a round trip through a thread (about 77 µs in Channels).
  When one would, we go to the thread-sensitive thread and run Django's own
  ``close_old_connections`` there, exactly as Channels does.
* **An explicit switch for tests.** Closing the test database's connection
  mid-test breaks the test transaction. Channels patches a module global with
  ``mock.patch``, which races between threads (channels#2118). Here
  :func:`keep_connections_open` is a thread-safe, re-entrant switch that the
  communicators and test cases hold while they run.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from asgiref.sync import SyncToAsync
from django.db import close_old_connections as _django_close_old_connections
from django.db.backends.signals import connection_created

from .sync import sync_to_async

T = TypeVar("T")

__all__ = [
    "DatabaseSyncToAsync",
    "aclose_old_connections",
    "close_old_connections",
    "close_pass_due",
    "connections_need_closing",
    "database_sync_to_async",
    "keep_connections_open",
]

# -- the test switch ---------------------------------------------------------

_keep_lock = threading.Lock()
_keep_depth = 0


@contextmanager
def keep_connections_open() -> Iterator[None]:
    """While held (from any thread), closing old connections does nothing.

    Re-entrant and thread-safe: nested or concurrent holders are counted, and
    connections are closed again only once every holder has left.
    """
    global _keep_depth
    with _keep_lock:
        _keep_depth += 1
    try:
        yield
    finally:
        with _keep_lock:
            _keep_depth -= 1


def connections_kept_open() -> bool:
    """Whether :func:`keep_connections_open` is held anywhere."""
    return _keep_depth > 0


# -- knowing when there is something to close ---------------------------------

_open_lock = threading.Lock()
# id(wrapper) -> weak reference to every DatabaseWrapper that connected.
# Never rebound: the consumers test its truth value directly on their hot path.
_open_wrappers: dict[int, weakref.ReferenceType[Any]] = {}


def _track_connection(sender: Any, connection: Any, **kwargs: Any) -> None:
    key = id(connection)

    def forget(_ref: weakref.ReferenceType[Any], key: int = key) -> None:
        with _open_lock:
            _open_wrappers.pop(key, None)

    with _open_lock:
        _open_wrappers[key] = weakref.ref(connection, forget)


connection_created.connect(_track_connection, dispatch_uid="channels_runtime.db.track")


def _track_already_open() -> None:
    """Track the connections this thread opened before this module was imported.

    ``connection_created`` only reports connections made from now on; one made
    earlier (by a settings check or an ``AppConfig.ready()``, say) would
    otherwise never be closed by the consumers' hook. Connections are
    per-thread, so only the importing thread's can be seen here; other threads
    in practice open theirs later, through the signal.
    """
    from django.conf import settings
    from django.db import connections

    if not settings.configured:
        # Nothing can be open yet, and reading DATABASES now would configure
        # settings from DJANGO_SETTINGS_MODULE behind the importer's back.
        return
    wrappers = connections.all(initialized_only=True)
    for wrapper in wrappers:
        if wrapper.connection is not None:
            _track_connection(sender=type(wrapper), connection=wrapper)


_track_already_open()


def _would_act(wrapper: Any, now: float) -> bool:
    """Whether ``close_if_unusable_or_obsolete`` would change ``wrapper`` (see Django)."""
    if wrapper.errors_occurred:
        return True
    # The pass resets health_check_done, which only matters with CONN_HEALTH_CHECKS.
    if wrapper.health_check_done and wrapper.health_check_enabled:
        return True
    if wrapper.autocommit != wrapper.settings_dict["AUTOCOMMIT"]:
        return True
    close_at = wrapper.close_at
    if close_at is None or now < close_at:
        return False
    # Django ignores close() on an in-memory SQLite database (it would destroy
    # the data), so an "expired" one is never actually closed: no pass needed.
    in_memory = getattr(wrapper, "is_in_memory_db", None)
    return not (in_memory is not None and in_memory())


def connections_need_closing() -> bool:
    """Whether a close pass could change any open connection right now.

    Reads plain attributes only, so it is safe and cheap on the event loop.
    Forgets wrappers whose connection has been closed.
    """
    if not _open_wrappers:
        return False
    now = time.monotonic()
    with _open_lock:
        entries = list(_open_wrappers.items())
    needed = False
    for key, ref in entries:
        wrapper = ref()
        if wrapper is None or wrapper.connection is None:
            with _open_lock:
                if _open_wrappers.get(key) is ref and (
                    wrapper is None or wrapper.connection is None
                ):
                    del _open_wrappers[key]
            continue
        if not needed and _would_act(wrapper, now):
            needed = True
    return needed


# -- closing -------------------------------------------------------------------


def close_pass_due() -> bool:
    """Whether :func:`aclose_old_connections` would do anything now (no await needed).

    The consumer's hot path calls this first, so that the usual answer — no —
    costs no coroutine.
    """
    return not _keep_depth and bool(_open_wrappers) and connections_need_closing()


def close_old_connections(**kwargs: Any) -> None:
    """Django's ``close_old_connections`` for this thread, unless tests keep connections open."""
    if _keep_depth:
        return
    _django_close_old_connections()


async def aclose_old_connections() -> None:
    """Close this context's unusable or obsolete connections, from async code.

    Hops to the thread-sensitive thread (where the connections live) only when
    :func:`connections_need_closing` says a close pass would do something.
    """
    if close_pass_due():
        await sync_to_async(close_old_connections)()


class DatabaseSyncToAsync(SyncToAsync):
    """``sync_to_async`` that closes old connections before and after the call.

    Use it (as ``database_sync_to_async``) for sync functions that use the ORM
    from a consumer, so a connection never outlives ``CONN_MAX_AGE`` or a
    server-side disconnect.
    """

    def thread_handler(self, loop: Any, *args: Any, **kwargs: Any) -> Any:
        # Without a single connection ever opened (none tracked) there is nothing
        # to close, and Django's pass over every alias can be skipped.
        if _open_wrappers:
            close_old_connections()
        try:
            return super().thread_handler(loop, *args, **kwargs)
        finally:
            if _open_wrappers:
                close_old_connections()


#: Channels' spelling, used as a decorator: ``@database_sync_to_async``.
database_sync_to_async = DatabaseSyncToAsync
