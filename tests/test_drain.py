"""Draining deploys: after SIGTERM, not ready at once, still serving for ``drain_seconds``.

Real ``channels-runtime serve`` processes on asyncio, uvloop and trio, with one
worker and with two (then the supervisor drains and tells its workers), real
HTTP and WebSocket clients, real signals. ``drain_seconds`` is kept short so the
whole file runs in well under a minute.
"""

from __future__ import annotations

import signal
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
from e2e_app.harness import Server, base_env, cli_command, read_events
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

#: drain_seconds and graceful_timeout of these servers.
DRAIN = 1.5
GRACE = 1.0
#: What the shutdown after the drain may take on top of graceful_timeout: the
#: one-second disconnect grace, lifespan shutdown, the process exit (and for a
#: supervisor, its workers' exits).
SHUTDOWN_SLACK = 3.0


def start(tmp_path: Path, worker_class: str, workers: int, drain: float = DRAIN) -> Server:
    config = tmp_path / "hypercorn.toml"
    config.write_text(
        f'drain_seconds = {drain}\ngraceful_timeout = {GRACE}\nreadyz_path = "/readyz"\n'
    )
    server = Server(
        [
            *cli_command(),
            "serve",
            "tests.e2e_app.asgi",
            "-b",
            "127.0.0.1:0",
            "-k",
            worker_class,
            "-w",
            str(workers),
            "-c",
            str(config),
            "--metrics-bind",
            "127.0.0.1:0",
        ],
        log_path=tmp_path / "server.log",
        env=base_env(E2E_EVENTS_FILE=str(tmp_path / "events.txt")),
    )
    server.start()
    return server


def readyz_urls(server: Server) -> list[str]:
    metrics = server.wait_for_log(r"Metrics on (http://127\.0\.0\.1:\d+)/metrics").group(1)
    return [metrics + "/readyz", server.url + "/readyz"]


def status_of(url: str) -> int:
    return httpx.get(url, timeout=5).status_code


def wait_for(url: str, status: int, timeout: float) -> float:
    """Poll until ``url`` answers ``status``; return when it did (monotonic)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if status_of(url) == status:
                return time.monotonic()
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} did not answer {status} within {timeout}s")
        time.sleep(0.02)


def echo(client: ClientConnection, text: str) -> None:
    client.send(text)
    assert client.recv(timeout=5) == text


def close_code(client: ClientConnection, timeout: float) -> int | None:
    try:
        while True:
            client.recv(timeout=timeout)
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd is not None else None


@pytest.mark.parametrize(
    ("worker_class", "workers"),
    [("asyncio", 1), ("uvloop", 1), ("trio", 1), ("asyncio", 2), ("trio", 2)],
)
def test_sigterm_drains_then_shuts_down(worker_class: str, workers: int, tmp_path: Path) -> None:
    server = start(tmp_path, worker_class, workers)
    try:
        urls = readyz_urls(server)
        for url in urls:
            wait_for(url, 200, 20)
        with ExitStack() as stack:
            existing = stack.enter_context(connect(server.ws_url + "/ws/echo/", open_timeout=10))
            echo(existing, "before")

            server.signal(signal.SIGTERM)
            signalled = time.monotonic()
            for url in urls:  # at once: as soon as the process has handled the signal
                assert wait_for(url, 503, 1.0) - signalled < 1.0

            rounds = 0
            while time.monotonic() < signalled + DRAIN - 0.3:
                for url in urls:
                    assert status_of(url) == 503
                # New clients are still accepted and served, HTTP and WebSocket...
                response = httpx.get(server.url + "/health/", timeout=5)
                assert (response.status_code, response.text[:3]) == (200, "ok ")
                with connect(server.ws_url + "/ws/echo/", open_timeout=5) as newcomer:
                    echo(newcomer, f"new {rounds}")
                # ...and the connections already open keep working.
                echo(existing, f"still {rounds}")
                rounds += 1
                time.sleep(0.1)
            assert rounds >= 3, rounds

            # Then the usual shutdown: 1001 to open WebSockets, after the drain.
            assert close_code(existing, timeout=DRAIN + 5) == 1001
            assert time.monotonic() - signalled >= DRAIN - 0.1
        # Readiness stays 503 for as long as anything answers.
        while True:
            try:
                assert status_of(urls[0]) == 503
            except httpx.TransportError:
                break
            time.sleep(0.05)
        assert server.wait(DRAIN + GRACE + SHUTDOWN_SLACK + 5) == 0, server.log()
        elapsed = time.monotonic() - signalled
        assert elapsed < DRAIN + GRACE + SHUTDOWN_SLACK, (elapsed, server.log())
        log = server.log()
        assert f"Draining for {DRAIN:g}s (SIGTERM)" in log
        assert "Traceback" not in log, log
        assert "disconnect echo 1001" in read_events(tmp_path / "events.txt")
    finally:
        server.close()


@pytest.mark.parametrize(("worker_class", "workers"), [("trio", 1), ("asyncio", 2)])
def test_a_second_sigterm_ends_the_drain_at_once(
    worker_class: str, workers: int, tmp_path: Path
) -> None:
    server = start(tmp_path, worker_class, workers, drain=60.0)
    try:
        urls = readyz_urls(server)
        for url in urls:
            wait_for(url, 200, 20)
        with connect(server.ws_url + "/ws/echo/", open_timeout=10) as client:
            echo(client, "hello")
            server.signal(signal.SIGTERM)
            wait_for(urls[0], 503, 1.0)
            echo(client, "draining")
            server.signal(signal.SIGTERM)
            signalled = time.monotonic()
            # A forced stop: 1, as a second signal during the graceful shutdown gives.
            assert server.wait(10) == 1, server.log()
        assert time.monotonic() - signalled < 3.0
        assert "SIGTERM again" in server.log()
    finally:
        server.close()


def test_sigint_does_not_drain(tmp_path: Path) -> None:
    """Ctrl-C is a person at a terminal: straight to the graceful shutdown."""
    server = start(tmp_path, "asyncio", 1, drain=60.0)
    try:
        wait_for(readyz_urls(server)[0], 200, 20)
        with connect(server.ws_url + "/ws/echo/", open_timeout=10) as client:
            echo(client, "hello")
            server.signal(signal.SIGINT)
            signalled = time.monotonic()
            assert close_code(client, timeout=5) == 1001
        assert server.wait(GRACE + SHUTDOWN_SLACK + 5) == 0, server.log()
        assert time.monotonic() - signalled < GRACE + SHUTDOWN_SLACK
        assert "Draining" not in server.log()
    finally:
        server.close()
