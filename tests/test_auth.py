"""get_user, login, logout and AuthMiddleware against real user and session tables."""

from __future__ import annotations

from collections.abc import Iterator
from http.cookies import SimpleCookie
from typing import Any

import pytest
from django.contrib.auth import (
    BACKEND_SESSION_KEY,
    HASH_SESSION_KEY,
    SESSION_KEY,
    authenticate,
    user_logged_in,
    user_logged_out,
)
from django.contrib.auth.models import AnonymousUser, User
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.models import Session
from django.test import override_settings
from older_django import create_user, save_session, session_get
from sqlite_file import sqlite_file_database

from channels_runtime.asgi import Message, Scope
from channels_runtime.auth import (
    AuthMiddleware,
    AuthMiddlewareStack,
    UserLazyObject,
    get_user,
    login,
    logout,
)
from channels_runtime.compat.backend import ensure_bridge
from channels_runtime.compat.django_versions import ASYNC_SIGNALS
from channels_runtime.db import database_sync_to_async
from channels_runtime.generic.websocket import AsyncWebsocketConsumer
from channels_runtime.sessions import CookieMiddleware
from channels_runtime.testing import WebsocketCommunicator

MODEL_BACKEND = "django.contrib.auth.backends.ModelBackend"


# -- database ------------------------------------------------------------------


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A migrated SQLite file for this module's tests (see ``sqlite_file``)."""
    with (
        sqlite_file_database(tmp_path_factory.mktemp("auth") / "db.sqlite3"),
        # Hashing speed is not under test; PBKDF2 would dominate the run time.
        override_settings(PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"]),
    ):
        yield


@pytest.fixture(autouse=True)
def _empty_tables(database: None) -> None:
    Session.objects.all().delete()
    User.objects.all().delete()


@pytest.fixture
def signals() -> Iterator[list[tuple[str, Any]]]:
    """Calls to ``user_logged_in``/``user_logged_out`` receivers, as ``(name, user)``."""
    calls: list[tuple[str, Any]] = []

    def on_login(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
        assert request is None
        calls.append(("in", user))

    async def on_logout(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
        calls.append(("out", user))

    def on_logout_sync(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
        calls.append(("out", user))

    # Async receivers are Django 5.0+; on 4.2 the sync one.
    logout_receiver = on_logout if ASYNC_SIGNALS else on_logout_sync
    user_logged_in.connect(on_login)
    user_logged_out.connect(logout_receiver)
    try:
        yield calls
    finally:
        user_logged_in.disconnect(on_login)
        user_logged_out.disconnect(logout_receiver)


# -- helpers -------------------------------------------------------------------


async def make_user(username: str = "alice", password: str = "secret") -> User:
    ensure_bridge()
    return await create_user(username, password)  # not acreate_user: Django 4.2 runs this too


async def logged_in_session(user: User) -> SessionStore:
    """A saved session recording ``user``'s login, written the way Django's login does."""
    session = SessionStore()
    await save_session(
        session,
        **{
            SESSION_KEY: str(user.pk),
            BACKEND_SESSION_KEY: MODEL_BACKEND,
            HASH_SESSION_KEY: user.get_session_auth_hash(),
        },
    )
    return session


def reopen(session: SessionStore) -> SessionStore:
    """The same session as a new connection would see it: loaded afresh from the table."""
    return SessionStore(session.session_key)


# -- get_user --------------------------------------------------------------------


@pytest.mark.anyio
async def test_get_user_from_valid_session() -> None:
    user = await make_user()
    session = await logged_in_session(user)
    found = await get_user({"session": reopen(session)})
    assert found == user
    assert found.is_authenticated


@pytest.mark.anyio
async def test_get_user_anonymous_without_login() -> None:
    ensure_bridge()
    assert isinstance(await get_user({"session": SessionStore()}), AnonymousUser)
    with pytest.raises(ValueError, match="SessionMiddleware"):
        await get_user({})


@pytest.mark.anyio
async def test_changed_password_logs_session_out() -> None:
    user = await make_user()
    session = await logged_in_session(user)
    user.set_password("changed")
    await user.asave()

    scope = {"session": reopen(session)}
    assert isinstance(await get_user(scope), AnonymousUser)
    # The stale session is gone, not just ignored.
    assert scope["session"].is_empty()
    assert not await Session.objects.filter(session_key=session.session_key).aexists()


@pytest.mark.anyio
async def test_session_hash_from_fallback_secret_is_renewed() -> None:
    user = await make_user()
    session = await logged_in_session(user)  # hashed with the current SECRET_KEY
    with override_settings(SECRET_KEY="rotated", SECRET_KEY_FALLBACKS=["channels-runtime-tests"]):
        scope = {"session": reopen(session)}
        assert await get_user(scope) == user
        renewed = scope["session"]
        assert renewed.session_key != session.session_key
        assert await session_get(renewed, HASH_SESSION_KEY) == user.get_session_auth_hash()


# -- login / logout --------------------------------------------------------------


@pytest.mark.anyio
async def test_login_cycles_key_and_keeps_anonymous_data(signals: list[tuple[str, Any]]) -> None:
    user = await make_user()
    user.backend = MODEL_BACKEND
    session = SessionStore()
    await save_session(session, cart=[1, 2])
    old_key = session.session_key

    scope: dict[str, Any] = {"session": reopen(session), "user": AnonymousUser()}
    await login(scope, user)
    assert scope["user"] is user
    assert scope["session"].session_key != old_key
    assert await session_get(scope["session"], "cart") == [1, 2]
    assert await session_get(scope["session"], SESSION_KEY) == str(user.pk)
    assert await session_get(scope["session"], BACKEND_SESSION_KEY) == MODEL_BACKEND
    assert signals == [("in", user)]


@pytest.mark.anyio
async def test_login_over_another_users_session_starts_afresh() -> None:
    alice = await make_user("alice")
    bob = await make_user("bob")
    session = await logged_in_session(alice)
    await save_session(session, alice_only=True)

    scope: dict[str, Any] = {"session": reopen(session)}
    await login(scope, bob, backend=MODEL_BACKEND)
    assert await session_get(scope["session"], "alice_only") is None
    assert await get_user(scope) == bob


@pytest.mark.anyio
async def test_login_needs_a_user_and_a_backend() -> None:
    user = await make_user()
    with pytest.raises(ValueError, match="User must be passed"):
        await login({"session": SessionStore()}, None)
    with (
        override_settings(
            AUTHENTICATION_BACKENDS=[
                MODEL_BACKEND,
                "django.contrib.auth.backends.AllowAllUsersModelBackend",
            ]
        ),
        pytest.raises(ValueError, match="multiple authentication backends"),
    ):
        await login({"session": SessionStore()}, user)
    # Refused before the session was touched: no new session row was made.
    assert await Session.objects.acount() == 0


@pytest.mark.anyio
async def test_logout_without_user_sends_no_signal(signals: list[tuple[str, Any]]) -> None:
    ensure_bridge()
    scope: dict[str, Any] = {"session": SessionStore(), "user": AnonymousUser()}
    await logout(scope)
    assert signals == []
    assert isinstance(scope["user"], AnonymousUser)


class LoginConsumer(AsyncWebsocketConsumer):
    """Logs in with ``"login <user> <password>"``, out with ``"logout"``; reports who it is."""

    async def connect(self) -> None:
        await self.accept()
        await self.send(text_data=self.scope["user"].get_username() or "anonymous")

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        assert text_data is not None
        command, *args = text_data.split()
        if command == "login":
            user = await database_sync_to_async(authenticate)(username=args[0], password=args[1])
            await login(self.scope, user)
        else:
            await logout(self.scope)
        # A WebSocket has no response to save the session on: save it here.
        await save_session(self.scope["session"])
        user_name = self.scope["user"].get_username() or "anonymous"
        await self.send(text_data=f"{user_name} {self.scope['session'].session_key}")


async def connect(cookie: str | None = None) -> tuple[WebsocketCommunicator, str]:
    headers = [] if cookie is None else [(b"cookie", cookie.encode())]
    app = AuthMiddlewareStack(LoginConsumer.as_asgi())
    communicator = WebsocketCommunicator(app, "/ws/", headers=headers)
    connected, _ = await communicator.connect()
    assert connected
    return communicator, await communicator.receive_from()


@pytest.mark.anyio
async def test_login_and_logout_through_a_consumer(signals: list[tuple[str, Any]]) -> None:
    user = await make_user("carol", "pw")

    communicator, who = await connect()
    assert who == "anonymous"
    await communicator.send_to(text_data="login carol pw")
    who, session_key = (await communicator.receive_from()).split()
    assert who == "carol"
    assert signals == [("in", user)]
    await communicator.disconnect()

    # A new connection carrying the saved session's cookie is carol's.
    communicator, who = await connect(f"sessionid={session_key}")
    assert who == "carol"
    await communicator.send_to(text_data="logout")
    who, _ = (await communicator.receive_from()).split()
    assert who == "anonymous"
    assert signals == [("in", user), ("out", user)]
    assert not await Session.objects.filter(session_key=session_key).aexists()
    await communicator.disconnect()

    communicator, who = await connect(f"sessionid={session_key}")
    assert who == "anonymous"
    await communicator.disconnect()


@pytest.mark.anyio
async def test_login_over_http_sets_the_session_cookie() -> None:
    user = await make_user()

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        assert isinstance(scope["user"], UserLazyObject)  # resolved before we were called
        assert not scope["user"].is_authenticated
        await login(scope, user, backend=MODEL_BACKEND)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/login", "headers": []}
    await AuthMiddlewareStack(app)(scope, None, send)  # type: ignore[arg-type]
    cookie: SimpleCookie = SimpleCookie()
    cookie.load(dict(sent[0]["headers"])[b"Set-Cookie"].decode())
    session_key = cookie["sessionid"].value
    assert await get_user({"session": SessionStore(session_key)}) == user


@pytest.mark.anyio
async def test_auth_middleware_needs_session_middleware() -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        raise AssertionError("not reached")

    for stack in (AuthMiddleware(app), CookieMiddleware(AuthMiddleware(app))):
        with pytest.raises(
            ValueError,
            match=r"^AuthMiddleware cannot find session in scope\. SessionMiddleware must",
        ):
            await stack({"type": "websocket", "headers": []}, None, None)  # type: ignore[arg-type]


def test_user_lazy_object_before_resolution() -> None:
    with pytest.raises(ValueError, match="before it is ready"):
        _ = UserLazyObject().is_authenticated
