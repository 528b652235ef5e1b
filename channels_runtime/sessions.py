"""Cookies and Django sessions for ASGI connections (HTTP and WebSocket).

``CookieMiddleware`` puts the request's cookies in ``scope["cookies"]``;
``SessionMiddleware`` puts a Django session store in ``scope["session"]``,
keyed by the session cookie. For HTTP, the session is saved and its cookie
refreshed when the response starts, with the rules of Django's own
``SessionMiddleware`` but one: as in Channels, no ``Vary: Cookie`` is added, so
a response carries the headers its application sent plus ``Set-Cookie`` and
nothing else. An HTTP consumer whose response depends on the session sends
``Vary: Cookie`` itself when a shared cache may sit in front of it. A
WebSocket has no response to carry a cookie, so there the consumer saves the
session itself with ``await scope["session"].asave()``.

The session API used here is Django's async one (``asave``, ``aget``...,
Django 5.1+). Those methods hop to a worker thread through asgiref, which on
trio needs the bridge from :mod:`channels_runtime.compat.backend`; each
middleware installs it on entry, so applications need not think about it.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable
from importlib import import_module
from typing import Any, ClassVar, Literal

import django
from django.conf import settings
from django.contrib.sessions.backends.base import SessionBase, UpdateError
from django.core.exceptions import SuspiciousOperation
from django.http import parse_cookie
from django.http.cookie import SimpleCookie
from django.utils import timezone
from django.utils.encoding import force_str
from django.utils.functional import LazyObject, empty
from django.utils.http import http_date

from .asgi import ASGIApp, Message, Receive, Scope, Send
from .compat.backend import ensure_bridge

__all__ = [
    "CookieMiddleware",
    "InstanceSessionWrapper",
    "InvalidSameSite",
    "SessionMiddleware",
    "SessionMiddlewareStack",
]

#: Django grew ``asave``/``aget``/``aflush``/... on sessions in 5.1. Older
#: versions get the sync methods run in the thread-sensitive worker instead.
ASYNC_SESSION_API = django.VERSION >= (5, 1)

_SAMESITE_VALUES = ("lax", "strict", "none")
# The expiry Django writes for a deleted cookie; any date in the past works.
_EPOCH = "Thu, 01 Jan 1970 00:00:00 GMT"

SameSite = str | Literal[False] | None


class InvalidSameSite(ValueError, AssertionError):
    """A ``samesite`` value other than ``"lax"``, ``"strict"`` or ``"none"``.

    Both a ``ValueError``, what Django's ``HttpResponse.set_cookie`` raises, and
    an ``AssertionError``, what Channels' ``assert`` raises, so code written
    against either catches it. Unlike an ``assert`` it is also raised under
    ``python -O``.
    """

    def __init__(self, samesite: object) -> None:
        # Channels' wording, word for word; the rejected value goes in a note so
        # the message itself stays what tests written for Channels compare against.
        super().__init__("samesite must be either 'strict', 'lax' or 'none'")
        self.samesite = samesite
        self.add_note(f"samesite was {samesite!r}")


async def run_session_method(session: Any, name: str, *args: Any) -> Any:
    """Call session method ``name`` without blocking the event loop.

    Uses Django's ``a<name>`` coroutine when this Django has it; otherwise runs
    the sync method in the thread-sensitive worker (where Django keeps its DB
    connection), closing stale connections around it as Channels does.
    """
    async_method = getattr(session, "a" + name, None) if ASYNC_SESSION_API else None
    if async_method is not None:
        return await async_method(*args)
    from .db import database_sync_to_async

    return await database_sync_to_async(getattr(session, name))(*args)


class CookieMiddleware:
    """Parses the ``Cookie`` header into ``scope["cookies"]`` (a dict like ``request.COOKIES``).

    Also hosts :meth:`set_cookie` and :meth:`delete_cookie`, which write
    ``Set-Cookie`` headers into an ``http.response.start`` message.
    """

    def __init__(self, inner: ASGIApp) -> None:
        self.inner = inner

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if "headers" not in scope:
            raise ValueError(
                "CookieMiddleware was passed a scope that did not have a headers key "
                "(make sure it is only passed HTTP or WebSocket connections)"
            )
        # HTTP/2 clients may split cookies over several ``cookie`` headers;
        # join them the way Django's ASGIRequest does so none is lost.
        parts = [
            value.decode("latin1").rstrip("; ")
            for name, value in scope["headers"]
            if name.lower() == b"cookie"
        ]
        cookies = parse_cookie("; ".join(parts)) if parts else {}
        # Returned, as Channels' middleware return the inner application's value.
        return await self.inner(dict(scope, cookies=cookies), receive, send)

    @classmethod
    def set_cookie(
        cls,
        message: Message,
        key: str,
        value: Any = "",
        max_age: int | float | datetime.timedelta | None = None,
        expires: str | datetime.datetime | None = None,
        path: str | None = "/",
        domain: str | None = None,
        secure: bool | None = False,
        httponly: bool | None = False,
        samesite: SameSite = "lax",
    ) -> None:
        """Add a ``Set-Cookie`` header for ``key`` to the HTTP response ``message``.

        Arguments mean what they mean for Django's ``HttpResponse.set_cookie``.
        ``expires`` is either a preformatted HTTP date string or a datetime
        (naive means UTC), from which ``max_age`` is worked out — so passing
        both a datetime and ``max_age`` is ambiguous and refused. ``samesite``
        must be ``"lax"``, ``"strict"`` or ``"none"`` (any case), or a false
        value to leave the attribute out; anything else raises
        :class:`InvalidSameSite`.
        """
        morsels: SimpleCookie = SimpleCookie()
        morsels[key] = force_str(value)
        morsel = morsels[key]
        if isinstance(expires, datetime.datetime):
            if max_age is not None:
                raise ValueError("'expires' and 'max_age' can't be used together.")
            if timezone.is_naive(expires):
                expires = timezone.make_aware(expires, datetime.UTC)
            # The extra second makes up for the fraction lost between taking
            # the difference here and formatting the date below.
            delta = expires - datetime.datetime.now(tz=datetime.UTC)
            delta += datetime.timedelta(seconds=1)
            max_age = max(0, delta.days * 86400 + delta.seconds)
            expires = None
        morsel["expires"] = expires or ""
        if max_age is not None:
            if isinstance(max_age, datetime.timedelta):
                max_age = max_age.total_seconds()
            morsel["max-age"] = int(max_age)
            # Old clients only understand Expires, so always send both.
            if not expires:
                morsel["expires"] = http_date(time.time() + max_age)
        if path is not None:
            morsel["path"] = path
        if domain is not None:
            morsel["domain"] = domain
        if secure:
            morsel["secure"] = True
        if httponly:
            morsel["httponly"] = True
        if samesite:
            if samesite.lower() not in _SAMESITE_VALUES:
                raise InvalidSameSite(samesite)
            morsel["samesite"] = samesite
        headers = list(message.get("headers", ()))
        headers.append((b"Set-Cookie", morsel.OutputString().encode("latin1")))
        message["headers"] = headers

    @classmethod
    def delete_cookie(
        cls,
        message: Message,
        key: str,
        path: str | None = "/",
        domain: str | None = None,
        samesite: SameSite = None,
    ) -> None:
        """Add a ``Set-Cookie`` header to ``message`` that makes the client drop ``key``.

        ``path`` and ``domain`` must match the ones the cookie was set with or
        the browser keeps it. As in Django, the deletion is marked ``Secure``
        when browsers would otherwise ignore it: for ``__Secure-``/``__Host-``
        names and for ``SameSite=None``.
        """
        secure = key.startswith(("__Secure-", "__Host-")) or bool(
            samesite and samesite.lower() == "none"
        )
        cls.set_cookie(
            message,
            key,
            max_age=0,
            expires=_EPOCH,
            path=path,
            domain=domain,
            secure=secure,
            samesite=samesite,
        )


class _SessionLazyObject(LazyObject):
    """``scope["session"]``: the session store, made on first use from ``factory``."""

    def __init__(self, factory: Callable[[], SessionBase]) -> None:
        self.__dict__["_factory"] = factory
        super().__init__()

    def _setup(self) -> None:
        self._wrapped = self.__dict__["_factory"]()


class InstanceSessionWrapper:
    """One connection's session: puts it in the scope and saves it as the response starts.

    Created per application instance by :class:`SessionMiddleware`; holds
    per-connection state, which the middleware itself must not.
    """

    #: Message types on which a modified session is saved.
    save_message_types: ClassVar[list[str]] = ["http.response.start"]
    #: Message types that can carry the session cookie back to the client.
    cookie_response_message_types: ClassVar[list[str]] = ["http.response.start"]

    def __init__(self, scope: Scope, send: Send) -> None:
        self.cookie_name: str = settings.SESSION_COOKIE_NAME
        self.session_store: type[SessionBase] = import_module(settings.SESSION_ENGINE).SessionStore
        self.scope: Scope = dict(scope)
        self.real_send = send
        if "session" in self.scope:
            # An outer session middleware owns the session and saves it.
            self.activated = False
            return
        if "cookies" not in self.scope:
            raise ValueError(
                "No cookies in scope - SessionMiddleware needs to run inside of CookieMiddleware."
            )
        self.scope["session"] = _SessionLazyObject(self._make_store)
        self.activated = True

    def _make_store(self) -> SessionBase:
        # Building a store does no I/O: the data loads on first read.
        return self.session_store(self.scope["cookies"].get(self.cookie_name))

    async def resolve_session(self) -> None:
        """Create the session store now (a hook kept for Channels subclasses)."""
        session = self.scope["session"]
        if self.activated and session._wrapped is empty:
            session._setup()

    async def send(self, message: Message) -> None:
        """Pass ``message`` on, first saving the session and setting its cookie if due."""
        if self.activated and message["type"] in self.save_message_types:
            await self._process_response(message)
        await self.real_send(message)

    async def _process_response(self, message: Message) -> None:
        # The rules of django.contrib.sessions.middleware.SessionMiddleware, except
        # that, as in Channels, no ``Vary: Cookie`` is added: the response's headers
        # are the application's own plus the cookie (see the module docstring).
        session = self.scope["session"]
        modified = session.modified
        is_empty = session.is_empty()
        carries_cookie = message["type"] in self.cookie_response_message_types
        if is_empty and self.cookie_name in self.scope["cookies"]:
            # The session was emptied (flushed, logged out): drop the cookie.
            if carries_cookie:
                CookieMiddleware.delete_cookie(
                    message,
                    self.cookie_name,
                    path=settings.SESSION_COOKIE_PATH,
                    domain=settings.SESSION_COOKIE_DOMAIN,
                    samesite=settings.SESSION_COOKIE_SAMESITE,
                )
            return
        # A 5xx means the view failed part way: don't persist its changes.
        if (
            (modified or settings.SESSION_SAVE_EVERY_REQUEST)
            and not is_empty
            and message.get("status", 200) < 500
        ):
            if await run_session_method(session, "get_expire_at_browser_close"):
                max_age = None
                expires = None
            else:
                max_age = await run_session_method(session, "get_expiry_age")
                expires = http_date(time.time() + max_age)
            await self.save_session()
            if carries_cookie:
                CookieMiddleware.set_cookie(
                    message,
                    self.cookie_name,
                    session.session_key,
                    max_age=max_age,
                    expires=expires,
                    domain=settings.SESSION_COOKIE_DOMAIN,
                    path=settings.SESSION_COOKIE_PATH,
                    secure=settings.SESSION_COOKIE_SECURE or None,
                    httponly=settings.SESSION_COOKIE_HTTPONLY or None,
                    samesite=settings.SESSION_COOKIE_SAMESITE,
                )

    async def save_session(self) -> None:
        """Save the session, turning Django's ``UpdateError`` into ``SuspiciousOperation``.

        ``UpdateError`` means the row vanished under us — typically a logout
        in a concurrent request flushed it — and recreating it would undo that
        logout, so the response must fail instead.
        """
        try:
            await run_session_method(self.scope["session"], "save")
        except UpdateError:
            raise SuspiciousOperation(
                "The request's session was deleted before the request completed. "
                "The user may have logged out in a concurrent request, for example."
            ) from None


class SessionMiddleware:
    """Adds a Django session, found by the session cookie, as ``scope["session"]``.

    Works for HTTP and WebSocket scopes. Must sit inside
    :class:`CookieMiddleware` (see :func:`SessionMiddlewareStack`). Keeps no
    per-connection state, so one instance serves every connection.
    """

    def __init__(self, inner: ASGIApp) -> None:
        self.inner = inner

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ensure_bridge()
        wrapper = InstanceSessionWrapper(scope, send)
        await wrapper.resolve_session()
        return await self.inner(wrapper.scope, receive, wrapper.send)


def SessionMiddlewareStack(inner: ASGIApp) -> ASGIApp:
    """``CookieMiddleware(SessionMiddleware(inner))``: sessions with the cookies they need."""
    return CookieMiddleware(SessionMiddleware(inner))
