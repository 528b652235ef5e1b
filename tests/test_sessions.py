"""CookieMiddleware and SessionMiddleware against a real (SQLite file) session table."""

from __future__ import annotations

import datetime
from collections.abc import Awaitable, Callable, Iterator
from http.cookies import SimpleCookie
from typing import Any

import pytest
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.models import Session
from django.core.exceptions import SuspiciousOperation
from django.test import override_settings
from older_django import save_session
from sqlite_file import sqlite_file_database

from channels_runtime import sessions
from channels_runtime.asgi import Message, Scope
from channels_runtime.compat.backend import ensure_bridge
from channels_runtime.db import database_sync_to_async
from channels_runtime.generic.websocket import AsyncWebsocketConsumer
from channels_runtime.sessions import CookieMiddleware, SessionMiddleware, SessionMiddlewareStack
from channels_runtime.testing import WebsocketCommunicator

# -- database ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A migrated SQLite file for this module's tests (see ``sqlite_file``)."""
    with sqlite_file_database(tmp_path_factory.mktemp("sessions") / "db.sqlite3"):
        yield


@pytest.fixture(autouse=True)
def _empty_tables(database: None) -> None:
    Session.objects.all().delete()


# -- helpers -------------------------------------------------------------------

Handler = Callable[[Scope], Awaitable[None]]


async def nothing(scope: Scope) -> None:
    pass


def http_app(
    handler: Handler, status: int = 200, headers: list[tuple[bytes, bytes]] | None = None
) -> Any:
    """A plain ASGI HTTP app running ``handler(scope)`` before responding, in the session stack."""

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await receive()
        await handler(scope)
        await send(
            {"type": "http.response.start", "status": status, "headers": list(headers or [])}
        )
        await send({"type": "http.response.body", "body": b"ok"})

    return SessionMiddlewareStack(app)


async def request(app: Any, cookie: str | None = None) -> Message:
    """Make one GET through ``app``; return its ``http.response.start`` message."""
    headers = [(b"host", b"testserver")]
    if cookie is not None:
        headers.append((b"cookie", cookie.encode("latin1")))
    scope = {"type": "http", "method": "GET", "path": "/", "headers": headers}
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    return sent[0]


def set_cookies(message: Message) -> SimpleCookie:
    """Every ``Set-Cookie`` header in ``message``, parsed."""
    jar: SimpleCookie = SimpleCookie()
    for name, value in message.get("headers", []):
        if name.lower() == b"set-cookie":
            jar.load(value.decode("latin1"))
    return jar


def header(message: Message, wanted: bytes) -> list[bytes]:
    return [value for name, value in message["headers"] if name.lower() == wanted]


async def stored_session(**data: Any) -> str:
    """Save a session holding ``data`` straight through Django; return its key."""
    store = SessionStore()
    await save_session(store, **data)
    assert store.session_key is not None
    return store.session_key


async def stored_data(session_key: str) -> dict[str, Any] | None:
    row = await Session.objects.filter(session_key=session_key).afirst()
    return None if row is None else row.get_decoded()


# -- cookies -------------------------------------------------------------------


@pytest.mark.anyio
async def test_cookie_header_parsed_into_scope() -> None:
    seen: dict[str, Any] = {}

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        seen.update(scope)

    middleware = CookieMiddleware(app)
    headers = [(b"cookie", b"a=1; b=two"), (b"accept", b"*/*"), (b"cookie", b"c=3")]
    await middleware({"type": "http", "headers": headers}, None, None)  # type: ignore[arg-type]
    # Several Cookie headers (HTTP/2 splits them) are all read, as Django does.
    assert seen["cookies"] == {"a": "1", "b": "two", "c": "3"}

    await middleware({"type": "websocket", "headers": []}, None, None)  # type: ignore[arg-type]
    assert seen["cookies"] == {}

    with pytest.raises(ValueError, match="did not have a headers key"):
        await middleware({"type": "lifespan"}, None, None)  # type: ignore[arg-type]


def test_set_cookie_attributes() -> None:
    message: Message = {"type": "http.response.start", "status": 200, "headers": [(b"a", b"b")]}
    CookieMiddleware.set_cookie(
        message,
        "token",
        "abc",
        max_age=60,
        path="/app",
        domain="example.com",
        secure=True,
        httponly=True,
        samesite="Strict",
    )
    assert message["headers"][0] == (b"a", b"b")
    morsel = set_cookies(message)["token"]
    assert morsel.value == "abc"
    assert morsel["max-age"] == "60"
    assert morsel["expires"]  # old clients need Expires as well
    assert morsel["path"] == "/app"
    assert morsel["domain"] == "example.com"
    assert morsel["secure"] is True
    assert morsel["httponly"] is True
    assert morsel["samesite"] == "Strict"


