"""What differs between the Django versions channels_runtime declares (``Django>=4.2``).

One seam, so the rest of the package is written against one Django. Checked
against Django 4.2.30 and 5.2.20, the two versions CI runs the suite on; Django 6.0
needs Python 3.12 and is not run here (its APIs used below are the ones 5.2 has).

- ``Signal.asend``/``asend_robust`` and async receivers arrived in Django 5.0.
  :func:`send_signal` uses ``asend`` there; on 4.2 it runs ``Signal.send`` in the
  thread-sensitive worker, as Django 4.2's own ``ASGIHandler`` sends
  ``request_started``.
- ``django.core.handlers.asgi.get_script_prefix(scope)`` is a module function
  from Django 5.0; 4.2 has only the method ``ASGIHandler.get_script_prefix``.
  :func:`get_script_prefix` is the function on every version.
- The async auth functions (``aauthenticate``, ``alogin``, ``aget_user``, a
  backend's ``aget_user``...) arrived in 5.0 and the async session methods
  (``aget``, ``aset``, ``asave``...) in 5.1: :data:`ASYNC_AUTH_API` and
  :data:`ASYNC_SESSION_API` say whether they are there. The sync methods run
  in the thread-sensitive worker otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import django
from django.conf import settings
from django.core.handlers import asgi as django_asgi
from django.dispatch import Signal

__all__ = [
    "ASYNC_AUTH_API",
    "ASYNC_SESSION_API",
    "ASYNC_SIGNALS",
    "DJANGO_VERSION",
    "get_script_prefix",
    "send_signal",
]

#: The running Django's (major, minor).
DJANGO_VERSION: tuple[int, int] = (django.VERSION[0], django.VERSION[1])
#: ``Signal.asend``/``asend_robust`` and async receivers (Django 5.0).
ASYNC_SIGNALS = DJANGO_VERSION >= (5, 0)
#: ``aauthenticate``, ``alogin``, ``alogout``, ``aget_user``, ``acreate_user`` (Django 5.0).
ASYNC_AUTH_API = DJANGO_VERSION >= (5, 0)
#: ``SessionBase.aget``/``aset``/``asave``/``aflush``/``acycle_key``... (Django 5.1).
ASYNC_SESSION_API = DJANGO_VERSION >= (5, 1)


async def send_signal(signal: Signal, **named: Any) -> list[tuple[Any, Any]]:
    """Send ``signal`` from async code; its receivers' ``(receiver, response)`` pairs.

    ``signal.asend(**named)`` on Django 5.0 and later (sync receivers run in the
    thread-sensitive worker, async ones on the loop). Django 4.2 has neither
    ``asend`` nor async receivers, so ``signal.send`` runs in the
    thread-sensitive worker: the thread Django's own handler sends from, where
    receivers such as ``close_old_connections`` see the request's connections.
    """
    if ASYNC_SIGNALS:
        return list(await signal.asend(**named))
    from ..sync import sync_to_async

    return list(await sync_to_async(signal.send, thread_sensitive=True)(**named))


#: Django's own function (5.0 and later); 4.2 has only ``ASGIHandler.get_script_prefix``.
_django_get_script_prefix: Callable[[Mapping[str, Any]], str] | None = getattr(
    django_asgi, "get_script_prefix", None
)


def get_script_prefix(scope: Mapping[str, Any]) -> str:
    """The script prefix of ``scope``: ``FORCE_SCRIPT_NAME``, else the ASGI ``root_path``.

    Django's own function where it has one (5.0 and later); on 4.2 the same
    rule as its ``ASGIHandler.get_script_prefix``.
    """
    if _django_get_script_prefix is not None:
        return str(_django_get_script_prefix(scope))
    if settings.FORCE_SCRIPT_NAME:
        return str(settings.FORCE_SCRIPT_NAME)
    return str(scope.get("root_path", "") or "")
