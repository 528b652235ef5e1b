"""Routers: ASGI applications that pick another application for each connection.

The names and behaviour follow Django Channels 4.2 (``ProtocolTypeRouter``,
``URLRouter``, ``ChannelNameRouter``, ``get_default_application``) so a
project's ``asgi.py`` ports by renaming the import. Where Channels fails noisily
we are quieter and stricter at the right moment:

* ``ProtocolTypeRouter`` answers the ``lifespan`` scope itself, so servers do
  not log a lifespan error and channel layers are closed at shutdown;
* ``URLRouter`` checks its routes when it is built. An unmatched path raises
  :class:`NoRouteFound`, a ``ValueError`` as in Channels, and
  ``ProtocolTypeRouter`` turns it into the refusal the protocol expects
  (websocket handshake denied, HTTP 404) with one warning line instead of an
  exception traceback.

Like Channels' routers, each router returns whatever the application it picked
returns, so wrappers and tests can see it.

Routing runs once per connection. All pattern preparation (regex compilation,
prefix variants of nested routes) happens at construction, never per call.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple, cast

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.urls.resolvers import RegexPattern, RoutePattern, URLPattern, URLResolver

from . import metrics
from .asgi import ASGIApp, Receive, Scope, Send
from .compat import hypercorn_fixes
from .compat.backend import ensure_bridge
from .exceptions import ClientInputRefused
from .http import check_http_application, substitute_django_handler
from .layers.manager import channel_layers

logger = logging.getLogger(__name__)

__all__ = [
    "ChannelNameRouter",
    "NoRouteFound",
    "ProtocolTypeRouter",
    "URLRouter",
    "get_default_application",
]


def get_default_application() -> ASGIApp:
    """Import and return the application named by ``settings.ASGI_APPLICATION``.

    A missing setting, a module that does not exist, or a missing attribute are
    configuration mistakes and raise ``ImproperlyConfigured`` naming the path.
    A module that exists but fails while importing (its own ``import`` of a
    missing package, a circular import, ...) is a bug in that module, so the
    message says so and the original error stays chained with its traceback.
    """
    dotted = getattr(settings, "ASGI_APPLICATION", None)
    if not dotted:
        raise ImproperlyConfigured(
            "Cannot find ASGI_APPLICATION setting. Set it to the dotted path of your "
            "application, for example 'myproject.asgi.application'."
        )
    if not isinstance(dotted, str):
        raise ImproperlyConfigured(f"ASGI_APPLICATION must be a dotted path string, got {dotted!r}")
    module_path, _, name = dotted.rpartition(".")
    if not module_path or not name:
        raise ImproperlyConfigured(
            f"ASGI_APPLICATION {dotted!r} is not a dotted path of the form "
            "'package.module.attribute'"
        )
    try:
        module = importlib.import_module(module_path)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing and (module_path == missing or module_path.startswith(missing + ".")):
            raise ImproperlyConfigured(
                f"Cannot import ASGI_APPLICATION module {module_path!r} "
                f"(from ASGI_APPLICATION={dotted!r}): no module named {missing!r}"
            ) from exc
        raise ImproperlyConfigured(
            f"ASGI_APPLICATION module {module_path!r} was found but importing it raised "
            f"{type(exc).__name__}: {exc} (see the chained traceback)"
        ) from exc
    except ImportError as exc:
        raise ImproperlyConfigured(
            f"ASGI_APPLICATION module {module_path!r} was found but importing it raised "
            f"{type(exc).__name__}: {exc} (see the chained traceback)"
        ) from exc
    try:
        application = getattr(module, name)
    except AttributeError:
        raise ImproperlyConfigured(
            f"Cannot find {name!r} in ASGI_APPLICATION module {module_path!r}"
        ) from None
    return cast(ASGIApp, application)


class NoRouteFound(ValueError):
    """No ``URLRouter`` route matches the connection's path.

    A ``ValueError``, because that is what Channels raises, so code and tests
    that expect one keep working. :class:`ProtocolTypeRouter` catches it for
    ``websocket`` and ``http`` scopes and refuses the client instead (see
    :func:`refuse_unrouted`): a wrong URL is the client's mistake, not a server
    error. ``path`` is the connection's full path and ``scope_type`` its type.
    """

    def __init__(self, path: str | None, scope_type: str | None) -> None:
        super().__init__(f"No route found for path {path!r} ({scope_type})")
        self.path = path
        self.scope_type = scope_type


#: Scope types whose unmatched connections are refused rather than raised.
_REFUSED_TYPES = frozenset({"websocket", "http"})

#: Longest path the "No route found" warning quotes: a client chooses the path,
#: and a 64 KiB one would otherwise land in the log whole.
LOGGED_PATH_LIMIT = 200


def _loggable_path(path: object) -> str:
    text = repr(path)
    if len(text) <= LOGGED_PATH_LIMIT:
        return text
    return f"{text[:LOGGED_PATH_LIMIT]}... ({len(text) - LOGGED_PATH_LIMIT} more characters)"


async def refuse_unrouted(scope: Scope, receive: Receive, send: Send) -> None:
    """Turn a client with an unrouted path away as its protocol expects, logging one warning.

    A websocket handshake is closed before being accepted (the server answers
    403), unless the client already left; an HTTP request's body is read and
    discarded, then answered ``404 Not Found``, unless the client left first.
    """
    scope_type = scope.get("type")
    full_path = scope.get("path")
    logger.warning("No route found for path %s (%s)", _loggable_path(full_path), scope_type)
    if scope_type == "websocket":
        message = await receive()
        if message.get("type") != "websocket.disconnect":
            await send({"type": "websocket.close"})
        return
    while True:
        message = await receive()
        if message.get("type") == "http.disconnect":
            return
        if message.get("type") == "http.request" and not message.get("more_body"):
            break
    body = b"Not Found"
    await send(
        {
            "type": "http.response.start",
            "status": 404,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode("ascii")),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def finish_close(scope: Scope, receive: Receive, send: Send) -> None:
    """Wait, discarding frames, for the client's answer to a close the application sent.

    Returning at once would let the server drop the socket while the client is
    still sending: the unread data makes the kernel reset the connection, and
    the client may never see the close code it was sent.
    """
    if scope.get("type") == "websocket":
        while (await receive()).get("type") != "websocket.disconnect":
            pass


class ProtocolTypeRouter:
    """Send each connection to the application mapped to its ``scope["type"]``.

    ``lifespan`` is answered here unless the mapping has its own ``"lifespan"``
    application: startup completes at once, and shutdown closes every channel
    layer this process created. Without this, Channels' behaviour (raising for
    the unmapped ``lifespan`` type) makes Hypercorn log "ASGI Framework Lifespan
    error" at every start and leaves layer connections to die with the process.

    A :class:`NoRouteFound` from a ``URLRouter`` below, for a ``websocket`` or
    ``http`` connection, is answered here with :func:`refuse_unrouted`. Being the
    application the server calls, this is where it is known that nothing else
    will handle the error; the routers themselves raise, as Channels' do.
    For the same reason a :class:`~channels_runtime.exceptions.ClientInputRefused`
    (the ``ValueError`` a JSON consumer raises, as Channels' does, after closing
    the connection over a client's bad frame and logging one warning) ends the
    connection here without a server traceback (:func:`finish_close`).
    The mapped application's return value is returned, as in Channels.

    Django's own ``ASGIHandler`` as the ``"http"`` application (the Channels
    tutorial's ``get_asgi_application()``) is served by
    :mod:`channels_runtime.http` instead, on every worker class: see
    :func:`~channels_runtime.http.substitute_django_handler`.
    """

    def __init__(self, application_mapping: Mapping[str, ASGIApp]) -> None:
        self.application_mapping = application_mapping
        http = application_mapping.get("http")
        substitute = substitute_django_handler(http)
        #: (Django's handler as mapped, the application that serves it), if any.
        self._django_http = (http, substitute) if substitute is not None else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # ``async def`` matters: Hypercorn recognises an ASGI 3 app by a
        # coroutine-function ``__call__``. Django's async APIs need the bridge on trio.
        ensure_bridge()
        scope_type = scope["type"]
        if scope_type == "lifespan":
            # Under plain ``hypercorn`` this is the first call, before any connection.
            hypercorn_fixes.install_if_served_by_hypercorn()
        application = self.application_mapping.get(scope_type)
        if application is not None:
            if scope_type == "http":
                if self._django_http is not None and application is self._django_http[0]:
                    application = self._django_http[1]
                else:
                    # Django's ASGIHandler, subclassed or wrapped, is asyncio-only:
                    # on trio, say what to use instead.
                    check_http_application(application)
                if metrics.enabled:  # one counted connection per request
                    application = metrics.connections.counted_http(application)
            try:
                return await application(scope, receive, send)
            except NoRouteFound:
                # A URLRouter raises before calling anything, so nothing has been
                # sent to the client yet and refusing it now is still possible.
                if scope_type not in _REFUSED_TYPES:
                    raise
                if metrics.enabled:
                    metrics.connections.deny_reason("no_route")
                answer = refuse_unrouted
            except ClientInputRefused:
                # A consumer closed the connection over the client's input and logged
                # it (e.g. a binary frame to a JSON consumer); a traceback would repeat it.
                answer = finish_close
            # Answered outside the ``except`` block, so the exception is not kept
            # alive (and chained) while waiting on the client.
            await answer(scope, receive, send)
        elif scope_type == "lifespan":
            await self._lifespan(receive, send)
        else:
            known = ", ".join(repr(key) for key in self.application_mapping) or "none"
            raise ValueError(
                f"No application configured for scope type {scope_type!r} "
                f"(configured types: {known})"
            )

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        """The lifespan protocol: nothing to start, channel layers to close."""
        while True:
            message = await receive()
            message_type = message.get("type")
            if message_type == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message_type == "lifespan.shutdown":
                try:
                    await channel_layers.close_all()
                except Exception as exc:
                    logger.exception("Closing channel layers at lifespan shutdown failed")
                    await send(
                        {
                            "type": "lifespan.shutdown.failed",
                            "message": f"Closing channel layers failed: {exc!r}",
                        }
                    )
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                return


class _Route(NamedTuple):
    """One prepared ``URLRouter`` entry.

    ``pattern`` is the matcher actually used: the user's own pattern for
    endpoints, and a prefix-matching copy for routes that lead to another
    router (the user's ``URLPattern`` is never modified, so it can be shared).
    ``router`` is the nested ``URLRouter`` when one can be found, so that the
    whole chain is resolved before any application is called.
    """

    pattern: Any
    callback: ASGIApp
    default_args: dict[str, Any]
    router: URLRouter | None


def _describe(route: URLPattern | URLResolver) -> str:
    return repr(str(route.pattern))


def _nested_router(application: object) -> tuple[bool, URLRouter | None]:
    """Does ``application`` route on the rest of the path, and through which router?

    Looks through middleware (anything keeping the wrapped app in ``.inner``, as
    Channels' middleware does), so ``path("ws/", AuthMiddlewareStack(URLRouter(...)))``
    is a prefix route. An app declaring ``_path_routing = True`` is one too, even
    if no router can be reached inside it.
    """
    declared = getattr(application, "_path_routing", False) is True
    current: object = application
    for _ in range(32):  # bounded: a wrapper chain that loops must not hang us
        if isinstance(current, URLRouter):
            return True, current
        current = getattr(current, "inner", None)
        if current is None:
            break
    return declared, None


def _prefix_pattern(route: URLPattern) -> Any:
    """A pattern that matches the start of the path, for a route leading to a router.

    ``path()`` anchors its regex at the end for endpoints, so we build a fresh,
    non-endpoint ``RoutePattern`` from the same route text. A ``re_path()`` regex
    only anchors if the author wrote ``$``; we refuse that rather than silently
    editing their regex, because nothing could ever be left for the inner router.
    """
    pattern = route.pattern
    if isinstance(pattern, RoutePattern):
        # ``_route`` keeps a lazily translated route lazy; ``str(pattern)`` would not.
        route_text = getattr(pattern, "_route", None) or str(pattern)
        return RoutePattern(route_text, name=pattern.name, is_endpoint=False)
    if isinstance(pattern, RegexPattern):
        regex = str(pattern)
        if (regex.endswith("$") and not regex.endswith(r"\$")) or regex.endswith(r"\Z"):
            raise ImproperlyConfigured(
                f"URLRouter route {_describe(route)} leads to a nested router but its "
                "regex is anchored at the end; remove the trailing '$' so it matches "
                "a prefix of the path"
            )
        return pattern
    raise ImproperlyConfigured(
        f"URLRouter route {_describe(route)} uses an unsupported pattern type "
        f"{type(pattern).__name__}; use django.urls.path() or re_path()"
    )


def _prepare(routes: Iterable[object]) -> tuple[_Route, ...]:
    prepared: list[_Route] = []
    for index, route in enumerate(routes):
        if isinstance(route, URLResolver):
            raise ImproperlyConfigured(
                f"URLRouter route {_describe(route)}: include() is not supported in "
                "URLRouter. Nest another URLRouter instead: "
                "path('prefix/', URLRouter([...]))"
            )
        if not isinstance(route, URLPattern):
            raise ImproperlyConfigured(
                f"URLRouter route #{index} is {route!r}; each route must be made with "
                "django.urls.path() or django.urls.re_path()"
            )
        callback = route.callback
        if isinstance(callback, type) and hasattr(callback, "as_asgi"):
            raise ImproperlyConfigured(
                f"URLRouter route {_describe(route)} points at the consumer class "
                f"{callback.__qualname__}; route to {callback.__qualname__}.as_asgi() instead"
            )
        # Django's own handler as a catch-all route (strawberry's guide maps
        # re_path("^", get_asgi_application())) is served by channels_runtime.http,
        # as under ProtocolTypeRouter; route.callback stays the user's object.
        callback = substitute_django_handler(callback) or callback
        is_prefix, router = _nested_router(callback)
        pattern = _prefix_pattern(route) if is_prefix else route.pattern
        # Compile now (Django caches the compiled regex on the pattern), so the
        # first connection does not pay for it and a bad regex fails at startup.
        pattern.regex  # noqa: B018
        prepared.append(_Route(pattern, callback, dict(route.default_args or {}), router))
    return tuple(prepared)


class URLRouter:
    """Route a connection on its path, using Django ``path()`` / ``re_path()`` entries.

    Captured arguments go into ``scope["url_route"] = {"args": ..., "kwargs": ...}``,
    merged with those of enclosing routers. ``scope["path_remaining"]`` carries
    the unmatched tail to nested routers, as in Channels. The outermost router
    strips ``scope["root_path"]`` first.

    A path no route matches raises :class:`NoRouteFound` (a ``ValueError``, as
    in Channels) before anything is called; under :class:`ProtocolTypeRouter`
    the client is then refused (websocket handshake denied, HTTP 404) with one
    warning line. Because a whole chain of nested routers is resolved before
    anything is called, a nested router that does not match simply lets the
    next route be tried. The matched application's return value is returned.
    """

    #: Channels' marker for "this app routes on the rest of the path".
    _path_routing = True

    def __init__(self, routes: Iterable[URLPattern | URLResolver]) -> None:
        self.routes = list(routes)
        self._routes = _prepare(self.routes)

    def _resolve(self, path: str) -> tuple[_Route, str, tuple[Any, ...], dict[str, Any]] | None:
        """First route matching ``path`` (with any nested router matching too)."""
        path = path.lstrip("/")
        for route in self._routes:
            match = route.pattern.match(path)
            if not match:
                continue
            remaining, args, kwargs = match
            if route.router is not None and route.router._resolve(remaining) is None:
                continue
            kwargs.update(route.default_args)
            return route, remaining, tuple(args), kwargs
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The routing happens in _enter(): this frame stays suspended for the
        # whole connection, and everything local to it would be kept that long.
        callback, inner_scope = self._enter(scope)
        return await callback(inner_scope, receive, send)

    def _enter(self, scope: Scope) -> tuple[ASGIApp, Scope]:
        """The application of the route matching ``scope``, and the scope to call it with."""
        path: str | None
        if "path_remaining" in scope:
            path = scope["path_remaining"]
        else:
            path = scope.get("path")
            if path is None:
                raise ValueError("No 'path' key in connection scope, cannot route URLs")
            root_path = scope.get("root_path") or ""
            if root_path:
                path = self._strip_root_path(path, root_path)
        resolved = self._resolve(path) if path is not None else None
        if resolved is None:
            raise NoRouteFound(scope.get("path"), scope.get("type"))
        route, remaining, args, kwargs = resolved
        if metrics.enabled:  # the route label: pattern text, never the path
            metrics.connections.routed(str(route.pattern), final=route.router is None)
        outer = scope.get("url_route") or {}
        inner_scope = dict(
            scope,
            path_remaining=remaining,
            url_route={
                "args": tuple(outer.get("args", ())) + args,
                "kwargs": {**outer.get("kwargs", {}), **kwargs},
            },
        )
        return route.callback, inner_scope

    @staticmethod
    def _strip_root_path(path: str, root_path: str) -> str | None:
        """``path`` without its ``root_path`` prefix, or ``None`` if it lies outside it.

        ASGI puts the mount point in ``path`` too; the prefix must end at a
        segment boundary, so root ``/app`` does not claim ``/application/``.
        """
        root = root_path.rstrip("/")
        if path == root or path.startswith(root + "/"):
            return path[len(root) :]
        return None


class ChannelNameRouter:
    """Send each ``channel`` scope (worker mode) to the app mapped to ``scope["channel"]``.

    Returns the mapped application's return value, as Channels does.
    """

    def __init__(self, application_mapping: Mapping[str, ASGIApp]) -> None:
        self.application_mapping = application_mapping

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if "channel" not in scope:
            raise ValueError(
                "ChannelNameRouter got a scope without a 'channel' key. Is it only "
                "being used for 'channel' type scopes (under ProtocolTypeRouter's "
                "'channel' entry)?"
            )
        channel = scope["channel"]
        application = self.application_mapping.get(channel)
        if application is None:
            known = ", ".join(repr(key) for key in self.application_mapping) or "none"
            raise ValueError(
                f"No application configured for channel name {channel!r} "
                f"(configured channels: {known})"
            )
        return await application(scope, receive, send)