def test_set_cookie_defaults_and_expires_forms() -> None:
    message: Message = {"type": "http.response.start", "status": 200}
    CookieMiddleware.set_cookie(message, "plain")
    raw = header(message, b"set-cookie")[0]
    assert raw == b'plain=""; Path=/; SameSite=lax'

    in_an_hour = datetime.datetime.now(tz=datetime.UTC) + datetime.timedelta(hours=1)
    CookieMiddleware.set_cookie(message, "dated", "1", expires=in_an_hour)
    # A datetime becomes Max-Age (plus a matching Expires).
    assert int(set_cookies(message)["dated"]["max-age"]) in (3600, 3601)
    CookieMiddleware.set_cookie(message, "texted", "1", expires="Wed, 21 Oct 2065 07:28:00 GMT")
    assert set_cookies(message)["texted"]["expires"] == "Wed, 21 Oct 2065 07:28:00 GMT"
    CookieMiddleware.set_cookie(message, "nosite", "1", samesite=None)
    assert b"samesite" not in header(message, b"set-cookie")[-1].lower()
    with pytest.raises(ValueError, match="can't be used together"):
        CookieMiddleware.set_cookie(message, "both", "1", expires=in_an_hour, max_age=5)


def test_set_cookie_rejects_unknown_samesite() -> None:
    message: Message = {"type": "http.response.start", "status": 200}
    with pytest.raises(ValueError, match="'sometimes'"):
        CookieMiddleware.set_cookie(message, "k", "v", samesite="sometimes")
    assert "headers" not in message
    for accepted in ("lax", "Strict", "NONE"):
        CookieMiddleware.set_cookie(message, "k", "v", samesite=accepted)


def test_delete_cookie() -> None:
    message: Message = {"type": "http.response.start", "status": 200}
    CookieMiddleware.delete_cookie(message, "gone", path="/p", domain="example.com")
    morsel = set_cookies(message)["gone"]
    assert morsel.value == ""
    assert morsel["max-age"] == "0"
    assert morsel["expires"] == "Thu, 01 Jan 1970 00:00:00 GMT"
    assert morsel["path"] == "/p"
    assert morsel["domain"] == "example.com"
    assert not morsel["secure"]
    # Browsers ignore deleting a __Host- cookie unless the deletion is Secure.
    CookieMiddleware.delete_cookie(message, "__Host-gone")
    assert set_cookies(message)["__Host-gone"]["secure"] is True


# -- sessions over HTTP ----------------------------------------------------------


@pytest.mark.anyio
async def test_modified_session_saved_and_cookie_set() -> None:
    async def handler(scope: Scope) -> None:
        await scope["session"].aset("colour", "blue")

    start = await request(http_app(handler))
    morsel = set_cookies(start)["sessionid"]
    assert await stored_data(morsel.value) == {"colour": "blue"}
    assert int(morsel["max-age"]) == 1209600  # SESSION_COOKIE_AGE
    assert morsel["httponly"] is True
    assert morsel["samesite"] == "Lax"
    assert morsel["path"] == "/"
    # As in Channels: the cookie is the only header added (no Vary: Cookie).
    assert [name for name, _ in start["headers"]] == [b"Set-Cookie"]


@pytest.mark.anyio
async def test_cookie_attributes_follow_settings() -> None:
    async def handler(scope: Scope) -> None:
        await scope["session"].aset("k", 1)

    with override_settings(
        SESSION_COOKIE_NAME="sid",
        SESSION_COOKIE_DOMAIN="example.com",
        SESSION_COOKIE_PATH="/app",
        SESSION_COOKIE_SECURE=True,
        SESSION_COOKIE_HTTPONLY=False,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_EXPIRE_AT_BROWSER_CLOSE=True,
    ):
        start = await request(http_app(handler))
    morsel = set_cookies(start)["sid"]
    assert morsel["domain"] == "example.com"
    assert morsel["path"] == "/app"
    assert morsel["secure"] is True
    assert not morsel["httponly"]
    assert morsel["samesite"] == "Strict"
    # Expiring at browser close means a session cookie: no Max-Age, no Expires.
    assert not morsel["max-age"]
    assert not morsel["expires"]


@pytest.mark.anyio
async def test_unmodified_session_not_saved() -> None:
    key = await stored_session(colour="red")
    seen: list[Any] = []

    async def handler(scope: Scope) -> None:
        seen.append(await scope["session"].aget("colour"))

    start = await request(http_app(handler), cookie=f"sessionid={key}")
    assert seen == ["red"]
    assert "sessionid" not in set_cookies(start)
    # Read but not changed: the response goes out with the application's headers only.
    assert start["headers"] == []

    # Without a cookie, an untouched session creates nothing at all.
    start = await request(http_app(nothing))
    assert start["headers"] == []
    assert await Session.objects.acount() == 1


@pytest.mark.anyio
async def test_save_every_request() -> None:
    key = await stored_session(colour="red")
    before = (await Session.objects.aget(session_key=key)).expire_date
    with override_settings(SESSION_SAVE_EVERY_REQUEST=True, SESSION_COOKIE_AGE=10 * 86400):
        start = await request(http_app(nothing), cookie=f"sessionid={key}")
    assert set_cookies(start)["sessionid"].value == key
    row = await Session.objects.aget(session_key=key)
    assert row.get_decoded() == {"colour": "red"}
    assert row.expire_date < before  # rewritten with the new (shorter) age


