"""The chat example (``examples/chat``): its consumer through communicators, then the
real server started with the documented command, driven by real clients.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.auth.models import User
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.models import Session
from django.test import override_settings
from sqlite_file import sqlite_file_database
from test_runserver import running
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Origin

from channels_runtime.testing import WebsocketCommunicator

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "chat"
#: The command docs/example-chat.md tells people to run, from EXAMPLE.
SERVE_COMMAND = "python manage.py migrate --noinput && channels-runtime serve chat.asgi"
TIMEOUT = 15.0
MODEL_BACKEND = "django.contrib.auth.backends.ModelBackend"


# -- the example's application in this process -------------------------------------


@pytest.fixture(scope="module")
def chat(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """``chat.asgi.application``, with the ``rooms`` app installed and migrated.

    The suite's settings stay in force (the example's own settings module is
    for its server; the end-to-end tests below use it). The database becomes a
    file, which the async ORM's worker threads can share.
    """
    saved_settings_module = os.environ.get("DJANGO_SETTINGS_MODULE")
    sys.path.insert(0, str(EXAMPLE))
    try:
        with (
            override_settings(
                INSTALLED_APPS=[*settings.INSTALLED_APPS, "rooms"],
                CHAT_HISTORY_LENGTH=50,
                CHAT_MAX_MESSAGE_LENGTH=2000,
                PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"],
            ),
            sqlite_file_database(tmp_path_factory.mktemp("chat") / "db.sqlite3"),
        ):
            from chat.asgi import application

            yield application
    finally:
        sys.path.remove(str(EXAMPLE))
        # chat/asgi.py sets it for its own server; do not leak it to later subprocesses.
        if saved_settings_module is None:
            os.environ.pop("DJANGO_SETTINGS_MODULE", None)
        else:
            os.environ["DJANGO_SETTINGS_MODULE"] = saved_settings_module


@pytest.fixture(autouse=True)
def _empty_tables(chat: Any) -> None:
    from rooms.models import Message

    Message.objects.all().delete()
    Session.objects.all().delete()
    User.objects.all().delete()


def client(
    application: Any, room: str, *, session_key: str | None = None, origin: str = "http://localhost"
) -> WebsocketCommunicator:
    headers = [(b"origin", origin.encode()), (b"host", b"localhost")]
    if session_key is not None:
        headers.append((b"cookie", f"{settings.SESSION_COOKIE_NAME}={session_key}".encode()))
    return WebsocketCommunicator(application, f"/ws/chat/{room}/", headers=headers)


async def join(communicator: WebsocketCommunicator) -> dict[str, Any]:
    """Connect and return the welcome event."""
    connected, _ = await communicator.connect()
    assert connected
    welcome = await communicator.receive_json_from()
    assert welcome["type"] == "welcome"
    return welcome


async def logged_in_session(user: User) -> str:
    """A saved session recording ``user``'s login, as Django's login view writes it."""
    session = SessionStore()
    await session.aset(SESSION_KEY, str(user.pk))
    await session.aset(BACKEND_SESSION_KEY, MODEL_BACKEND)
    await session.aset(HASH_SESSION_KEY, user.get_session_auth_hash())
    await session.asave()
    assert session.session_key is not None
    return session.session_key


@pytest.mark.anyio
async def test_two_clients_in_a_room_get_each_others_messages(chat: Any) -> None:
    async with client(chat, "lobby") as alice, client(chat, "lobby") as bob:
        assert (await join(alice))["history"] == []
        await join(bob)

        await alice.send_json_to({"text": "  hello bob  "})
        for receiver in (alice, bob):
            event = await receiver.receive_json_from()
            assert event["type"] == "message"
            assert event["text"] == "hello bob"
            assert event["user"] == "anonymous"
            assert event["room"] == "lobby"

        await bob.send_json_to({"text": "hi alice"})
        assert (await alice.receive_json_from())["text"] == "hi alice"
        assert (await bob.receive_json_from())["text"] == "hi alice"


@pytest.mark.anyio
async def test_messages_are_saved(chat: Any) -> None:
    from rooms.models import Message

    async with client(chat, "lobby") as alice:
        await join(alice)
        await alice.send_json_to({"text": "kept"})
        event = await alice.receive_json_from()

    saved = [message async for message in Message.objects.select_related("user")]
    assert len(saved) == 1
    assert (saved[0].room, saved[0].text, saved[0].user) == ("lobby", "kept", None)
    assert event["id"] == saved[0].pk
    assert event["created"] == saved[0].created.isoformat()


@pytest.mark.anyio
async def test_history_on_join_is_the_latest_messages_oldest_first(chat: Any) -> None:
    from rooms.models import Message

    for text in ("one", "two", "three"):
        await Message.objects.acreate(room="lobby", text=text)
    await Message.objects.acreate(room="elsewhere", text="not here")

    async with client(chat, "lobby") as late:
        history = (await join(late))["history"]
    assert [event["text"] for event in history] == ["one", "two", "three"]

    with override_settings(CHAT_HISTORY_LENGTH=2):
        async with client(chat, "lobby") as later:
            history = (await join(later))["history"]
    assert [event["text"] for event in history] == ["two", "three"]


@pytest.mark.anyio
async def test_logged_in_user_is_named(chat: Any) -> None:
    from rooms.models import Message

    alice = await User.objects.acreate_user(username="alice", password="pw")
    session_key = await logged_in_session(alice)
    async with client(chat, "lobby", session_key=session_key) as ws, client(chat, "lobby") as guest:
        assert (await join(ws))["user"] == "alice"
        assert (await join(guest))["user"] == "anonymous"
        await ws.send_json_to({"text": "signed"})
        assert (await guest.receive_json_from())["user"] == "alice"
        assert (await ws.receive_json_from())["user"] == "alice"

    message = await Message.objects.aget()
    assert message.user_id == alice.pk
    async with client(chat, "lobby") as newcomer:
        [event] = (await join(newcomer))["history"]
    assert event["user"] == "alice"


@pytest.mark.anyio
async def test_rooms_are_separate(chat: Any) -> None:
    async with client(chat, "lobby") as lobby, client(chat, "kitchen") as kitchen:
        await join(lobby)
        await join(kitchen)
        await lobby.send_json_to({"text": "lobby only"})
        assert (await lobby.receive_json_from())["text"] == "lobby only"
        assert await kitchen.receive_nothing()


@pytest.mark.anyio
@pytest.mark.parametrize(
    "content", [{"text": "   "}, {"text": "x" * 2001}, {"text": 5}, ["text"], {"message": "hi"}]
)
async def test_unusable_messages_get_an_error_and_are_not_saved(chat: Any, content: Any) -> None:
    from rooms.models import Message

    async with client(chat, "lobby") as ws:
        await join(ws)
        await ws.send_json_to(content)
        event = await ws.receive_json_from()
        assert event["type"] == "error"
        assert event["error"]
        # Still connected and usable.
        await ws.send_json_to({"text": "fine"})
        assert (await ws.receive_json_from())["text"] == "fine"
    assert await Message.objects.acount() == 1


@pytest.mark.anyio
async def test_other_sites_and_bad_room_names_are_refused(chat: Any) -> None:
    async with client(chat, "lobby", origin="http://evil.example") as foreign:
        connected, _ = await foreign.connect()
        assert not connected
    async with client(chat, "no%20spaces") as bad_name:
        connected, _ = await bad_name.connect()
        assert not connected


# -- the real server, started as the documentation says ------------------------------


def _signup(http: httpx.Client, username: str, password: str) -> None:
    """Create an account through the sign-up page; the client keeps the session cookie."""
    form = http.get("/accounts/signup/?next=/chat/lobby/")
    assert form.status_code == 200
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text)
    assert token is not None
    response = http.post(
        "/accounts/signup/",
        data={
            "csrfmiddlewaretoken": token.group(1),
            "username": username,
            "password1": password,
            "password2": password,
            "next": "/chat/lobby/",
        },
    )
    assert response.status_code == 302, response.text
    assert response.headers["location"] == "/chat/lobby/"


def _receive(ws: ClientConnection) -> dict[str, Any]:
    data = ws.recv(timeout=TIMEOUT)
    assert isinstance(data, str)
    return json.loads(data)


@pytest.mark.parametrize("worker_class", ["asyncio", "trio"])
def test_documented_command_serves_the_chat(tmp_path: Path, worker_class: str) -> None:
    env = {
        "CHAT_DATABASE": str(tmp_path / "chat.sqlite3"),
        # The virtualenv's scripts, as after activating it.
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    }
    command = f"{SERVE_COMMAND} --bind 127.0.0.1:0 --worker-class {worker_class}"
    with running(["sh", "-c", command], cwd=EXAMPLE, env=env) as server:
        base = server.wait_for(r"(http://127\.0\.0\.1:\d+)").group(1)
        origin = Origin(base)
        ws_base = base.replace("http://", "ws://")

        with httpx.Client(base_url=base, timeout=TIMEOUT) as http:
            page = http.get("/chat/lobby/")
            assert page.status_code == 200
            assert '<h1 id="room-title">#lobby</h1>' in page.text
            assert 'data-ws-path="/ws/chat/lobby/"' in page.text
            for asset in ("/static/rooms/chat.js", "/static/rooms/chat.css"):
                assert http.get(asset).status_code == 200, asset
            _signup(http, "carol", "a-long-chat-password-7")
            session_cookie = http.cookies[settings.SESSION_COOKIE_NAME]
            assert "Signed in as <strong>carol</strong>" in http.get("/chat/lobby/").text

        url = f"{ws_base}/ws/chat/lobby/"
        cookie = {"Cookie": f"{settings.SESSION_COOKIE_NAME}={session_cookie}"}
        with (
            connect(url, origin=origin, additional_headers=cookie, open_timeout=TIMEOUT) as carol,
            connect(url, origin=origin, open_timeout=TIMEOUT) as guest,
        ):
            assert _receive(carol)["user"] == "carol"
            assert _receive(guest)["user"] == "anonymous"
            carol.send(json.dumps({"text": "hello from carol"}))
            for ws in (carol, guest):
                event = _receive(ws)
                assert (event["user"], event["text"]) == ("carol", "hello from carol")
            guest.send(json.dumps({"text": "hello from a guest"}))
            for ws in (carol, guest):
                event = _receive(ws)
                assert (event["user"], event["text"]) == ("anonymous", "hello from a guest")

        with connect(url, origin=origin, open_timeout=TIMEOUT) as newcomer:
            history = _receive(newcomer)["history"]
        assert [(event["user"], event["text"]) for event in history] == [
            ("carol", "hello from carol"),
            ("anonymous", "hello from a guest"),
        ]

        server.signal(signal.SIGINT)
        server.wait_exit()
        assert "Traceback" not in server.output, server.output
