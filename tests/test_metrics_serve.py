"""Prometheus metrics of real ``channels-runtime serve`` processes, scraped over HTTP.

``tests/metrics_app`` is served on asyncio, uvloop and trio, with one worker
(the server and the metrics bind in one process) and with two (a supervisor
answering scrapes for two worker processes, the channel layer on Redis so a
group spans both). Real WebSocket and HTTP clients do a known set of things;
the scrape, parsed with prometheus_client's own parser, must then show exactly
those counts, summed over the workers. With two workers, a reload (SIGHUP:
both workers replaced) must neither lose nor double-count anything, and a
worker killed with SIGKILL must keep its counts while its connections stop
being counted as open.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from e2e_app.harness import Server, base_env, children_of, cli_command
from prometheus_client.parser import text_string_to_metric_families
from test_metrics_docs import dashboard_metric_names
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from channels_runtime.metrics import core

WORKER_CLASSES = ["asyncio", "uvloop", "trio"]

#: Poll the scrape for this long for the values to arrive (workers publish every 0.5 s).
SETTLE = 15.0

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]

ECHO = "ws/echo/"
NESTED = "ws/nested/inner/<int:n>/"
ROOM = "ws/room/<str:name>/"
PID = "ws/pid/"
BOOM = "ws/boom/"
ITEMS = "items/<int:pk>/"


def key(name: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return name, tuple(sorted(labels.items()))


def scrape(metrics_url: str) -> tuple[Samples, list[Any]]:
    """Every sample of one scrape, parsed by prometheus_client, and the families."""
    response = httpx.get(metrics_url + "/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    families = list(text_string_to_metric_families(response.text))
    samples: Samples = {}
    for family in families:
        for sample in family.samples:
            samples[key(sample.name, **sample.labels)] = sample.value
    return samples, families


def settle(metrics_url: str, expected: Samples, timeout: float = SETTLE) -> Samples:
    """Scrape until every expected sample has its value (missing counts as 0)."""
    deadline = time.monotonic() + timeout
    while True:
        samples, _ = scrape(metrics_url)
        wrong = {
            k: (samples.get(k, 0.0), v) for k, v in expected.items() if samples.get(k, 0.0) != v
        }
        if not wrong:
            return samples
        if time.monotonic() > deadline:
            lines = "\n".join(
                f"  {k}: scraped {got}, expected {want}" for k, (got, want) in wrong.items()
            )
            raise AssertionError(f"metrics did not settle within {timeout}s:\n{lines}")
        time.sleep(0.1)


class MetricsServer(Server):
    metrics_url: str

    def start_metrics(self, timeout: float = 30.0) -> MetricsServer:
        """Wait for both binds, and for readiness (every worker serving)."""
        match = self.wait_for_log(r"(?:serving \S+ on) (http://127\.0\.0\.1:\d+)", timeout)
        self.url = match.group(1)
        self.metrics_url = self.wait_for_log(
            r"Metrics on (http://127\.0\.0\.1:\d+)/metrics", timeout
        ).group(1)
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(self.metrics_url + "/readyz", timeout=5).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if self.popen.poll() is not None:
                raise AssertionError(f"server exited ({self.popen.returncode}):\n{self.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"server not ready within {timeout}s:\n{self.log()}")
            time.sleep(0.1)


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    prefix = f"metrics-test-{uuid.uuid4().hex[:8]}"
    yield prefix
    from redis_server import redis_call

    keys = redis_call(6379, "KEYS", f"{prefix}*")
    if keys:
        redis_call(6379, "DEL", *keys)


def start(
    tmp_path: Path, worker_class: str, workers: int, *extra: str, **env: str
) -> MetricsServer:
    return MetricsServer(
        [
            *cli_command(),
            "serve",
            "tests.metrics_app.asgi",
            "-b",
            "127.0.0.1:0",
            "--metrics-bind",
            "127.0.0.1:0",
            "-k",
            worker_class,
            "-w",
            str(workers),
            *extra,
        ],
        log_path=tmp_path / "server.log",
        env=base_env(**env),
    )


def ws(server: Server, route: str, stack: ExitStack, **options: Any) -> ClientConnection:
    return stack.enter_context(
        connect(server.ws_url + "/" + route, open_timeout=10, close_timeout=5, **options)
    )


def refused(server: Server, route: str, **options: Any) -> int:
    with pytest.raises(InvalidStatus) as refusal:
        connect(server.ws_url + "/" + route, open_timeout=10, **options)
    return refusal.value.response.status_code


def closed_with(client: ClientConnection) -> int | None:
    try:
        while True:
            client.recv(timeout=10)
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd is not None else None


def run_scenario(server: MetricsServer) -> Samples:
    """Do a known set of things; return the samples they must produce."""
    with ExitStack() as stack:
        echo = ws(server, "ws/echo/", stack)
        for text in ("one", "two", "three"):
            echo.send(text)
            assert echo.recv(timeout=10) == text
        echo.close(code=4001)

        closing = ws(server, "ws/echo/", stack)
        closing.send("close 4321")
        assert closed_with(closing) == 4321

        nested = ws(server, "ws/nested/inner/7/", stack)
        nested.send("x")
        assert nested.recv(timeout=10) == "x"
        nested.close()

        members = [ws(server, "ws/room/r1/", stack) for _ in range(2)]
        for member in members:
            assert member.recv(timeout=10) == "joined"
        settle(
            server.metrics_url,
            {key("channels_runtime_connections_open", protocol="websocket", route=ROOM): 2},
        )
        members[0].send("hello")
        for member in members:
            assert member.recv(timeout=10) == "hello"
        for member in members:
            member.close()

        assert refused(server, "ws/deny/") == 403
        assert refused(server, "ws/origin/", origin="https://evil.example") == 403
        assert refused(server, "ws/auth/") == 403
        assert refused(server, "ws/nowhere/") == 403

        boom = ws(server, "ws/boom/", stack)
        boom.send("go")
        assert closed_with(boom) == 1011

    for path, status in (
        ("/items/5/", 200),
        ("/items/6/", 200),
        ("/missing/", 404),
        ("/fail/", 500),
    ):
        assert httpx.get(server.url + path, timeout=10).status_code == status

    c = "channels_runtime_"
    return {
        # connections
        key(c + "connections_opened_total", protocol="websocket", route=ECHO): 2,
        key(c + "connections_opened_total", protocol="websocket", route=NESTED): 1,
        key(c + "connections_opened_total", protocol="websocket", route=ROOM): 2,
        key(c + "connections_opened_total", protocol="websocket", route=BOOM): 1,
        key(c + "connections_closed_total", protocol="websocket", route=ECHO): 2,
        key(c + "connections_closed_total", protocol="websocket", route=NESTED): 1,
        key(c + "connections_closed_total", protocol="websocket", route=ROOM): 2,
        key(c + "connections_closed_total", protocol="websocket", route=BOOM): 1,
        key(c + "connections_open", protocol="websocket", route=ECHO): 0,
        key(c + "connections_open", protocol="websocket", route=ROOM): 0,
        key(c + "connections_opened_total", protocol="http", route=""): 4,
        key(c + "connections_closed_total", protocol="http", route=""): 4,
        key(c + "connections_open", protocol="http", route=""): 0,
        key(c + "websocket_closes_total", route=ECHO, code="4001"): 1,
        key(c + "websocket_closes_total", route=ECHO, code="4321"): 1,
        key(c + "websocket_closes_total", route=NESTED, code="1000"): 1,
        key(c + "websocket_closes_total", route=ROOM, code="1000"): 2,
        key(c + "websocket_closes_total", route=BOOM, code="1011"): 1,
        key(c + "handshakes_denied_total", reason="application"): 1,
        key(c + "handshakes_denied_total", reason="origin"): 1,
        key(c + "handshakes_denied_total", reason="auth"): 1,
        key(c + "handshakes_denied_total", reason="no_route"): 1,
        # consumers: echo 5 + 3, nested 3, room 2 x 2 + 1, denied 3 x 2, boom 2
        key(c + "consumer_messages_total", type="websocket"): 24,
        key(c + "consumer_messages_total", type="room"): 2,
        key(c + "consumer_handler_seconds_count", type="websocket"): 24,
        key(c + "consumer_handler_seconds_count", type="room"): 2,
        key(c + "consumer_exceptions_total", type="websocket", exception="ValueError"): 1,
        # outbound: data frames only (3 echoes, "x", 2 x "joined", 2 x "hello")
        key(c + "websocket_frames_sent_total", route=ECHO): 3,
        key(c + "websocket_frames_sent_total", route=NESTED): 1,
        key(c + "websocket_frames_sent_total", route=ROOM): 4,
        # the layer: one group_send reaching both members
        key(c + "layer_group_sends_total", layer="default"): 1,
        key(c + "layer_group_send_fanout_sum", layer="default"): 2,
        key(c + "layer_messages_received_total", layer="default"): 2,
        key(c + "layer_messages_sent_total", layer="default"): 0,
        # Django HTTP
        key(c + "http_requests_total", status="2xx", route=ITEMS): 2,
        key(c + "http_requests_total", status="4xx", route=""): 1,
        key(c + "http_requests_total", status="5xx", route="fail/"): 1,
        key(c + "http_request_duration_seconds_count", route=ITEMS): 2,
        key(c + "http_requests_in_progress"): 0,
    }


def check_exposition(server: MetricsServer, workers: int) -> None:
    """Every metric the runtime defines is exposed; process metrics per process."""
    samples, families = scrape(server.metrics_url)
    names = {family.name for family in families}
    for metric in core.REGISTRY.values():
        assert metric.name.removesuffix("_total") in names
    assert "process_resident_memory_bytes" in names
    # Everything the Grafana dashboard and the documented alert rules query is
    # in this scrape, as a sample or (nothing counted yet) as a family.
    exposed = {name for name, _ in samples} | {
        family.name + suffix
        for family in families
        for suffix in ("", "_total", "_bucket", "_count", "_sum")
    }
    assert dashboard_metric_names() <= exposed, dashboard_metric_names() - exposed
    resident = [labels for name, labels in samples if name == "process_resident_memory_bytes"]
    if workers == 1:
        assert resident == [()]
    else:
        roles = sorted(dict(labels)["role"] for labels in resident)
        assert roles == ["supervisor"] + ["worker"] * workers
        pids = {int(dict(labels)["pid"]) for labels in resident}
        assert pids == {server.pid, *workers_of(server)}


def workers_of(server: Server) -> set[int]:
    """The worker processes (not multiprocessing's resource tracker)."""

    def cmdline(pid: int) -> bytes:
        try:
            return Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return b""

    return {pid for pid in children_of(server.pid) if b"spawn_main" in cmdline(pid)}


def process_pids(samples: Samples) -> set[int]:
    return {
        int(dict(labels)["pid"])
        for (name, labels), _ in samples.items()
        if name == "process_resident_memory_bytes"
    }


@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
def test_one_worker_counts_what_clients_did(worker_class: str, tmp_path: Path) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    server = start(tmp_path, worker_class, 1, TMPDIR=str(temp))
    try:
        server.start_metrics()
        assert [p.name[:25] for p in temp.iterdir()] == ["channels-runtime-metrics-"]
        expected = run_scenario(server)
        samples = settle(server.metrics_url, expected)
        # Bytes on the wire for the echo route: three text frames ("one", "two",
        # "three": 2-byte header each), the server's answer to the client's 4001
        # close and its own 4321 close (2-byte header + 2-byte code each).
        sent = samples[key("channels_runtime_websocket_sent_bytes_total", route=ECHO)]
        assert sent == (2 + 3) + (2 + 3) + (2 + 5) + (2 + 2) + (2 + 2)
        check_exposition(server, 1)
        server.signal(signal.SIGTERM)
        assert server.wait() == 0
        assert not list(temp.iterdir()), "the metrics directory was left behind"
    finally:
        server.close()


@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
def test_two_workers_sum_survive_a_reload_and_a_sigkill(
    worker_class: str, tmp_path: Path, redis_prefix: str
) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    server = start(
        tmp_path,
        worker_class,
        2,
        "--graceful-timeout",
        "15",
        TMPDIR=str(temp),
        METRICS_REDIS_PREFIX=redis_prefix,
        METRICS_SLOW_DISCONNECT="3",
    )
    try:
        server.start_metrics()
        expected = run_scenario(server)
        settle(server.metrics_url, expected)
        check_exposition(server, 2)

        # A reload replaces both workers: their last counts are kept, once.
        before = workers_of(server)
        server.signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        while True:
            now = workers_of(server)
            if len(now) == 2 and not now & before:
                break
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.1)
        deadline = time.monotonic() + SETTLE
        while process_pids(scrape(server.metrics_url)[0]) != {server.pid, *now}:
            assert time.monotonic() < deadline, "the new workers' metrics did not appear"
            time.sleep(0.1)
        settle(server.metrics_url, expected)  # the old workers' counts, once

        # SIGKILL: the dead worker's counts stay, its connections stop counting as
        # open. The server then stops (a worker failed); its other worker holds the
        # shutdown open for METRICS_SLOW_DISCONNECT seconds, and meanwhile the
        # supervisor still answers scrapes.
        with ExitStack() as stack:
            served_by: dict[int, int] = dict.fromkeys(now, 0)
            clients = []
            while len(clients) < 6 or (min(served_by.values()) == 0 and len(clients) < 30):
                client = ws(server, "ws/pid/", stack)
                served_by[int(client.recv(timeout=10))] += 1
                clients.append(client)
            pid_open = key("channels_runtime_connections_open", protocol="websocket", route=PID)
            frames = key("channels_runtime_websocket_frames_sent_total", route=PID)
            # (Consumer messages are left out from here: the survivor's disconnect
            # handlers are still running when the scrapes below are made.)
            expected = {k: v for k, v in expected.items() if k[1] != (("type", "websocket"),)}
            expected[frames] = len(clients)
            settle(server.metrics_url, {**expected, pid_open: len(clients)})
            victim = min(served_by, key=lambda pid: served_by[pid])
            survivors = len(clients) - served_by[victim]
            os.kill(victim, signal.SIGKILL)
            server.wait_for_log(rf"Worker {victim} exited with status 137")
            c = "channels_runtime_"
            samples = settle(
                server.metrics_url,
                {
                    **expected,
                    pid_open: 0,
                    key(c + "connections_opened_total", protocol="websocket", route=PID): len(
                        clients
                    ),
                    key(c + "connections_closed_total", protocol="websocket", route=PID): (
                        survivors
                    ),
                    key(c + "websocket_closes_total", route=PID, code="1001"): survivors,
                },
            )
            assert victim not in process_pids(samples)
            assert server.wait(timeout=40) == 128 + signal.SIGKILL
        assert not list(temp.iterdir()), "the metrics directory was left behind"
    finally:
        server.close()


