"""Origin checking for WebSocket handshakes.

Browsers attach cookies to a WebSocket handshake whatever page opened it, and
the same-origin policy does not apply to WebSockets. Without a check of the
``Origin`` header, any web page a logged-in user visits can open a socket to
your site as that user (cross-site WebSocket hijacking). Wrap WebSocket routes
in :class:`OriginValidator` or :class:`AllowedHostsOriginValidator` to refuse
handshakes from pages on other sites.

The rules follow Django Channels 4.2, with malformed headers and ``host:port``
patterns handled deliberately rather than by accident; ``docs/security.md``
lists the differences.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any
from urllib.parse import ParseResult, urlparse

from django.conf import settings
from django.utils.http import is_same_domain

from .. import metrics
from ..asgi import ASGIApp, Receive, Scope, Send
from ..generic.websocket import AsyncWebsocketConsumer

# What Django's HttpRequest.get_host() accepts when DEBUG is on and
# ALLOWED_HOSTS is empty; using the same list keeps a development setup that
# serves pages also accepting its own sockets.
DEBUG_ALLOWED_HOSTS: tuple[str, ...] = (".localhost", "127.0.0.1", "[::1]")

_DEFAULT_PORTS = {"http": 80, "ws": 80, "https": 443, "wss": 443}


def _is_printable_ascii(raw: bytes) -> bool:
    """Browsers serialise origins as printable ASCII (IDNs in punycode).

    Anything else, such as Latin-1 letters, spaces or control characters, can
    only come from a non-browser client or a broken proxy, and letting it
    through would hand ``is_same_domain`` hosts like ``"evil\\x00.example.com"``
    that end in an allowed suffix.
    """
    return all(0x21 <= byte <= 0x7E for byte in raw)


def _origin_from_headers(headers: Iterable[Any]) -> ParseResult | None:
    """The parsed ``Origin`` header, or ``None`` when it is absent or unusable.

    Unusable means: sent more than once (a browser sends exactly one, so two
    values mean something in between is confused and neither can be trusted),
    not printable ASCII, or not parseable as a URL with a valid port. Treating
    these like a missing header means they are refused unless ``"*"`` is
    allowed, instead of raising inside the server.
    """
    raw: bytes | None = None
    for header in headers:
        try:
            name, value = header
        except (TypeError, ValueError):
            continue
        if not isinstance(name, bytes | bytearray) or bytes(name).lower() != b"origin":
            continue
        if raw is not None or not isinstance(value, bytes | bytearray):
            return None
        raw = bytes(value)
    if raw is None or not _is_printable_ascii(raw):
        return None
    try:
        parsed = urlparse(raw.decode("ascii"))
        # The port is parsed lazily; touch it now so a bad one is caught here
        # rather than while matching.
        parsed.port  # noqa: B018
    except ValueError:
        return None
    return parsed


class OriginValidator:
    """Pass a WebSocket handshake on only when its ``Origin`` is allowed.

    ``allowed_origins`` entries:

    * ``"*"``: everything, including handshakes without an ``Origin``.
    * ``"example.com"``: that host, any scheme and port.
    * ``".example.com"``: ``example.com`` and all its subdomains.
    * ``"example.com:8080"``: that host on that port, any scheme.
    * ``"https://example.com"``, ``"https://.example.com:8443"``: scheme, host
      (or domain) and port must all match; a missing port means the scheme's
      default (80 for http/ws, 443 for https/wss).
    * IPv6 hosts in brackets: ``"[::1]"``, ``"http://[::1]:8000"``.

    Refused handshakes are closed by :class:`WebsocketDenier`, so the client
    sees an HTTP 403 and the wrapped application never runs.
    """

    def __init__(self, application: ASGIApp, allowed_origins: Collection[str]) -> None:
        # A bare string is a collection of one-character strings; catching it
        # here saves a confusing "every origin refused" later.
        if isinstance(allowed_origins, str):
            raise TypeError(
                f"allowed_origins must be a list of origins, not the string {allowed_origins!r}"
            )
        self.application = application
        self.allowed_origins = allowed_origins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope_type = scope.get("type")
        if scope_type != "websocket":
            # Origin checking means nothing for plain HTTP here; failing loudly
            # catches a validator wrapped around the wrong router branch.
            raise ValueError(
                f"OriginValidator only guards WebSocket connections; got a {scope_type!r} scope"
            )
        parsed_origin = _origin_from_headers(scope.get("headers") or ())
        # Either application's return value is passed on, as Channels does.
        if self.valid_origin(parsed_origin):
            return await self.application(scope, receive, send)
        if metrics.enabled:
            metrics.connections.deny_reason("origin")
        return await WebsocketDenier()(scope, receive, send)

    def valid_origin(self, parsed_origin: ParseResult | None) -> bool:
        """Whether ``parsed_origin`` (``None``: missing or malformed) may connect.

        Only ``"*"`` admits a handshake without a usable origin: non-browser
        clients omit it, and a site that allows those has said so explicitly.
        """
        if parsed_origin is None and "*" not in self.allowed_origins:
            return False
        return self.validate_origin(parsed_origin)

    def validate_origin(self, parsed_origin: ParseResult | None) -> bool:
        """Whether any allowed pattern admits ``parsed_origin``."""
        return any(
            pattern == "*" or self.match_allowed_origin(parsed_origin, pattern)
            for pattern in self.allowed_origins
        )

    def match_allowed_origin(self, parsed_origin: ParseResult | None, pattern: str) -> bool:
        """Whether ``parsed_origin`` matches the single ``pattern``.

        A pattern with ``://`` is a full origin: scheme, host and port (with
        scheme defaults) must match. Otherwise it is a host, optionally with a
        port, and any scheme matches. Host comparison is Django's
        ``is_same_domain``, so a leading dot covers a domain and its
        subdomains. A pattern that cannot be parsed matches nothing, so a typo
        in settings fails closed instead of raising on every handshake.
        """
        if parsed_origin is None or not parsed_origin.hostname:
            return False
        origin_host = parsed_origin.hostname
        try:
            if "://" in pattern:
                parsed_pattern = urlparse(pattern.lower())
                return (
                    parsed_pattern.scheme == parsed_origin.scheme
                    and self.get_origin_port(parsed_pattern) == self.get_origin_port(parsed_origin)
                    and is_same_domain(origin_host, parsed_pattern.hostname or "")
                )
            pattern_host, pattern_port = self._split_host_pattern(pattern)
        except ValueError:
            return False
        if not is_same_domain(origin_host, pattern_host):
            return False
        return pattern_port is None or pattern_port == self.get_origin_port(parsed_origin)

    @staticmethod
    def _split_host_pattern(pattern: str) -> tuple[str, int | None]:
        """Split a scheme-less pattern into host and optional port.

        Parsed as a network location (``"//" + pattern``) because ``urlparse``
        reads ``"example.com:8080"`` as scheme ``example.com``. A bare IPv6
        address like ``"::1"`` has no parseable host that way and is compared
        as written, with no port.
        """
        parts = urlparse("//" + pattern)
        if not parts.hostname:
            return pattern, None
        return parts.hostname, parts.port

    def get_origin_port(self, origin: ParseResult) -> int | None:
        """The explicit port, else the scheme's default, else ``None``."""
        if origin.port is not None:
            return origin.port
        return _DEFAULT_PORTS.get(origin.scheme)


