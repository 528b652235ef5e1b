"""Django authentication for ASGI connections: ``scope["user"]``, login and logout.

These are the scope counterparts of ``django.contrib.auth``'s ``aget_user``,
``alogin`` and ``alogout``: the same session keys and checks, with the
connection scope standing in for the request. They are coroutines throughout
— Channels 4.2 runs a sync version in a worker thread instead — and use
Django's async session, backend and signal APIs, which work on trio once the
bridge from :mod:`channels_runtime.compat.backend` is installed (done here on
every call, cheaply).

Unlike Django's ``login``, these do not rotate the CSRF token: a scope has no
CSRF cookie to rotate.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth import (
    BACKEND_SESSION_KEY,
    HASH_SESSION_KEY,
    SESSION_KEY,
    get_user_model,
    load_backend,
    user_logged_in,
    user_logged_out,
)
from django.core.exceptions import ImproperlyConfigured
from django.utils.crypto import constant_time_compare
from django.utils.functional import LazyObject, empty

from . import metrics
from .asgi import ASGIApp, Receive, Scope, Send
from .compat.backend import ensure_bridge
from .compat.django_versions import send_signal
from .middleware import BaseMiddleware
from .sessions import CookieMiddleware, SessionMiddleware, run_session_method

__all__ = [
    "AuthMiddleware",
    "AuthMiddlewareStack",
    "UserLazyObject",
    "get_user",
    "login",
    "logout",
]


def _session_of(scope: Scope) -> Any:
    try:
        return scope["session"]
    except KeyError:
        raise ValueError(
            "Cannot find session in scope. You should wrap your consumer in SessionMiddleware."
        ) from None


async def _user_id_in(session: Any) -> Any:
    """The logged-in user's primary key from ``session``; ``KeyError`` if there is none.

    Sessions store it as a string, so it is converted back with the user
    model's primary key field.
    """
    raw = await run_session_method(session, "get", SESSION_KEY)
    if raw is None:
        raise KeyError(SESSION_KEY)
    return get_user_model()._meta.pk.to_python(raw)


async def _backend_get_user(backend: Any, user_id: Any) -> Any:
    # Backends grew aget_user in Django 5.0; a third-party backend may still
    # only have the sync method.
    aget_user = getattr(backend, "aget_user", None)
    if aget_user is not None:
        return await aget_user(user_id)
    from .db import database_sync_to_async

    return await database_sync_to_async(backend.get_user)(user_id)


async def get_user(scope: Scope) -> Any:
    """The user whose login is recorded in ``scope["session"]``, or an ``AnonymousUser``.

    The session must carry the auth hash of the user's current password (or
    of a password hashed with one of ``SECRET_KEY_FALLBACKS``, in which case
    the session is moved to a new key and the hash renewed). Otherwise the
    password has changed since login, and the session is flushed: changing a
    password logs out every other session, as in Django.
    """
    from django.contrib.auth.models import AnonymousUser

    ensure_bridge()
    session = _session_of(scope)
    user = None
    try:
        user_id = await _user_id_in(session)
        backend_path = await run_session_method(session, "get", BACKEND_SESSION_KEY)
    except KeyError:
        pass
    else:
        if backend_path in settings.AUTHENTICATION_BACKENDS:
            user = await _backend_get_user(load_backend(backend_path), user_id)
            if hasattr(user, "get_session_auth_hash"):
                user = await _verify_session_hash(session, user)
    return user or AnonymousUser()


async def _verify_session_hash(session: Any, user: Any) -> Any:
    """``user`` if the session's auth hash matches theirs, else ``None`` (session flushed)."""
    session_hash = await run_session_method(session, "get", HASH_SESSION_KEY)
    if not session_hash:
        await run_session_method(session, "flush")
        return None
    current_hash = user.get_session_auth_hash()
    if constant_time_compare(session_hash, current_hash):
        return user
    fallback_hashes = getattr(user, "get_session_auth_fallback_hash", lambda: ())()
    if any(constant_time_compare(session_hash, fallback) for fallback in fallback_hashes):
        # Signed with a retired SECRET_KEY: still valid, but re-sign it.
        await run_session_method(session, "cycle_key")
        await _session_set(session, HASH_SESSION_KEY, current_hash)
        return user
    await run_session_method(session, "flush")
    return None


async def _session_set(session: Any, key: str, value: Any) -> None:
    if hasattr(session, "aset"):
        await session.aset(key, value)
    else:
        # Pre-5.1 Django: assigning only loads the data, which is already
        # loaded by the time any caller here sets a key.
        session[key] = value


