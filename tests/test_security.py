"""Origin checking for WebSocket handshakes: OriginValidator and friends."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from django.test import override_settings

from channels_runtime.asgi import ASGIApp, Message, Receive, Scope, Send
from channels_runtime.security.websocket import (
    DEBUG_ALLOWED_HOSTS,
    AllowedHostsOriginValidator,
    OriginValidator,
    WebsocketDenier,
)
from channels_runtime.testing import WebsocketCommunicator

Headers = list[tuple[bytes, bytes]]


class AcceptingApp:
    """Accepts every handshake and records the scopes it was given."""

    def __init__(self) -> None:
        self.scopes: list[Scope] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scopes.append(scope)
        while True:
            message = await receive()
            if message["type"] == "websocket.connect":
                await send({"type": "websocket.accept"})
            elif message["type"] == "websocket.disconnect":
                return


def origin_headers(origin: bytes | None) -> Headers:
    headers: Headers = [(b"host", b"testserver")]
    if origin is not None:
        headers.append((b"origin", origin))
    return headers


async def exchange(app: ASGIApp, headers: Any) -> list[Message]:
    """Drive one handshake as a server would, over memory streams.

    Sends ``websocket.connect``, collects the reply, sends
    ``websocket.disconnect`` and waits for the application to finish, so a
    denier that hangs or raises fails the test. Returns everything it sent.
    """
    scope = {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "path": "/ws/",
        "query_string": b"",
        "headers": headers,
        "subprotocols": [],
    }
    to_app_tx, to_app_rx = anyio.create_memory_object_stream[Message](2)
    from_app_tx, from_app_rx = anyio.create_memory_object_stream[Message](8)

    async def run_app() -> None:
        await app(scope, to_app_rx.receive, from_app_tx.send)

    async with to_app_tx, to_app_rx, from_app_tx, from_app_rx:
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(run_app)
                await to_app_tx.send({"type": "websocket.connect"})
                sent = [await from_app_rx.receive()]
                await to_app_tx.send({"type": "websocket.disconnect", "code": 1000})
        while True:
            try:
                sent.append(from_app_rx.receive_nowait())
            except anyio.WouldBlock:
                return sent


async def accepted(validator_factory: Any, origin: bytes | None) -> bool:
    """Whether a handshake with ``origin`` reaches the wrapped application.

    Driven through :class:`WebsocketCommunicator` as a user's test would; a
    refusal must be a plain close (no close code, as Channels' denier sends)
    and a clean end on disconnect.
    """
    inner = AcceptingApp()
    communicator = WebsocketCommunicator(validator_factory(inner), "/ws/", origin_headers(origin))
    connected, detail = await communicator.connect()
    if connected:
        assert detail is None  # no subprotocol chosen
        assert len(inner.scopes) == 1
    else:
        assert detail == 1000  # the communicator's reading of a close without a code
        assert inner.scopes == [], "a refused handshake must never reach the application"
    await communicator.disconnect()  # re-raises anything the application raised
    return connected


# (allowed_origins, origin header, accepted?)
ORIGIN_CASES = [
    # Exact host: any scheme and port, no subdomains.
    (["example.com"], b"http://example.com", True),
    (["example.com"], b"https://example.com:8443", True),
    (["example.com"], b"http://sub.example.com", False),
    (["example.com"], b"http://example.org", False),
    (["example.com"], b"http://example.com.evil.org", False),
    (["Example.COM"], b"HTTP://EXAMPLE.com", True),
    # Leading dot: the domain and every subdomain.
    ([".example.com"], b"http://example.com", True),
    ([".example.com"], b"https://a.example.com", True),
    ([".example.com"], b"http://a.b.example.com:9000", True),
    ([".example.com"], b"http://notexample.com", False),
    ([".example.com"], b"http://example.com.evil.org", False),
    # Scheme: must match, with the scheme's default port.
    (["https://example.com"], b"https://example.com", True),
    (["https://example.com"], b"https://example.com:443", True),
    (["https://example.com"], b"http://example.com", False),
    (["https://example.com"], b"wss://example.com", False),
    (["https://example.com"], b"https://example.com:8443", False),
    (["https://example.com"], b"https://www.example.com", False),
    (["http://example.com:80"], b"http://example.com", True),
    (["https://example.com:443"], b"https://example.com", True),
    (["https://.example.com"], b"https://a.example.com", True),
    (["https://.example.com"], b"http://a.example.com", False),
    (["ftp://example.com"], b"ftp://example.com", True),
    (["ftp://example.com"], b"ftp://example.com:21", False),
    # Port with a scheme: scheme and port both count.
    (["http://example.com:8000"], b"http://example.com:8000", True),
    (["http://example.com:8000"], b"http://example.com", False),
    (["http://example.com:8000"], b"https://example.com:8000", False),
    # Port without a scheme: that port only, any scheme.
    (["example.com:8080"], b"http://example.com:8080", True),
    (["example.com:8080"], b"https://example.com:8080", True),
    (["example.com:8080"], b"http://example.com", False),
    (["example.com:8080"], b"http://example.com:8081", False),
    (["example.com:443"], b"https://example.com", True),
    (["127.0.0.1:8000"], b"http://127.0.0.1:8000", True),
    (["127.0.0.1:8000"], b"http://127.0.0.1:9000", False),
    (["localhost:8000"], b"http://localhost:8000", True),
    # IPv6.
    (["[::1]"], b"http://[::1]:8000", True),
    (["[::1]"], b"http://[::1]", True),
    (["[::1]"], b"http://[::2]", False),
    (["::1"], b"http://[::1]:8000", True),
    (["http://[::1]:8000"], b"http://[::1]:8000", True),
    (["http://[::1]:8000"], b"http://[::1]", False),
    (["[::1]:8000"], b"http://[::1]:8000", True),
    (["[::1]:8000"], b"http://[::1]:8001", False),
    (["[2001:db8::1]"], b"https://[2001:DB8::1]", True),
    # Several patterns: any one is enough.
    (["example.org", "https://example.com"], b"https://example.com", True),
    (["example.org", "https://example.com"], b"http://example.com", False),
    # Nothing allowed.
    ([], b"http://example.com", False),
    # A pattern that cannot be parsed matches nothing rather than raising.
    (["http://[::1", "example.com"], b"http://example.com", True),
    (["http://example.com:notaport"], b"http://example.com", False),
]


@pytest.mark.anyio
@pytest.mark.parametrize(("allowed_origins", "origin", "expected"), ORIGIN_CASES)
async def test_origin_rules(allowed_origins: list[str], origin: bytes, expected: bool) -> None:
    result = await accepted(lambda app: OriginValidator(app, allowed_origins), origin)
    assert result is expected


MALFORMED_ORIGINS = [
    pytest.param(b"\xff\xfe\xfd", id="not-utf8"),
    pytest.param(b"http://\xff.example.com", id="latin1-byte-in-allowed-suffix"),
    pytest.param(b"http://\xc3\xa9.example.com", id="utf8-non-ascii"),
    pytest.param(b"http://evil\x00.example.com", id="nul"),
    pytest.param(b"http://evil .example.com", id="space"),
    pytest.param(b"http://[::1", id="unclosed-ipv6"),
    pytest.param(b"http://[not-ipv6].example.com", id="bad-brackets"),
    pytest.param(b"http://a.example.com:99999", id="port-out-of-range"),
    pytest.param(b"http://a.example.com:http", id="port-not-a-number"),
    pytest.param(b"null", id="null-origin"),
    pytest.param(b"", id="empty"),
    pytest.param(b"garbage", id="garbage"),
    pytest.param(b"://", id="scheme-separator-only"),
    pytest.param(b"http://", id="no-host"),
]


@pytest.mark.anyio
@pytest.mark.parametrize("origin", MALFORMED_ORIGINS)
async def test_malformed_origin_is_denied(origin: bytes) -> None:
    allowed = [".example.com", "http://.example.com", "https://.example.com:99999"]
    assert not await accepted(lambda app: OriginValidator(app, allowed), origin)


@pytest.mark.anyio
@pytest.mark.parametrize("origin", [*MALFORMED_ORIGINS, None, b"http://anything.test"])
async def test_star_allows_everything(origin: bytes | None) -> None:
    assert await accepted(lambda app: OriginValidator(app, ["*"]), origin)


@pytest.mark.anyio
async def test_missing_origin_denied_unless_star() -> None:
    assert not await accepted(lambda app: OriginValidator(app, ["example.com"]), None)
    assert await accepted(lambda app: OriginValidator(app, ["example.com", "*"]), None)


@pytest.mark.anyio
async def test_two_origin_headers_are_denied() -> None:
    inner = AcceptingApp()
    validator = OriginValidator(inner, ["example.com"])
    headers = [(b"origin", b"http://example.com"), (b"origin", b"http://example.com")]

    assert await exchange(validator, headers) == [{"type": "websocket.close"}]
    assert inner.scopes == []


@pytest.mark.anyio
@pytest.mark.parametrize(
    "headers",
    [
        pytest.param([(b"origin", "http://example.com")], id="str-value"),
        pytest.param([(b"origin",)], id="one-element-header"),
        pytest.param([b"origin: http://example.com"], id="not-a-pair"),
        pytest.param(None, id="headers-none"),
    ],
)
async def test_nonconforming_headers_are_denied_not_raised(headers: Any) -> None:
    inner = AcceptingApp()

    sent = await exchange(OriginValidator(inner, ["example.com"]), headers)

    assert sent == [{"type": "websocket.close"}]
    assert inner.scopes == []


@pytest.mark.anyio
async def test_header_name_case_is_ignored() -> None:
    inner = AcceptingApp()
    headers = [(b"Origin", b"http://example.com")]

    sent = await exchange(OriginValidator(inner, ["example.com"]), headers)

    assert sent == [{"type": "websocket.accept"}]


@pytest.mark.anyio
async def test_allowed_handshake_reaches_app_with_the_same_scope() -> None:
    inner = AcceptingApp()
    headers = origin_headers(b"https://example.com")

    await exchange(OriginValidator(inner, ["https://example.com"]), headers)

    (scope,) = inner.scopes
    assert scope["path"] == "/ws/"
    assert scope["headers"] is headers


@pytest.mark.anyio
@pytest.mark.parametrize("scope_type", ["http", "lifespan"])
async def test_non_websocket_scope_raises_naming_the_type(scope_type: str) -> None:
    inner = AcceptingApp()

    async def never_receive() -> Message:
        raise AssertionError("must not receive")

    async def never_send(message: Message) -> None:
        raise AssertionError("must not send")

    with pytest.raises(ValueError, match=f"'{scope_type}'"):
        await OriginValidator(inner, ["*"])({"type": scope_type}, never_receive, never_send)
    assert inner.scopes == []


def test_string_allowed_origins_is_a_type_error() -> None:
    with pytest.raises(TypeError, match=r"example\.com"):
        OriginValidator(AcceptingApp(), "example.com")


@pytest.mark.anyio
async def test_subclass_can_override_valid_origin() -> None:
    """``valid_origin`` is Channels' extension point; overriding it still works."""

    class OnlyNull(OriginValidator):
        def valid_origin(self, parsed_origin: Any) -> bool:
            return parsed_origin is not None and parsed_origin.path == "null"

    assert await accepted(lambda app: OnlyNull(app, []), b"null")
    assert not await accepted(lambda app: OnlyNull(app, []), b"http://example.com")


# -- AllowedHostsOriginValidator ------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("origin", "expected"),
    [
        (b"http://testserver", True),
        (b"http://localhost:8000", True),
        (b"https://127.0.0.1", True),
        (b"http://sub.localhost", False),
        (b"http://example.com", False),
        (None, False),
    ],
)
async def test_allowed_hosts_from_settings(origin: bytes | None, expected: bool) -> None:
    # conftest: ALLOWED_HOSTS=["testserver", "localhost", "127.0.0.1"], DEBUG=False
    assert await accepted(AllowedHostsOriginValidator, origin) is expected


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("origin", "expected"),
    [
        (b"http://localhost:8000", True),
        (b"http://app.localhost:3000", True),
        (b"http://127.0.0.1:8000", True),
        (b"http://[::1]:8000", True),
        (b"http://127.0.0.2", False),
        (b"http://example.com", False),
        (None, False),
    ],
)
async def test_debug_with_empty_allowed_hosts_uses_djangos_defaults(
    origin: bytes | None, expected: bool
) -> None:
    with override_settings(DEBUG=True, ALLOWED_HOSTS=[]):
        assert await accepted(AllowedHostsOriginValidator, origin) is expected


