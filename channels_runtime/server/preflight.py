"""Refusing, at startup, what cannot run on the chosen worker class.

A server that prints a healthy banner and then fails every request is worse
than one that does not start: on trio, Django Channels' own layers and
routers, channels_redis and Django's ``ASGIHandler`` fail on their first
asyncio call, with a bare ``RuntimeError: no running event loop`` or a 500.
``channels-runtime serve`` and ``manage.py runserver`` therefore look at the
configuration before they start, and refuse (exit status 2) with a message
that names the setting and the fix:

* :func:`check_channel_layers`: each ``CHANNEL_LAYERS`` backend must import
  (on every worker class: a typo would otherwise surface at the first
  ``group_send``), and on trio it must not be one known to run on asyncio only;
* :func:`prepare_application`: Django's own ``ASGIHandler`` as the whole
  application is served by :mod:`channels_runtime.http` instead (said in one
  log line, on every worker class, as ``ProtocolTypeRouter`` does for its
  ``"http"`` entry); on trio, an application built from the real Django
  Channels (the alias is off) or an ``ASGIHandler`` that cannot be replaced
  (a subclass, or one wrapped in middleware) is refused.

asyncio and uvloop run all of these, so nothing is refused there.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

from django.core.handlers.asgi import ASGIHandler

from .. import alias
from ..asgi import ASGIApp
from ..exceptions import InvalidChannelLayerError

__all__ = ["ASYNCIO_ONLY_LAYERS", "Refused", "check_channel_layers", "prepare_application"]

#: Top-level packages of channel layers that run on asyncio only -> what to use instead.
ASYNCIO_ONLY_LAYERS: dict[str, str] = {
    "channels": "channels_runtime.layers.InMemoryChannelLayer",
    "channels_redis": (
        "channels_runtime.layers.redis.RedisChannelLayer (or RedisPubSubChannelLayer), "
        "which takes the same CONFIG"
    ),
    "channels_rabbitmq": "channels_runtime.layers.redis.RedisChannelLayer",
    "channels_postgres": "channels_runtime.layers.redis.RedisChannelLayer",
}

#: How deep :func:`_reachable` follows wrappers and routers.
_MAX_DEPTH = 16


class Refused(Exception):
    """The configuration cannot run on the chosen worker class; the message says why and how."""


def _is_trio(worker_class: str) -> bool:
    return worker_class == "trio"


def _alias_hint(root: str) -> str:
    """How to make ``root`` resolve to channels_runtime, given why it does not now."""
    if alias.switch() is False:
        return (
            f"turn the channels_runtime alias back on (it is off: {alias.ENV_VAR}=0 in the "
            f"environment or {alias.SETTING} = False in settings), so that '{root}' is "
            "channels_runtime"
        )
    return (
        f"let channels_runtime stand in for '{root}' "
        "(see docs/running-unmodified-channels-projects.md)"
    )


def check_channel_layers(worker_class: str) -> None:
    """Raise :class:`Refused` for a ``CHANNEL_LAYERS`` backend that cannot serve here."""
    from ..layers.manager import channel_layers

    try:
        configs = channel_layers.configs
    except InvalidChannelLayerError as exc:
        raise Refused(f"settings.CHANNEL_LAYERS: {exc}") from None
    for name, config in configs.items():
        if not isinstance(config, dict) or not isinstance(config.get("BACKEND"), str):
            continue  # the manager reports malformed entries on first use
        setting = f"CHANNEL_LAYERS[{name!r}]['BACKEND'] = {config['BACKEND']!r}"
        try:
            backend = _import_backend(config["BACKEND"], name)
        except InvalidChannelLayerError as exc:
            raise Refused(f"{setting}: {exc}") from None
        if _is_trio(worker_class):
            _refuse_asyncio_only_layer(backend, setting, worker_class)


def _import_backend(path: str, name: str) -> Any:
    from ..layers.manager import _import_backend

    return _import_backend(path, name)


def _refuse_asyncio_only_layer(backend: Any, setting: str, worker_class: str) -> None:
    root = str(getattr(backend, "__module__", "")).partition(".")[0]
    instead = ASYNCIO_ONLY_LAYERS.get(root)
    if instead is None and _built_on_channels(backend):
        root, instead = "channels", ASYNCIO_ONLY_LAYERS["channels"]
    if instead is None:
        return
    fixes = [f"set BACKEND to {instead}"]
    if root in alias.DISTRIBUTIONS:
        fixes.insert(0, _alias_hint(root))
    fixes.append("or serve with --worker-class asyncio")
    raise Refused(
        f"{setting} is {backend.__module__}.{backend.__qualname__}, a channel layer that runs "
        f"on asyncio only, so it cannot run on worker class {worker_class!r}. Fix, any of: "
        + "; ".join(fixes)
        + "."
    )


def _built_on_channels(backend: Any) -> bool:
    """A layer class derived from the real Django Channels' base (Channels' layers are asyncio)."""
    real = sys.modules.get("channels.layers")
    base = getattr(real, "BaseChannelLayer", None)
    return (
        isinstance(base, type)
        and not alias.is_stand_in("channels")
        and isinstance(backend, type)
        and issubclass(backend, base)
    )


def prepare_application(app: ASGIApp, worker_class: str, *, where: str) -> ASGIApp:
    """``app``, or what serves it instead; raise :class:`Refused` if it cannot run here.

    ``where`` names the application for messages (``mysite.asgi:application``,
    or ``ASGI_APPLICATION 'mysite.asgi.application'``).
    """
    from ..http import substitute_django_handler

    substitute = substitute_django_handler(app)
    if substitute is not None:
        return substitute
    if not _is_trio(worker_class):
        return app
    for path, part in _reachable(app):
        problem = _asyncio_only_part(part)
        if problem is not None:
            raise Refused(
                f"The application {where}{path} is {problem}, which runs on asyncio only, so "
                f"it cannot run on worker class {worker_class!r}. Fix, any of: {_fix_for(part)}; "
                "or serve with --worker-class asyncio."
            )
    return app


def _asyncio_only_part(part: object) -> str | None:
    if isinstance(part, ASGIHandler):
        kind = "Django's ASGIHandler"
        if type(part) is not ASGIHandler:
            kind = f"{type(part).__module__}.{type(part).__qualname__} (an ASGIHandler subclass)"
        return kind
    cls = part if isinstance(part, type) else type(part)
    for klass in getattr(cls, "__mro__", ()):
        if klass.__module__.partition(".")[0] == "channels" and not alias.is_stand_in("channels"):
            return f"built on Django Channels' {klass.__module__}.{klass.__qualname__}"
    return None


def _fix_for(part: object) -> str:
    if isinstance(part, ASGIHandler):
        return (
            "serve Django with channels_runtime.http.get_asgi_application() instead (or map "
            "Django's own handler, unwrapped, as ProtocolTypeRouter's 'http' application: "
            "it is then served by channels_runtime.http)"
        )
    return _alias_hint("channels")


def _reachable(app: object) -> Iterator[tuple[str, object]]:
    """``app`` and what it routes to: wrapped apps, router entries, consumer classes.

    Yields ``(path, object)``, the path in the form `` -> 'http' -> inner``. An
    exact ``ASGIHandler`` mapped as a ``ProtocolTypeRouter``'s ``"http"`` entry
    is not yielded: the router serves it with channels_runtime.http.
    """
    seen: set[int] = set()
    pending: list[tuple[str, object, int]] = [("", app, 0)]
    while pending:
        path, part, depth = pending.pop(0)
        if id(part) in seen or depth > _MAX_DEPTH:
            continue
        seen.add(id(part))
        yield path, part
        for label, child in _children(part):
            pending.append((f"{path} -> {label}", child, depth + 1))


def _children(part: object) -> Iterator[tuple[str, object]]:
    from ..routing import ProtocolTypeRouter, URLRouter

    if isinstance(part, type):
        return  # a consumer class: its bases were looked at already
    consumer = getattr(part, "consumer_class", None)
    if isinstance(consumer, type):
        yield f"consumer {consumer.__qualname__}", consumer
    for attribute in ("inner", "application", "app"):
        child = getattr(part, attribute, None)
        if child is not None and callable(child):
            yield attribute, child
    mapping = getattr(part, "application_mapping", None)
    if isinstance(mapping, dict):
        for key, child in mapping.items():
            if (
                isinstance(part, ProtocolTypeRouter)
                and key == "http"
                and (type(child) is ASGIHandler)
            ):
                continue  # served by channels_runtime.http (substitute_django_handler)
            yield repr(key), child
    for route in getattr(part, "routes", None) or ():
        callback = getattr(route, "callback", None)
        if isinstance(part, URLRouter) and type(callback) is ASGIHandler:
            continue  # served by channels_runtime.http (substitute_django_handler)
        if callback is not None:
            yield f"route {str(getattr(route, 'pattern', '?'))!r}", callback