def _backend_for(user: Any, backend: str | None) -> str:
    """The dotted path of the backend ``user`` logged in with (Django's rules)."""
    try:
        chosen = backend or user.backend
    except AttributeError:
        configured = list(settings.AUTHENTICATION_BACKENDS)
        if not configured:
            raise ImproperlyConfigured(
                "No authentication backends have been defined. "
                "Does AUTHENTICATION_BACKENDS contain anything?"
            ) from None
        if len(configured) > 1:
            raise ValueError(
                "You have multiple authentication backends configured and therefore must "
                "provide the `backend` argument or set the `backend` attribute on the user."
            ) from None
        return str(configured[0])
    if not isinstance(chosen, str):
        raise TypeError(f"backend must be a dotted import path string (got {chosen!r}).")
    return chosen


async def login(scope: Scope, user: Any, backend: str | None = None) -> None:
    """Log ``user`` in on this connection: record them in the session and the scope.

    ``user`` may be ``None`` to log in ``scope["user"]`` (as Channels allows).
    If the session belonged to another user (or a stale password) it is
    flushed; otherwise its key is cycled, so a session key known before login
    is useless after it. Data from an anonymous session is kept. Sends
    ``user_logged_in`` with ``request=None``.

    The session is only changed, not saved: an HTTP response saves it, a
    WebSocket consumer must ``await scope["session"].asave()``.
    """
    ensure_bridge()
    session = _session_of(scope)
    if user is None:
        user = scope.get("user")
    if user is None:
        raise ValueError("User must be passed as an argument or must be present in the scope.")
    # Settled first, so a bad backend fails before the session is touched.
    backend_path = _backend_for(user, backend)
    session_auth_hash = ""
    if hasattr(user, "get_session_auth_hash"):
        session_auth_hash = user.get_session_auth_hash()
    if await run_session_method(session, "has_key", SESSION_KEY):
        other_user = await _user_id_in(session) != user.pk
        stale_hash = session_auth_hash and not constant_time_compare(
            await run_session_method(session, "get", HASH_SESSION_KEY, ""), session_auth_hash
        )
        if other_user or stale_hash:
            # Never carry another user's session data over to this one.
            await run_session_method(session, "flush")
    else:
        await run_session_method(session, "cycle_key")
    await _session_set(session, SESSION_KEY, user._meta.pk.value_to_string(user))
    await _session_set(session, BACKEND_SESSION_KEY, backend_path)
    await _session_set(session, HASH_SESSION_KEY, session_auth_hash)
    scope["user"] = user
    await send_signal(user_logged_in, sender=user.__class__, request=None, user=user)


async def logout(scope: Scope) -> None:
    """Log this connection out: flush the session, make ``scope["user"]`` anonymous.

    ``user_logged_out`` is sent first (with ``request=None``), so receivers
    can still see who is leaving; as in Channels it is not sent when nobody
    was logged in. Save the session afterwards as for :func:`login`.
    """
    from django.contrib.auth.models import AnonymousUser

    ensure_bridge()
    session = _session_of(scope)
    user = scope.get("user")
    if user is not None and not getattr(user, "is_authenticated", True):
        user = None
    if user is not None:
        await send_signal(user_logged_out, sender=user.__class__, request=None, user=user)
    await run_session_method(session, "flush")
    if "user" in scope:
        scope["user"] = AnonymousUser()


class UserLazyObject(LazyObject):
    """``scope["user"]`` before :class:`AuthMiddleware` has looked the user up.

    Reading it that early is a bug in the middleware order, reported as such
    rather than as Django's generic ``NotImplementedError``.
    """

    def _setup(self) -> None:
        raise ValueError("Accessing scope user before it is ready.")


class AuthMiddleware(BaseMiddleware):
    """Puts the session's user (or ``AnonymousUser``) in ``scope["user"]``.

    The user is looked up before the inner application starts, so consumers
    can read ``self.scope["user"]`` anywhere without awaiting. Needs
    :class:`~channels_runtime.sessions.SessionMiddleware` above it.
    """

    def populate_scope(self, scope: Scope) -> None:
        """Check the session is there and put a placeholder user in ``scope``."""
        if "session" not in scope:
            raise ValueError(
                "AuthMiddleware cannot find session in scope. SessionMiddleware must be above it."
            )
        if "user" not in scope:
            scope["user"] = UserLazyObject()

    async def resolve_scope(self, scope: Scope) -> None:
        """Fill the placeholder with the session's user (a user set upstream is kept)."""
        placeholder = scope["user"]
        if isinstance(placeholder, UserLazyObject) and placeholder._wrapped is empty:
            placeholder._wrapped = await get_user(scope)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ensure_bridge()
        scope = dict(scope)
        self.populate_scope(scope)
        await self.resolve_scope(scope)
        if metrics.enabled:  # to count a handshake refused to an anonymous user as "auth"
            metrics.connections.note_user(scope["user"])
        # Returned, as Channels' middleware return the inner application's value.
        return await super().__call__(scope, receive, send)


def AuthMiddlewareStack(inner: ASGIApp) -> ASGIApp:
    """``CookieMiddleware(SessionMiddleware(AuthMiddleware(inner)))``: the usual stack."""
    return CookieMiddleware(SessionMiddleware(AuthMiddleware(inner)))