@pytest.mark.anyio
async def test_no_debug_and_empty_allowed_hosts_denies_everything() -> None:
    with override_settings(DEBUG=False, ALLOWED_HOSTS=[]):
        assert not await accepted(AllowedHostsOriginValidator, b"http://localhost")
        assert not await accepted(AllowedHostsOriginValidator, b"http://127.0.0.1")


@pytest.mark.anyio
async def test_debug_defaults_only_apply_when_allowed_hosts_empty() -> None:
    with override_settings(DEBUG=True, ALLOWED_HOSTS=["example.com"]):
        assert await accepted(AllowedHostsOriginValidator, b"https://example.com")
        assert not await accepted(AllowedHostsOriginValidator, b"http://localhost")


@pytest.mark.anyio
async def test_allowed_hosts_star_allows_missing_origin() -> None:
    with override_settings(ALLOWED_HOSTS=["*"]):
        assert await accepted(AllowedHostsOriginValidator, None)
        assert await accepted(AllowedHostsOriginValidator, b"http://example.com")


@pytest.mark.anyio
async def test_allowed_hosts_are_read_per_handshake() -> None:
    inner = AcceptingApp()
    validator = AllowedHostsOriginValidator(inner)  # built before the override
    headers = origin_headers(b"https://example.com")

    assert await exchange(validator, headers) == [{"type": "websocket.close"}]
    with override_settings(ALLOWED_HOSTS=[".example.com"]):
        assert validator.allowed_origins == [".example.com"]
        assert await exchange(validator, headers) == [{"type": "websocket.accept"}]
    with override_settings(DEBUG=True, ALLOWED_HOSTS=[]):
        assert validator.allowed_origins == DEBUG_ALLOWED_HOSTS


