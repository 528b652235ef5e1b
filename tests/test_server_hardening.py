"""Misbehaving clients against a real ``channels-runtime serve``, on every worker class.

Each test is one way a client (careless or hostile) can hurt a Hypercorn 0.18
server, and checks the fix in :mod:`channels_runtime.compat.hypercorn_fixes`:
what the client sees, what the consumer is told (``tests/e2e_app`` records
``disconnect <route> <code>`` lines), what the log says, and that the server
still serves the next client. Clients that must misbehave are raw sockets
(``tests/raw_websocket.py``). Where a test says "plain Hypercorn", the same
scenario runs with ``CHANNELS_RUNTIME_HYPERCORN_FIXES=0`` to show the defect
the fix is for is real.
"""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

import httpx
import pytest
from e2e_app.harness import (
    REPO,
    Server,
    base_env,
    cli_command,
    hypercorn_command,
    read_events,
    wait_until,
)
from raw_websocket import RawWebSocket, http_request
from websockets.sync.client import connect

from channels_runtime.compat.hypercorn_fixes import DISABLE_VARIABLE

WORKER_CLASSES = ["asyncio", "uvloop", "trio"]
APP = "tests.e2e_app.asgi:application"


def serve(
    tmp_path: Path, worker_class: str, config: str = "", *, fixes: bool = True, **env: str
) -> tuple[Server, Path]:
    """Start ``serve`` on a free port with ``config`` as its whole hypercorn.toml."""
    toml = tmp_path / "hypercorn.toml"
    toml.write_text(config)
    events = tmp_path / "events.txt"
    extra = {"E2E_EVENTS_FILE": str(events), **env}
    if not fixes:
        extra[DISABLE_VARIABLE] = "0"
    options = ["-k", worker_class, "-c", str(toml)]
    server = Server(
        [*cli_command(), "serve", "tests.e2e_app.asgi", "-b", "127.0.0.1:0", *options],
        log_path=tmp_path / "server.log",
        env=base_env(**extra),
    )
    return server, events


def healthy(server: Server) -> None:
    """A well-behaved client still gets served: HTTP and a WebSocket echo."""
    assert httpx.get(server.url + "/health/", timeout=5).status_code == 200
    with connect(server.ws_url + "/ws/echo/", open_timeout=5) as ws:
        ws.send("still alive")
        assert ws.recv(timeout=5) == "still alive"


def disconnects(events: Path) -> list[str]:
    return [line for line in read_events(events) if line.startswith("disconnect echo")]