class AllowedHostsOriginValidator(OriginValidator):
    """An :class:`OriginValidator` whose allowed origins are ``settings.ALLOWED_HOSTS``.

    The setting is read on every handshake, as Django reads it on every
    request, so ``override_settings`` and the test runner's additions apply.
    With ``DEBUG`` on and ``ALLOWED_HOSTS`` empty it uses
    :data:`DEBUG_ALLOWED_HOSTS`, matching what Django itself accepts then.
    Assigning ``allowed_origins`` pins an explicit list instead.
    """

    def __init__(self, application: ASGIApp) -> None:
        self.application = application
        self._pinned_origins: Collection[str] | None = None

    @property
    def allowed_origins(self) -> Collection[str]:
        if self._pinned_origins is not None:
            return self._pinned_origins
        allowed_hosts: Collection[str] = settings.ALLOWED_HOSTS
        if settings.DEBUG and not allowed_hosts:
            return DEBUG_ALLOWED_HOSTS
        return allowed_hosts

    @allowed_origins.setter
    def allowed_origins(self, value: Collection[str]) -> None:
        self._pinned_origins = value


class WebsocketDenier(AsyncWebsocketConsumer):
    """A consumer that refuses every WebSocket handshake.

    It answers ``websocket.connect`` with ``websocket.close``, which the server
    turns into an HTTP 403. It uses no channel layer, so a refused handshake
    costs no channel.
    """

    channel_layer_alias = None

    async def connect(self) -> None:
        await self.close()


__all__ = [
    "DEBUG_ALLOWED_HOSTS",
    "AllowedHostsOriginValidator",
    "OriginValidator",
    "WebsocketDenier",
]
