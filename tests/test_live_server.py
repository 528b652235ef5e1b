"""ChannelsLiveServerTestCase and the channels_live_server fixture, with real clients.

The served application is defined below; the server process imports this very
module by name to get it (it receives the test process's ``sys.path``).
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any, ClassVar
from unittest import mock

import anyio
import httpx
import pytest
import trio
from asgiref.sync import sync_to_async
from django.contrib.auth.models import User
from django.core.exceptions import ImproperlyConfigured
from django.db import connections
from django.test import override_settings
from django.urls import path
from sqlite_file import sqlite_file_database
from websockets.sync.client import connect

from channels_runtime.compat.backend import ensure_bridge
from channels_runtime.generic.http import AsyncHttpConsumer
from channels_runtime.generic.websocket import AsyncWebsocketConsumer
from channels_runtime.routing import ProtocolTypeRouter, URLRouter
from channels_runtime.testing.live import ChannelsLiveServerTestCase, LiveServer, settings_snapshot

# The plugin's fixtures, used here without relying on the pytest11 entry point
# (test parameters with these names are flagged as redefinitions: F811).
from channels_runtime.testing.pytest_plugin import (  # noqa: F401
    channels_live_server,
    channels_live_server_application,
    channels_live_server_worker_class,
)

TIMEOUT = 10.0

# -- the application the live server runs ---------------------------------------


class UserCount(AsyncHttpConsumer):
    """How many users the *server* sees: proves it uses the test's database."""

    async def handle(self, body: bytes) -> None:
        count = await User.objects.acount()
        await self.send_response(
            200,
            json.dumps({"users": count}).encode(),
            headers=[(b"content-type", b"application/json")],
        )


class Echo(AsyncWebsocketConsumer):
    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        await self.send(text_data=f"echo:{text_data}")


application = ProtocolTypeRouter(
    {
        "http": URLRouter([path("users/", UserCount.as_asgi())]),
        "websocket": URLRouter([path("ws/echo/", Echo.as_asgi())]),
    }
)

APPLICATION = f"{__name__}.application"


# -- database --------------------------------------------------------------------


def _close_connections_everywhere() -> None:
    """Close this thread's connections and those of the async ORM's worker threads."""

    async def close_in_worker() -> None:
        ensure_bridge()
        await sync_to_async(connections.close_all)()

    connections.close_all()
    anyio.run(close_in_worker)
    trio.run(close_in_worker)


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A migrated SQLite *file*: the suite's in-memory one is invisible to a server process."""
    with sqlite_file_database(tmp_path_factory.mktemp("live") / "db.sqlite3"):
        yield


