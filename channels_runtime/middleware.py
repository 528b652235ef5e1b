"""The base class for ASGI middleware, with Django Channels 4.2's behaviour.

Channels middleware (sessions, auth, your own) subclasses :class:`BaseMiddleware`
and overrides ``__call__`` to add keys to the scope before calling ``super()``.
"""

from __future__ import annotations

from .asgi import ASGIApp, Receive, Scope, Send


class BaseMiddleware:
    """Wraps an inner ASGI application and hands it a private copy of the scope.

    One middleware instance serves every connection, so keep per-connection
    state in the scope, never on ``self``.

    The scope is copied (shallowly) before the inner application sees it, so
    keys the inner application or deeper middleware add or replace stay out of
    the scope that the server and outer middleware hold. Values are shared, not
    copied: mutating, say, the ``headers`` list in place is still visible
    outside.

    ``__call__`` returns whatever the inner application returns, as Channels'
    does, so a subclass that returns ``await super().__call__(...)`` passes the
    value up too.
    """

    def __init__(self, inner: ASGIApp) -> None:
        self.inner = inner

    # A coroutine function, not a plain method returning an awaitable: Hypercorn
    # (like asgiref's guarantee_single_callable) decides that an object is an
    # ASGI 3 application by finding a coroutine ``__call__``.
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope = dict(scope)
        return await self.inner(scope, receive, send)


__all__ = ["BaseMiddleware"]
