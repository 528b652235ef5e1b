"""End-to-end: real Hypercorn processes, real sockets, real clients, real signals.

``channels-runtime serve`` is started as a subprocess on every worker class;
``tests/e2e_app`` is the project it serves. Plain ``hypercorn --config
hypercorn.toml`` serving the same project is checked too, and so is
``channels_runtime.server.serve()`` embedded in an anyio program.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
from contextlib import ExitStack
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from django.urls import path
from e2e_app.harness import (
    REPO,
    Server,
    base_env,
    children_of,
    cli_command,
    hypercorn_command,
    read_events,
    wait_until,
)
from hypercorn.config import Config
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from channels_runtime.generic.websocket import AsyncWebsocketConsumer
from channels_runtime.routing import ProtocolTypeRouter, URLRouter
from channels_runtime.server import GracefulShutdown, serve

WORKER_CLASSES = ["asyncio", "uvloop", "trio"]


def ws(server: Server, route: str, stack: ExitStack) -> ClientConnection:
    return stack.enter_context(connect(server.ws_url + route, open_timeout=10, close_timeout=5))


def close_code(client: ClientConnection, timeout: float = 10.0) -> int | None:
    """The close code the server sent, or None for a connection dropped without one."""
    try:
        while True:
            client.recv(timeout=timeout)
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd is not None else None


def start_serve(tmp_path: Path, *args: str, events: Path | None = None, **env: str) -> Server:
    extra = dict(env)
    if events is not None:
        extra["E2E_EVENTS_FILE"] = str(events)
    return Server(
        [*cli_command(), "serve", "tests.e2e_app.asgi", "-b", "127.0.0.1:0", *args],
        log_path=tmp_path / "server.log",
        env=base_env(**extra),
    )


@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
def test_serve_end_to_end_then_sigterm(worker_class: str, tmp_path: Path) -> None:
    events = tmp_path / "events.txt"
    server = start_serve(tmp_path, "-k", worker_class, "--graceful-timeout", "5", events=events)
    try:
        server.start()
        with ExitStack() as stack:
            echo = ws(server, "/ws/echo/", stack)
            echo.send("héllo")
            assert echo.recv(timeout=5) == "héllo"
            echo.send(b"\x00\x01bin")
            assert echo.recv(timeout=5) == b"\x00\x01bin"

            alice, bob = ws(server, "/ws/room/a/", stack), ws(server, "/ws/room/a/", stack)
            assert alice.recv(timeout=5) == "joined"
            assert bob.recv(timeout=5) == "joined"
            alice.send("hi all")
            assert alice.recv(timeout=5) == "hi all"
            assert bob.recv(timeout=5) == "hi all"

            for route in ("/ws/deny/", "/ws/no-such-route/"):
                with pytest.raises(InvalidStatus) as refused:
                    connect(server.ws_url + route, open_timeout=5)
                assert refused.value.response.status_code == 403

            # An HTTP request in flight when the signal arrives is allowed to finish.
            slow: dict[str, Any] = {}

            def slow_request() -> None:
                try:
                    slow["response"] = httpx.get(server.url + "/slow/?seconds=1", timeout=10)
                except httpx.HTTPError as exc:
                    slow["error"] = exc

            thread = threading.Thread(target=slow_request)
            thread.start()
            threading.Event().wait(0.3)  # let the request reach the application

            server.signal(signal.SIGTERM)
            assert close_code(echo) == 1001
            assert close_code(alice) == 1001
            assert close_code(bob) == 1001
            thread.join(10)
            assert "error" not in slow, slow
            assert slow["response"].status_code == 200
            assert slow["response"].text == "slow done"
        assert server.wait(15) == 0, server.log()
        recorded = read_events(events)
        assert "disconnect echo 1001" in recorded
        assert recorded.count("disconnect room 1001 discarded") == 2
        log = server.log()
        assert "Lifespan" not in log, log
        assert "Traceback" not in log, log
        assert f"worker class {worker_class}" in log
        assert "channel layer channels_runtime.layers.InMemoryChannelLayer" in log
    finally:
        server.close()


@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
def test_sigint_closes_websockets_with_1001(worker_class: str, tmp_path: Path) -> None:
    events = tmp_path / "events.txt"
    server = start_serve(
        tmp_path, "-k", worker_class, "--access-log", events=events, E2E_RECORDING_LAYER="1"
    )
    try:
        server.start()
        with ExitStack() as stack:
            client = ws(server, "/ws/echo/", stack)
            client.send("ping")
            assert client.recv(timeout=5) == "ping"
            server.signal(signal.SIGINT)
            assert close_code(client) == 1001
        assert server.wait(15) == 0, server.log()
        # The consumer's disconnect ran, then lifespan shutdown closed the layer.
        assert read_events(events) == ["disconnect echo 1001", "layer closed"]
        assert '"GET /health/ 1.1" 200' in server.log()  # --access-log
    finally:
        server.close()


def test_second_signal_stops_at_once(tmp_path: Path) -> None:
    events = tmp_path / "events.txt"
    server = start_serve(tmp_path, "-k", "trio", "--graceful-timeout", "30", events=events)
    try:
        server.start()
        with connect(server.ws_url + "/ws/stubborn/", open_timeout=10) as client:
            server.signal(signal.SIGTERM)
            assert close_code(client) == 1001
        wait_until(lambda: "disconnect stubborn 1001" in read_events(events), 10)
        assert server.popen.poll() is None  # still waiting for the handler
        server.signal(signal.SIGTERM)
        assert server.wait(10) == 1, server.log()
        assert "SIGTERM again: stopping now" in server.log()
    finally:
        server.close()


def test_unix_and_inherited_socket_binds(tmp_path: Path) -> None:
    """``-b`` repeated, with ``unix:PATH`` and ``fd://N`` (a socket a process manager
    passes); ``--root-path`` mounts the app under a prefix the proxy forwards."""
    unix_path = tmp_path / "server.sock"
    inherited = socket.socket()
    inherited.bind(("127.0.0.1", 0))
    inherited.listen()
    port = inherited.getsockname()[1]
    server = Server(
        [
            *cli_command(),
            "serve",
            "tests.e2e_app.asgi",
            "-b",
            f"fd://{inherited.fileno()}",
            "-b",
            f"unix:{unix_path}",
            "--root-path",
            "/app",
        ],
        log_path=tmp_path / "server.log",
        env=base_env(),
        pass_fds=[inherited.fileno()],
    )
    inherited.close()  # the server holds its own copy now
    try:
        server.start(health_path="/app/health/")
        assert server.url == f"http://127.0.0.1:{port}"
        assert f"on http://127.0.0.1:{port}, unix:{unix_path} |" in server.log()
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(unix_path))) as client:
            response = client.get("http://localhost/app/health/", timeout=5)
        assert response.status_code == 200
        assert response.text.startswith("ok ")
        server.signal(signal.SIGTERM)
        assert server.wait(15) == 0, server.log()
    finally:
        server.close()


@pytest.mark.parametrize(
    "args", [["-k", "asyncio"], ["-k", "trio"], ["-k", "uvloop", "-w", "2"]], ids=str
)
def test_lifespan_startup_failure_exits_non_zero(args: list[str], tmp_path: Path) -> None:
    server = start_serve(tmp_path, *args, E2E_FAIL_STARTUP="1")
    try:
        status = server.wait(20)
        log = server.log()
        assert status == 1, log
        assert "startup refused on purpose" in log
    finally:
        server.close()


def test_bad_config_exits_with_status_2(tmp_path: Path) -> None:
    config = tmp_path / "hypercorn.toml"
    config.write_text('workerz = 4\nbind = ["127.0.0.1:0"]\n')
    server = start_serve(tmp_path, "-c", str(config))
    try:
        assert server.wait(15) == 2
        assert "unknown setting 'workerz' (did you mean 'workers'?)" in server.log()
    finally:
        server.close()


def _worker_pids(server: Server) -> list[int]:
    pids = []
    for pid in children_of(server.pid):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in cmdline:
            pids.append(pid)
    return pids


def test_two_workers_serve_and_stop_gracefully(tmp_path: Path) -> None:
    events = tmp_path / "events.txt"
    server = start_serve(tmp_path, "-k", "trio", "-w", "2", events=events)
    try:
        server.start()
        wait_until(lambda: len(_worker_pids(server)) == 2, 10, "two worker processes")
        workers = set(_worker_pids(server))
        seen = set()
        for _ in range(20):
            response = httpx.get(server.url + "/health/", timeout=5)
            seen.add(int(response.text.split()[1]))
        assert seen <= workers
        with ExitStack() as stack:
            clients = [ws(server, "/ws/echo/", stack) for _ in range(4)]
            for index, client in enumerate(clients):
                client.send(f"m{index}")
                assert client.recv(timeout=5) == f"m{index}"
            server.signal(signal.SIGTERM)
            assert [close_code(client) for client in clients] == [1001] * 4
        assert server.wait(15) == 0, server.log()
        assert read_events(events).count("disconnect echo 1001") == 4
        assert "The in-memory channel layer lives inside one process" in server.log()
    finally:
        server.close()


def test_crashed_worker_stops_the_server_with_its_status(tmp_path: Path) -> None:
    server = start_serve(tmp_path, "-k", "asyncio", "-w", "2")
    try:
        server.start()
        wait_until(lambda: len(_worker_pids(server)) == 2, 10, "two worker processes")
        victim, survivor = _worker_pids(server)
        os.kill(victim, signal.SIGKILL)
        status = server.wait(15)
        assert status == 128 + signal.SIGKILL, server.log()
        assert f"Worker {victim} exited with status 137" in server.log()
        wait_until(lambda: not Path(f"/proc/{survivor}").exists(), 10, "survivor stopped")
    finally:
        server.close()


@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
def test_plain_hypercorn_serves_the_project(worker_class: str, tmp_path: Path) -> None:
    """``hypercorn --config hypercorn.toml module:application``: lifespan, consumers, layer."""
    server = Server(
        [
            *hypercorn_command(),
            "--config",
            str(REPO / "hypercorn.toml"),
            "tests.e2e_app.asgi:application",
            "-b",
            "127.0.0.1:0",
            "-k",
            worker_class,
        ],
        log_path=tmp_path / "hypercorn.log",
        env=base_env(E2E_EVENTS_FILE=str(tmp_path / "events.txt"), E2E_RECORDING_LAYER="1"),
    )
    try:
        server.start()
        with ExitStack() as stack:
            echo = ws(server, "/ws/echo/", stack)
            echo.send(b"\xff")
            assert echo.recv(timeout=5) == b"\xff"
            alice, bob = ws(server, "/ws/room/b/", stack), ws(server, "/ws/room/b/", stack)
            assert alice.recv(timeout=5) == bob.recv(timeout=5) == "joined"
            bob.send("from bob")
            assert alice.recv(timeout=5) == "from bob"
            assert bob.recv(timeout=5) == "from bob"
        server.signal(signal.SIGTERM)
        assert server.wait(15) == 0, server.log()
        assert "Lifespan error" not in server.log()
        assert "Traceback" not in server.log()
        assert "layer closed" in read_events(tmp_path / "events.txt")  # lifespan shutdown
    finally:
        server.close()


def test_reload_restarts_the_worker_when_a_source_file_changes(tmp_path: Path) -> None:
    project = tmp_path / "reloadproj"
    project.mkdir()
    (project / "__init__.py").write_text("")
    (project / "settings.py").write_text(
        'SECRET_KEY = "x"\nINSTALLED_APPS = ["channels_runtime"]\nUSE_TZ = True\n'
    )
    (project / "asgi.py").write_text(
        "import django\ndjango.setup()\n"
        "from channels_runtime.routing import ProtocolTypeRouter\n"
        "from reloadproj.views import http\n"
        "application = ProtocolTypeRouter({'http': http})\n"
    )
    views = project / "views.py"
    views.write_text(
        "import os\nVERSION = 1\n"
        "async def http(scope, receive, send):\n"
        "    await receive()\n"
        "    await send({'type': 'http.response.start', 'status': 200, 'headers': []})\n"
        "    await send({'type': 'http.response.body', 'body': f'v{VERSION}'.encode()})\n"
    )
    server = Server(
        [*cli_command(), "serve", "reloadproj.asgi", "-b", "127.0.0.1:0", "--reload"],
        log_path=tmp_path / "server.log",
        env=base_env(),
        cwd=tmp_path,
    )
    try:
        server.start(health_path="/")
        assert httpx.get(server.url + "/", timeout=5).text == "v1"
        views.write_text(views.read_text().replace("VERSION = 1", "VERSION = 2"))
        os.utime(views, (views.stat().st_atime, views.stat().st_mtime + 5))

        def reloaded() -> bool:
            try:
                return httpx.get(server.url + "/", timeout=5).text == "v2"
            except httpx.HTTPError:
                return False

        wait_until(reloaded, 15, "the worker did not reload")
        assert "Reloading the workers" in server.log()
        server.signal(signal.SIGTERM)
        assert server.wait(15) == 0, server.log()
    finally:
        server.close()


# -- serve() embedded in an anyio program ---------------------------------------


class _Recorder(AsyncWebsocketConsumer):
    codes: list[int] = []  # shared on purpose: the test reads it

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        await self.send(text_data=text_data, bytes_data=bytes_data)

    async def disconnect(self, code: int) -> None:
        type(self).codes.append(code)


@pytest.mark.anyio
@pytest.mark.configures_logging  # Hypercorn's Config sets up hypercorn.error
async def test_embedded_serve_closes_websockets_with_1001(anyio_backend: Any) -> None:
    _Recorder.codes = []
    app = ProtocolTypeRouter({"websocket": URLRouter([path("ws/", _Recorder.as_asgi())])})
    config = Config.from_mapping(bind=["127.0.0.1:0"], graceful_timeout=5.0)
    stop = anyio.Event()

    def client(url: str) -> int | None:
        with connect(url + "/ws/", open_timeout=10, close_timeout=5) as conn:
            conn.send("one")
            assert conn.recv(timeout=5) == "one"
            anyio.from_thread.run_sync(stop.set)
            return close_code(conn)

    with anyio.fail_after(20):
        async with anyio.create_task_group() as group:
            urls = await group.start(partial(serve, app, config, shutdown_trigger=stop.wait))
            assert urls[0].startswith("http://127.0.0.1:")
            code = await anyio.to_thread.run_sync(client, "ws" + urls[0][4:])
    assert code == 1001
    assert _Recorder.codes == [1001]
    assert config.bind == ["127.0.0.1:0"]  # the caller's config is left alone


@pytest.mark.anyio
async def test_graceful_shutdown_refuses_websockets_once_closing(anyio_backend: Any) -> None:
    """A handshake that slips in after the close step started is refused (403)."""
    guard = GracefulShutdown(_Recorder.as_asgi())
    assert await guard.close_websockets(1.0) == 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await guard({"type": "websocket", "path": "/"}, receive, send)
    assert sent == [{"type": "websocket.close"}]


async def _refusing_lifespan(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await receive()
    await send({"type": "lifespan.startup.failed", "message": "not today"})


@pytest.mark.anyio
@pytest.mark.configures_logging  # Hypercorn's Config sets up hypercorn.error
async def test_embedded_serve_raises_the_startup_failure(anyio_backend: Any) -> None:
    from hypercorn.utils import LifespanFailureError

    app = ProtocolTypeRouter({"lifespan": _refusing_lifespan})
    config = Config.from_mapping(bind=["127.0.0.1:0", "127.0.0.1:0"])
    open_before = len(os.listdir("/proc/self/fd"))
    with anyio.fail_after(10), pytest.raises(LifespanFailureError, match="not today"):
        await serve(app, config, shutdown_trigger=anyio.sleep_forever)
    # The listening sockets bound for Hypercorn are closed, not leaked.
    assert len(os.listdir("/proc/self/fd")) == open_before


def test_embedded_serve_needs_a_trigger_off_the_main_thread() -> None:
    app = ProtocolTypeRouter({})
    config = Config.from_mapping(bind=["127.0.0.1:0"])
    failure: list[BaseException] = []

    def in_thread() -> None:
        try:
            anyio.run(serve, app, config)
        except RuntimeError as exc:
            failure.append(exc)

    thread = threading.Thread(target=in_thread)
    thread.start()
    thread.join(10)
    assert failure
    assert "pass a shutdown_trigger" in str(failure[0])