def _get_json(url: str) -> Any:
    response = httpx.get(url, timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    return response.json()


def _echo(url: str) -> str:
    with connect(url, open_timeout=TIMEOUT, close_timeout=TIMEOUT) as ws:
        ws.send("hello")
        reply = ws.recv(timeout=TIMEOUT)
    assert isinstance(reply, str)
    return reply


# -- the test case class -----------------------------------------------------------


class _LiveServerChecks:
    """Run once per worker class by the subclasses below."""

    application: ClassVar[str | None] = APPLICATION
    live_server_url: str
    live_server_ws_url: str

    def test_urls_point_at_a_listening_port(self) -> None:
        scheme, _, rest = self.live_server_url.partition("://")
        assert scheme == "http"
        assert self.live_server_ws_url == f"ws://{rest}"
        host, _, port = rest.rpartition(":")
        assert host == "localhost"
        socket.create_connection((host, int(port)), timeout=TIMEOUT).close()

    def test_server_sees_rows_the_test_commits(self) -> None:
        assert _get_json(f"{self.live_server_url}/users/") == {"users": 0}
        User.objects.create(username="alice")
        assert _get_json(f"{self.live_server_url}/users/") == {"users": 1}

    def test_websocket(self) -> None:
        assert _echo(f"{self.live_server_ws_url}/ws/echo/") == "echo:hello"


@pytest.mark.usefixtures("database")
class LiveServerOnAsyncioTests(_LiveServerChecks, ChannelsLiveServerTestCase):
    worker_class = "asyncio"


@pytest.mark.usefixtures("database")
class LiveServerOnUvloopTests(_LiveServerChecks, ChannelsLiveServerTestCase):
    worker_class = "uvloop"


@pytest.mark.usefixtures("database")
class LiveServerOnTrioTests(_LiveServerChecks, ChannelsLiveServerTestCase):
    worker_class = "trio"


@pytest.mark.usefixtures("database")
class LiveServerDatabaseIsEmptiedTests(ChannelsLiveServerTestCase):
    """TransactionTestCase's flush between tests reaches what the server sees."""

    application = APPLICATION

    def test_1_write(self) -> None:
        User.objects.create(username="temporary")
        assert _get_json(f"{self.live_server_url}/users/") == {"users": 1}

    def test_2_gone(self) -> None:
        assert _get_json(f"{self.live_server_url}/users/") == {"users": 0}


def test_urls_need_a_running_server() -> None:
    with pytest.raises(RuntimeError, match="not running"):
        _ = ChannelsLiveServerTestCase.live_server_url


# -- the pytest fixture ------------------------------------------------------------


@pytest.mark.usefixtures("database")
@pytest.mark.parametrize("channels_live_server_application", [APPLICATION])
@pytest.mark.parametrize("channels_live_server_worker_class", ["asyncio", "uvloop", "trio"])
def test_fixture_serves_http_and_websockets(channels_live_server: LiveServer) -> None:  # noqa: F811
    User.objects.create(username="bob")
    try:
        assert _get_json(f"{channels_live_server.url}/users/") == {"users": 1}
        assert _echo(f"{channels_live_server.ws_url}/ws/echo/") == "echo:hello"
    finally:
        User.objects.all().delete()


def test_fixture_default_worker_class(channels_live_server_worker_class: str) -> None:  # noqa: F811
    assert channels_live_server_worker_class == "asyncio"


# -- LiveServer itself ----------------------------------------------------------------


@pytest.mark.usefixtures("database")
def test_stop_is_graceful_and_frees_the_port() -> None:
    server = LiveServer(application=APPLICATION, worker_class="trio")
    with server:
        process = server._process
        port = server.port
        assert port is not None
        assert _echo(f"{server.ws_url}/ws/echo/") == "echo:hello"
    assert process is not None
    # Closing stdin asked it to stop; exit status 0 means it shut down by itself.
    assert process.returncode == 0
    assert server.port is None
    with pytest.raises(OSError):
        socket.create_connection(("localhost", port), timeout=TIMEOUT).close()


@pytest.mark.usefixtures("database")
def test_a_server_that_cannot_start_is_reported_quickly() -> None:
    server = LiveServer(application="no_such_module_here.application", startup_timeout=TIMEOUT)
    with pytest.raises(RuntimeError, match="exited with code 1"):
        server.start()
    assert server._process is None


def test_in_memory_sqlite_is_refused_with_a_hint() -> None:
    with (
        mock.patch.dict(connections["default"].settings_dict, NAME=":memory:"),
        pytest.raises(ImproperlyConfigured, match=r"in-memory SQLite.*\['TEST'\]"),
    ):
        settings_snapshot()


def test_settings_snapshot_carries_overrides() -> None:
    with override_settings(CHAT_EXAMPLE_VALUE=42, DEBUG=True):
        snapshot = settings_snapshot()
    assert snapshot["CHAT_EXAMPLE_VALUE"] == 42
    assert snapshot["DEBUG"] is True
    # Unchanged defaults are left for the server process's own Django to supply.
    assert "DATA_UPLOAD_MAX_NUMBER_FIELDS" not in snapshot


def test_unpicklable_setting_is_named() -> None:
    with (
        override_settings(SOME_CALLBACK=lambda: None),
        pytest.raises(ImproperlyConfigured, match="SOME_CALLBACK"),
    ):
        settings_snapshot()