@pytest.mark.anyio
async def test_allowed_hosts_validator_can_be_pinned() -> None:
    inner = AcceptingApp()
    validator = AllowedHostsOriginValidator(inner)
    validator.allowed_origins = ["https://example.com"]

    sent = await exchange(validator, origin_headers(b"https://example.com"))

    assert sent == [{"type": "websocket.accept"}]
    assert isinstance(validator, OriginValidator)


# -- WebsocketDenier ------------------------------------------------------------


@pytest.mark.anyio
async def test_denier_closes_the_handshake_and_ends_on_disconnect() -> None:
    assert await exchange(WebsocketDenier(), []) == [{"type": "websocket.close"}]


@pytest.mark.anyio
async def test_denier_as_asgi_makes_an_application() -> None:
    assert await exchange(WebsocketDenier.as_asgi(), []) == [{"type": "websocket.close"}]


@pytest.mark.anyio
async def test_denier_ends_when_the_client_leaves_before_connect() -> None:
    async def receive() -> Message:
        return {"type": "websocket.disconnect", "code": 1006}

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    with anyio.fail_after(5):
        await WebsocketDenier()({"type": "websocket"}, receive, send)
    assert sent == []


@pytest.mark.anyio
async def test_structured_communicator_against_a_denied_route() -> None:
    validator = OriginValidator(AcceptingApp(), ["https://example.com"])
    headers = [(b"origin", b"https://evil.example")]
    async with WebsocketCommunicator(validator, "/ws/", headers=headers) as communicator:
        assert await communicator.connect() == (False, 1000)
        assert await communicator.receive_nothing()
        await communicator.disconnect()