@pytest.fixture(params=WORKER_CLASSES)
def worker_class(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# -- close codes ----------------------------------------------------------------


@pytest.mark.parametrize("code", [1000, 1001, 3000, 4001, 4321, None])
def test_disconnect_gets_the_clients_close_code(
    worker_class: str, code: int | None, tmp_path: Path
) -> None:
    server, events = serve(tmp_path, worker_class)
    try:
        server.start()
        with RawWebSocket(server.url, "/ws/echo/") as client:
            client.handshake()
            client.send_close(code)
            # A close without a code is answered without one (read as 1005).
            assert client.close_code() == (1005 if code is None else code)
        expected = 1005 if code is None else code
        wait_until(lambda: disconnects(events), 10, "disconnect() never ran")
        assert disconnects(events) == [f"disconnect echo {expected}"]
    finally:
        server.close()


def test_plain_hypercorn_reports_1006_for_every_client_close(tmp_path: Path) -> None:
    server, events = serve(tmp_path, "asyncio", fixes=False)
    try:
        server.start()
        with RawWebSocket(server.url, "/ws/echo/") as client:
            client.handshake()
            client.send_close(4001)
            client.close_code()
        wait_until(lambda: disconnects(events), 10)
        assert disconnects(events) == ["disconnect echo 1006"]
    finally:
        server.close()


def test_a_lost_connection_is_1006(worker_class: str, tmp_path: Path) -> None:
    server, events = serve(tmp_path, worker_class)
    try:
        server.start()
        client = RawWebSocket(server.url, "/ws/echo/")
        client.handshake()
        client.reset()
        wait_until(lambda: disconnects(events), 10, "disconnect() never ran")
        assert disconnects(events) == ["disconnect echo 1006"]
    finally:
        server.close()


# -- a client that stops reading ---------------------------------------------------


def _stall(client: RawWebSocket) -> None:
    """Make the echo consumer block in send() and Hypercorn stop reading.

    The client sends frames that are echoed back to it and never reads them,
    until the server's socket buffers are full and the consumer blocks in
    send(); the frames after that fill the application's queue, and then
    Hypercorn stops reading, so the client's own send blocks (times out).
    """
    client.sock.settimeout(1)
    try:
        for _ in range(1000):  # at most 64 MiB
            client.send_bytes(b"x" * 65536)
    except (TimeoutError, ConnectionError):  # blocked, or already cut off as too slow
        return
    raise AssertionError("the server never stopped reading")


def _stalled_clients_reset(server: Server, events: Path, clients: int) -> None:
    """``clients`` stall their consumers, then reset: every one must reach disconnect()."""
    server.start()
    for _ in range(clients):
        client = RawWebSocket(server.url, "/ws/echo/", receive_buffer=4096)
        client.handshake()
        _stall(client)
        client.reset()
    wait_until(lambda: len(disconnects(events)) == clients, 15, "disconnect() never ran")
    assert disconnects(events) == ["disconnect echo 1006"] * clients
    healthy(server)


def test_reset_after_stalling_still_reaches_disconnect(worker_class: str, tmp_path: Path) -> None:
    server, events = serve(tmp_path, worker_class)
    try:
        _stalled_clients_reset(server, events, 3)
    finally:
        server.close()


def test_plain_hypercorn_never_tells_the_consumer(tmp_path: Path) -> None:
    server, events = serve(tmp_path, "asyncio", fixes=False)
    try:
        server.start()
        client = RawWebSocket(server.url, "/ws/echo/", receive_buffer=4096)
        client.handshake()
        _stall(client)
        client.reset()
        time.sleep(3)
        assert disconnects(events) == []
    finally:
        server.close()


def test_a_client_that_stops_reading_is_closed_after_write_timeout(
    worker_class: str, tmp_path: Path
) -> None:
    server, events = serve(tmp_path, worker_class, "write_timeout = 1.0\n")
    try:
        server.start()
        with RawWebSocket(server.url, "/ws/echo/", receive_buffer=4096) as client:
            client.handshake()
            started = time.monotonic()
            _stall(client)
            wait_until(lambda: disconnects(events), 10, "the slow client was never closed")
            assert time.monotonic() - started < 6
        assert disconnects(events) == ["disconnect echo 1013"]
        log = server.log()
        assert log.count("it has not read for 1s (write_timeout)") == 1, log
        healthy(server)
    finally:
        server.close()


def test_sigterm_with_a_stalled_client_exits_within_graceful_timeout(
    worker_class: str, tmp_path: Path
) -> None:
    server, events = serve(tmp_path, worker_class, "graceful_timeout = 1.0\n")
    try:
        server.start()
        with RawWebSocket(server.url, "/ws/echo/", receive_buffer=4096) as client:
            client.handshake()
            _stall(client)
            started = time.monotonic()
            server.signal(signal.SIGTERM)
            assert server.wait(timeout=15) == 0, server.log()
            elapsed = time.monotonic() - started
        assert elapsed < 1.0 + 3.0, f"took {elapsed:.1f}s:\n{server.log()}"
        assert disconnects(events) == ["disconnect echo 1001"], server.log()
        log = server.log()
        assert "Server stopped" in log
        assert "Traceback" not in log, log
    finally:
        server.close()


def test_two_workers_stop_in_time_with_a_stalled_client(tmp_path: Path) -> None:
    server, _ = serve(tmp_path, "asyncio", "graceful_timeout = 1.0\nworkers = 2\n")
    try:
        server.start()
        with RawWebSocket(server.url, "/ws/echo/", receive_buffer=4096) as client:
            client.handshake()
            _stall(client)
            started = time.monotonic()
            server.signal(signal.SIGTERM)
            assert server.wait(timeout=20) == 0, server.log()
            assert time.monotonic() - started < 6, server.log()
        assert "did not stop in time" not in server.log()
    finally:
        server.close()


# -- handshakes and frames that are not WebSocket ------------------------------------


_UPGRADE = (
    b"GET /ws/echo/ HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n"
)


def test_bytes_after_the_upgrade_request_get_400_and_the_worker_lives(
    worker_class: str, tmp_path: Path
) -> None:
    server, _ = serve(tmp_path, worker_class)
    try:
        server.start()
        for _ in range(3):
            answer = http_request(server.url, _UPGRADE + b"GARBAGE")
            assert answer.startswith(b"HTTP/1.1 400"), answer
        healthy(server)
        assert server.popen.poll() is None
        assert "LocalProtocolError" not in server.log()
    finally:
        server.close()


def test_plain_hypercorn_trio_dies_of_bytes_after_the_upgrade(tmp_path: Path) -> None:
    server, _ = serve(tmp_path, "trio", fixes=False)
    try:
        server.start()
        http_request(server.url, _UPGRADE + b"GARBAGE")
        wait_until(lambda: server.popen.poll() is not None, 10, "the trio worker survived")
        assert "LocalProtocolError" in server.log()
    finally:
        server.close()


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (RawWebSocket.frame(0x3, b"reserved opcode"), 1002),
        (RawWebSocket.frame(0x1, b"unmasked", masked=False), 1002),
        (RawWebSocket.frame(0x1, b"\xff\xfe not utf-8"), 1007),
    ],
    ids=["reserved-opcode", "unmasked", "invalid-utf8"],
)
def test_bad_frames_get_a_close_frame_with_the_right_code(
    worker_class: str, frame: bytes, code: int, tmp_path: Path
) -> None:
    server, events = serve(tmp_path, worker_class)
    try:
        server.start()
        with RawWebSocket(server.url, "/ws/echo/") as client:
            client.handshake()
            client.send_raw(frame)
            assert client.close_code() == code
        wait_until(lambda: disconnects(events), 10)
        assert disconnects(events) == [f"disconnect echo {code}"]
        assert server.log().count("WebSocket protocol error from") == 1
        healthy(server)
    finally:
        server.close()