@pytest.mark.anyio
async def test_server_error_does_not_save() -> None:
    async def handler(scope: Scope) -> None:
        await scope["session"].aset("colour", "green")

    for status in (500, 503):
        start = await request(http_app(handler, status=status))
        assert "sessionid" not in set_cookies(start)
    assert await Session.objects.acount() == 0


@pytest.mark.anyio
async def test_emptied_session_deletes_cookie() -> None:
    key = await stored_session(colour="red")

    async def handler(scope: Scope) -> None:
        await scope["session"].aflush()

    with override_settings(SESSION_COOKIE_PATH="/app", SESSION_COOKIE_DOMAIN="example.com"):
        start = await request(http_app(handler), cookie=f"sessionid={key}")
    morsel = set_cookies(start)["sessionid"]
    assert morsel.value == ""
    assert morsel["max-age"] == "0"
    assert morsel["path"] == "/app"
    assert morsel["domain"] == "example.com"
    assert await stored_data(key) is None
    assert await Session.objects.acount() == 0  # no empty replacement row either


@pytest.mark.anyio
async def test_session_deleted_concurrently_is_suspicious() -> None:
    key = await stored_session(colour="red")

    async def handler(scope: Scope) -> None:
        await scope["session"].aset("colour", "black")
        # Meanwhile another request logs the user out.
        await Session.objects.filter(session_key=key).adelete()

    with pytest.raises(SuspiciousOperation, match="deleted before the request completed"):
        await request(http_app(handler), cookie=f"sessionid={key}")
    assert await Session.objects.acount() == 0


@pytest.mark.anyio
async def test_vary_is_left_to_the_application() -> None:
    """No ``Vary: Cookie`` is added (as in Channels); the application's own is kept as sent."""

    async def handler(scope: Scope) -> None:
        await scope["session"].aset("k", "v")

    start = await request(http_app(handler))
    assert header(start, b"vary") == []
    assert "sessionid" in set_cookies(start)
    start = await request(http_app(handler, headers=[(b"vary", b"Accept-Encoding")]))
    assert header(start, b"vary") == [b"Accept-Encoding"]
    start = await request(http_app(handler, headers=[(b"Vary", b"Cookie")]))
    assert header(start, b"vary") == [b"Cookie"]
    assert [name.lower() for name, _ in start["headers"]] == [b"vary", b"set-cookie"]


@pytest.mark.anyio
async def test_sync_session_api_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before Django 5.1 the sync session methods run in the thread-sensitive worker."""
    monkeypatch.setattr(sessions, "ASYNC_SESSION_API", False)
    key = await stored_session(colour="red")

    async def handler(scope: Scope) -> None:
        session = scope["session"]
        assert await database_sync_to_async(session.get)("colour") == "red"
        await database_sync_to_async(session.__setitem__)("colour", "white")

    start = await request(http_app(handler), cookie=f"sessionid={key}")
    assert set_cookies(start)["sessionid"].value == key
    assert await stored_data(key) == {"colour": "white"}


@pytest.mark.anyio
async def test_outer_session_middleware_owns_the_session() -> None:
    sessions: list[Any] = []

    async def handler(scope: Scope) -> None:
        sessions.append(scope["session"])
        await scope["session"].aset("k", "v")

    inner = http_app(handler)
    start = await request(CookieMiddleware(SessionMiddleware(inner)))
    # Only one Set-Cookie: the inner middleware leaves saving to the outer one.
    assert len(header(start, b"set-cookie")) == 1


@pytest.mark.anyio
async def test_session_middleware_needs_cookies() -> None:
    with pytest.raises(ValueError, match="CookieMiddleware"):
        await SessionMiddleware(nothing)(  # type: ignore[arg-type]
            {"type": "http", "headers": []}, None, None
        )


# -- sessions in a WebSocket consumer ------------------------------------------


class SessionConsumer(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        await self.accept()
        await self.send(text_data=str(await self.scope["session"].aget("colour")))

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        await self.scope["session"].aset("colour", text_data)
        if text_data == "save":
            await self.scope["session"].asave()
        await self.send(text_data="done")


@pytest.mark.anyio
async def test_websocket_consumer_reads_session_from_cookie() -> None:
    ensure_bridge()
    key = await stored_session(colour="red")
    app = SessionMiddlewareStack(SessionConsumer.as_asgi())
    communicator = WebsocketCommunicator(
        app, "/ws/", headers=[(b"cookie", f"sessionid={key}".encode())]
    )
    connected, _ = await communicator.connect()
    assert connected
    assert await communicator.receive_from() == "red"

    # Nothing is saved behind the consumer's back...
    await communicator.send_to(text_data="unsaved")
    assert await communicator.receive_from() == "done"
    assert await stored_data(key) == {"colour": "red"}
    # ...only when it saves explicitly.
    await communicator.send_to(text_data="save")
    assert await communicator.receive_from() == "done"
    assert await stored_data(key) == {"colour": "save"}
    await communicator.disconnect()