def test_a_bad_metrics_bind_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    from channels_runtime.cli import main

    assert main(["serve", "tests.metrics_app.asgi", "--metrics-bind", "9100"]) == 2
    assert "--metrics-bind: invalid value '9100'" in capsys.readouterr().err


def test_a_busy_metrics_port_stops_the_server(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        server = MetricsServer(
            [
                *cli_command(),
                "serve",
                "tests.metrics_app.asgi",
                "-b",
                "127.0.0.1:0",
                "--metrics-bind",
                f"127.0.0.1:{port}",
            ],
            log_path=tmp_path / "server.log",
            env=base_env(),
        )
        try:
            assert server.wait() == 1
            assert f"Cannot listen on 127.0.0.1:{port}" in server.log()
        finally:
            server.close()


@pytest.mark.configures_logging
def test_a_metrics_bind_without_prometheus_client_is_a_usage_error(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # sys.modules[name] = None is how Python spells "not installed" to find_spec.
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    # serve would put the settings it picks into os.environ; naming them here
    # lets monkeypatch take them out again afterwards.
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "tests.metrics_app.settings")
    from channels_runtime.cli import main

    assert main(["serve", "tests.metrics_app.asgi", "--metrics-bind", "127.0.0.1:0"]) == 2
    assert "metrics need the prometheus_client package" in caplog.text
    assert "pip install 'channels-runtime[metrics]'" in caplog.text