def test_serve_defaults_limit_messages_to_one_mebibyte(worker_class: str, tmp_path: Path) -> None:
    events = tmp_path / "events.txt"
    # No config file at all: serve's own defaults, not Hypercorn's 16 MiB.
    server = Server(
        [*cli_command(), "serve", "tests.e2e_app.asgi", "-b", "127.0.0.1:0", "-k", worker_class],
        log_path=tmp_path / "server.log",
        env=base_env(E2E_EVENTS_FILE=str(events)),
        cwd=tmp_path,
    )
    try:
        server.start()
        with RawWebSocket(server.url, "/ws/echo/") as client:
            client.handshake()
            client.send_bytes(b"x" * 1024 * 1024)  # exactly the limit: echoed
            client.sock.settimeout(10)
            client.send_bytes(b"y" * (1024 * 1024 + 1))
            assert client.close_code() == 1009
        wait_until(lambda: disconnects(events), 10)
        assert disconnects(events) == ["disconnect echo 1009"]
        healthy(server)
    finally:
        server.close()


# -- keepalive ------------------------------------------------------------------------


def test_a_silent_peer_is_dropped_by_keepalive(worker_class: str, tmp_path: Path) -> None:
    server, events = serve(
        tmp_path, worker_class, "websocket_ping_interval = 0.3\nwebsocket_ping_timeout = 0.5\n"
    )
    try:
        server.start()
        with connect(server.ws_url + "/ws/echo/", open_timeout=5) as answering:
            silent = RawWebSocket(server.url, "/ws/echo/")
            silent.handshake()  # and then never reads nor answers a ping
            started = time.monotonic()
            wait_until(lambda: disconnects(events), 10, "the silent peer was never dropped")
            assert time.monotonic() - started < 3
            assert disconnects(events) == ["disconnect echo 1006"]
            time.sleep(1.0)  # several ping rounds: the answering client stays
            answering.send("ping rounds passed")
            assert answering.recv(timeout=5) == "ping rounds passed"
            silent.close()
        assert server.log().count("did not answer a ping") == 1
    finally:
        server.close()


def test_shutdown_with_pings_on_is_not_delayed(worker_class: str, tmp_path: Path) -> None:
    server, events = serve(tmp_path, worker_class, "websocket_ping_interval = 20.0\n")
    try:
        server.start()
        with connect(server.ws_url + "/ws/echo/", open_timeout=5) as ws:
            ws.send("hello")
            ws.recv(timeout=5)
            started = time.monotonic()
            server.signal(signal.SIGTERM)
            assert server.wait(timeout=15) == 0
            assert time.monotonic() - started < 2.0, server.log()
        assert disconnects(events) == ["disconnect echo 1001"]
        assert "Traceback" not in server.log()
    finally:
        server.close()


# -- permessage-deflate ------------------------------------------------------------------


@pytest.mark.parametrize(("setting", "negotiated"), [("", False), ("true", True), ("false", False)])
def test_permessage_deflate_switch(
    worker_class: str, setting: str, negotiated: bool, tmp_path: Path
) -> None:
    config = f"websocket_permessage_deflate = {setting}\n" if setting else ""
    server, _ = serve(tmp_path, worker_class, config)
    try:
        server.start()
        with RawWebSocket(server.url, "/ws/echo/", deflate=True) as client:
            client.handshake()
            assert ("permessage-deflate" in client.accepted_extensions) is negotiated
            client.send_text("compressed or not")
            echoed = [e for e in client.events(5) if hasattr(e, "data")]
            assert [event.data for event in echoed[:1]] == ["compressed or not"]
    finally:
        server.close()


# -- plain Hypercorn ------------------------------------------------------------------


@pytest.mark.parametrize("hypercorn_worker", WORKER_CLASSES)
def test_plain_hypercorn_gets_the_fixes_at_lifespan_startup(
    hypercorn_worker: str, tmp_path: Path
) -> None:
    """``hypercorn --config hypercorn.toml``: ProtocolTypeRouter installs the fixes."""
    events = tmp_path / "events.txt"
    config = ["--config", str(REPO / "hypercorn.toml"), "-k", hypercorn_worker]
    server = Server(
        [*hypercorn_command(), *config, "tests.e2e_app.asgi:application", "-b", "127.0.0.1:0"],
        log_path=tmp_path / "hypercorn.log",
        env=base_env(E2E_EVENTS_FILE=str(events)),
    )
    try:
        server.start()
        with RawWebSocket(server.url, "/ws/echo/") as client:
            client.handshake()
            client.send_close(4001)
            assert client.close_code() == 4001
        wait_until(lambda: disconnects(events), 10)
        assert disconnects(events) == ["disconnect echo 4001"]
        answer = http_request(server.url, _UPGRADE + b"GARBAGE")
        assert answer.startswith(b"HTTP/1.1 400"), answer
        healthy(server)
        server.signal(signal.SIGTERM)
        assert server.wait(15) == 0, server.log()
        assert "Traceback" not in server.log()
    finally:
        server.close()


def test_second_sigterm_with_a_stalled_client_stops_at_once(
    worker_class: str, tmp_path: Path
) -> None:
    server, events = serve(tmp_path, worker_class, "graceful_timeout = 30.0\n")
    try:
        server.start()
        with (
            RawWebSocket(server.url, "/ws/echo/", receive_buffer=4096) as client,
            connect(server.ws_url + "/ws/stubborn/", open_timeout=5),
        ):
            client.handshake()
            _stall(client)
            server.signal(signal.SIGTERM)
            # The stubborn consumer's disconnect handler takes a minute.
            wait_until(lambda: "disconnect stubborn 1001" in read_events(events), 10)
            started = time.monotonic()
            server.signal(signal.SIGTERM)
            assert server.wait(timeout=10) == 1, server.log()
            assert time.monotonic() - started < 3, server.log()
        log = server.log()
        assert "again: stopping now" in log
        assert "Traceback" not in log, log
    finally:
        server.close()


def test_half_closed_client_reaches_disconnect(worker_class: str, tmp_path: Path) -> None:
    server, events = serve(tmp_path, worker_class)
    try:
        server.start()
        with RawWebSocket(server.url, "/ws/echo/") as client:
            client.handshake()
            client.sock.shutdown(socket.SHUT_WR)  # FIN, but still reading
            wait_until(lambda: disconnects(events), 10, "disconnect() never ran")
        assert disconnects(events) == ["disconnect echo 1006"]
        healthy(server)
    finally:
        server.close()


def test_reset_clients_reach_disconnect_with_two_workers(tmp_path: Path) -> None:
    server, events = serve(tmp_path, "trio", "workers = 2\n")
    try:
        _stalled_clients_reset(server, events, 4)
    finally:
        server.close()


def test_an_http_client_that_stops_reading_is_cut_off(worker_class: str, tmp_path: Path) -> None:
    server, events = serve(tmp_path, worker_class, "write_timeout = 1.0\n")
    try:
        server.start()
        client = socket.socket()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.connect(("127.0.0.1", int(server.url.rsplit(":", 1)[1])))
        with client:
            client.sendall(b"GET /download/?mib=64 HTTP/1.1\r\nHost: localhost\r\n\r\n")
            wait_until(lambda: "download disconnect" in read_events(events), 10, "never cut off")
        assert server.log().count("(write_timeout)") == 1
        healthy(server)
    finally:
        server.close()


def test_plain_hypercorn_shutdown_with_a_stalled_client_is_bounded(tmp_path: Path) -> None:
    toml = tmp_path / "hypercorn.toml"
    toml.write_text("graceful_timeout = 1.0\nwrite_timeout = 1.0\n")
    server = Server(
        [*hypercorn_command(), "--config", str(toml), "-k", "trio", "-b", "127.0.0.1:0", APP],
        log_path=tmp_path / "hypercorn.log",
        env=base_env(),
    )
    try:
        server.start()
        with RawWebSocket(server.url, "/ws/echo/", receive_buffer=4096) as client:
            client.handshake()
            _stall(client)
            started = time.monotonic()
            server.signal(signal.SIGTERM)
            assert server.wait(timeout=20) == 0, server.log()
            assert time.monotonic() - started < 1.0 + 1.0 + 3.0, server.log()
    finally:
        server.close()
