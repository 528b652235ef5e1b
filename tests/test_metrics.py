"""Metrics without a server: the plain-number metrics, publishing, summing, the HTTP bind.

The pieces of ``channels_runtime.metrics`` are checked here with real files,
real worker processes (subprocesses that count and publish, then exit), real
sockets, real channel layers (in-memory, and both Redis layers on a private
``redis-server``) and real consumers; ``tests/test_metrics_serve.py`` checks
the whole under ``channels-runtime serve``.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from django.test import override_settings
from hypercorn.config import Config
from prometheus_client.parser import text_string_to_metric_families
from redis_server import RedisServer

from channels_runtime import metrics
from channels_runtime.exceptions import ChannelFull, StopConsumer
from channels_runtime.generic.websocket import AsyncWebsocketConsumer
from channels_runtime.layers import InMemoryChannelLayer
from channels_runtime.layers.redis import RedisChannelLayer, RedisPubSubChannelLayer
from channels_runtime.metrics import catalog, core, layers
from channels_runtime.metrics.aggregate import Aggregator
from channels_runtime.metrics.exposition import MetricsServer, Request, Response, parse_bind
from channels_runtime.metrics.publish import FLUSH_INTERVAL, Publisher, serve_publishing
from channels_runtime.metrics.serving import PREFIX, metrics_bind, sweep_stale_directories
from channels_runtime.server.config import ConfigError, check_setting
from channels_runtime.testing import WebsocketCommunicator

ROOT = Path(__file__).resolve().parent.parent

assert catalog  # every metric defined, as in the process that answers scrapes


@pytest.fixture
def counting() -> Iterator[None]:
    """Metrics on in this process, from zero; off and zero again afterwards."""
    core.clear_all()
    metrics.enable()
    try:
        yield
    finally:
        metrics.disable()
        core.clear_all()


@pytest.fixture
def scratch_metrics() -> Iterator[list[str]]:
    """Names of metrics a test defines, removed from the registry afterwards."""
    names: list[str] = []
    yield names
    for name in names:
        core.REGISTRY.pop(name, None)


def value(metric: core.Metric, *labels: str) -> Any:
    return dict((tuple(k), v) for k, v in metric.copy_values()).get(tuple(labels), 0)


# -- the plain-number metrics ---------------------------------------------------------


def test_metric_names_follow_prometheus_conventions(scratch_metrics: list[str]) -> None:
    with pytest.raises(ValueError, match="must start with 'channels_runtime_'"):
        core.Gauge("other_thing", "x")
    with pytest.raises(ValueError, match="must end with '_total'"):
        core.Counter("channels_runtime_things", "x")
    scratch_metrics.append("channels_runtime_test_once_total")
    core.Counter("channels_runtime_test_once_total", "x")
    with pytest.raises(ValueError, match="defined twice"):
        core.Counter("channels_runtime_test_once_total", "x")
    with pytest.raises(ValueError, match="buckets must increase"):
        core.Histogram("channels_runtime_test_bad", "x", buckets=(1.0, 0.5))
    for name, metric in core.REGISTRY.items():
        if name in scratch_metrics:
            continue
        assert metric.name.startswith("channels_runtime_")
        assert metric.documentation.endswith(".")
        assert not {"path", "channel", "group"} & set(metric.labels)


def test_histogram_buckets_include_their_upper_bound(scratch_metrics: list[str]) -> None:
    scratch_metrics.append("channels_runtime_test_seconds")
    histogram = core.Histogram("channels_runtime_test_seconds", "x", ("k",), buckets=(1.0, 2.0))
    for observed in (0.5, 1.0, 1.5, 2.0, 7.0):
        histogram.observe(("a",), observed)
    (labels, cells), = histogram.copy_values()  # fmt: skip
    assert labels == ["a"]
    assert cells == [2, 2, 1, 12.0]  # <=1, <=2, +Inf, sum


def test_gauge_adds_what_collect_reports(scratch_metrics: list[str]) -> None:
    scratch_metrics.append("channels_runtime_test_held")
    held = core.Gauge(
        "channels_runtime_test_held", "x", ("where",), collect=lambda: [(("a",), 2), (("a",), 3)]
    )
    assert held.copy_values() == [[["a"], 5]]


def test_bounded_label_stops_at_its_limit() -> None:
    label = core.BoundedLabel(lambda raw: raw.partition(".")[0], limit=3)
    assert [label(f"user_{n}.update") for n in range(5)] == [
        "user_0",
        "user_1",
        "user_2",
        "other",
        "other",
    ]
    assert label("user_1.delete") == "user_1"  # a family already seen keeps its label


def test_type_family_is_the_type_up_to_its_first_dot() -> None:
    family = metrics.consumers.type_family
    assert family("websocket.receive") == "websocket"
    assert family("chat.message.sent") == "chat"
    assert family(".odd") == "other"


# -- publishing and summing: real worker processes -------------------------------------

WORKER = textwrap.dedent(
    """
    import sys
    from channels_runtime import metrics
    from channels_runtime.metrics import catalog, connections, consumers
    from channels_runtime.metrics.publish import Publisher

    directory, opened, still_open, *seconds = sys.argv[1:]
    metrics.enable()
    for _ in range(int(opened)):
        connections.OPENED.inc(("websocket", "ws/chat/"))
    connections.OPEN.inc(("websocket", "ws/chat/"), int(still_open))
    for observed in seconds:
        consumers.DURATION.observe(("chat",), float(observed))
    assert Publisher(directory, include_process=True).flush()
    print(__import__("os").getpid())
    """
)


def run_worker(directory: Path, opened: int, still_open: int, *seconds: float) -> int:
    """A worker process that counts, publishes and exits; returns its pid."""
    done = subprocess.run(
        [sys.executable, "-c", WORKER, str(directory), str(opened), str(still_open)]
        + [str(s) for s in seconds],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        timeout=60,
    )
    return int(done.stdout)


def parse(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    samples = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            samples[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return samples


CHAT = (("protocol", "websocket"), ("route", "ws/chat/"))


def test_scrape_sums_workers_and_keeps_a_dead_one_counts_once(tmp_path: Path) -> None:
    first = run_worker(tmp_path, 3, 2, 0.0001, 0.3)
    second = run_worker(tmp_path, 1, 1, 20.0)
    aggregator = Aggregator(tmp_path, supervised=True)
    samples = parse(aggregator.render())
    assert samples["channels_runtime_connections_opened_total", CHAT] == 4
    assert samples["channels_runtime_connections_open", CHAT] == 3
    chat = (("type", "chat"),)
    assert samples["channels_runtime_consumer_handler_seconds_count", chat] == 3
    assert samples["channels_runtime_consumer_messages_total", chat] == 3
    assert samples["channels_runtime_consumer_handler_seconds_sum", chat] == pytest.approx(20.3001)
    buckets = {
        dict(labels)["le"]: v
        for (name, labels), v in samples.items()
        if name == "channels_runtime_consumer_handler_seconds_bucket"
    }
    assert (buckets["0.0001"], buckets["0.5"], buckets["10.0"], buckets["+Inf"]) == (1, 2, 2, 3)
    # Each worker's process metrics, labelled; and the supervisor's own.
    pids = {
        dict(labels)["pid"]: dict(labels)["role"]
        for (name, labels) in samples
        if name == "process_resident_memory_bytes"
    }
    assert pids == {str(first): "worker", str(second): "worker", str(os.getpid()): "supervisor"}

    aggregator.retire(first)
    assert not (tmp_path / f"{first}.json").exists()
    for _ in range(2):  # retiring twice, or scraping twice, counts nothing twice
        samples = parse(aggregator.render())
        assert samples["channels_runtime_connections_opened_total", CHAT] == 4
        assert samples["channels_runtime_connections_open", CHAT] == 1  # its gauge is gone
        assert samples["channels_runtime_consumer_handler_seconds_count", chat] == 3
        aggregator.retire(first)
    assert str(first) not in {
        dict(labels).get("pid") for (name, labels) in samples if name.startswith("process_")
    }

    # A replacement starts from zero; the totals go on from where they were.
    run_worker(tmp_path, 2, 2)
    samples = parse(aggregator.render())
    assert samples["channels_runtime_connections_opened_total", CHAT] == 6
    assert samples["channels_runtime_connections_open", CHAT] == 3


def test_one_worker_exposes_its_process_metrics_unlabelled(tmp_path: Path) -> None:
    samples = parse(Aggregator(tmp_path, supervised=False).render())
    assert ("process_resident_memory_bytes", ()) in samples
    assert ("python_gc_collections_total", (("generation", "0"),)) in samples
    # Unlabelled metrics show their one series from the start.
    assert samples["channels_runtime_http_requests_in_progress", ()] == 0
    assert samples["channels_runtime_consumer_turn_wait_seconds_count", ()] == 0


def test_an_unreadable_file_is_skipped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run_worker(tmp_path, 1, 0)
    (tmp_path / "999999.json").write_text("{not json")
    samples = parse(Aggregator(tmp_path, supervised=True).render())
    assert samples["channels_runtime_connections_opened_total", CHAT] == 1
    assert "Ignoring unreadable metrics file" in caplog.text


@pytest.mark.anyio
async def test_serve_publishing_flushes_beside_the_server_and_once_after(
    tmp_path: Path, counting: None
) -> None:
    metrics.disable()
    publisher = Publisher(tmp_path, include_process=False)

    async def serve() -> str:
        assert metrics.enabled  # turned on before the server starts
        metrics.connections.OPENED.inc(("websocket", "r"))
        with anyio.fail_after(5):
            while not publisher.path.exists():  # noqa: ASYNC110 (a file, not a task)
                await anyio.sleep(0.05)
        first = json.loads(publisher.path.read_text())
        assert first["metrics"]["channels_runtime_connections_opened_total"] == [
            [["websocket", "r"], 1]
        ]
        metrics.connections.OPENED.inc(("websocket", "r"))
        return "result"

    started = time.monotonic()
    assert await serve_publishing(publisher, serve) == "result"
    assert time.monotonic() - started >= FLUSH_INTERVAL * 0.9
    last = json.loads(publisher.path.read_text())  # written after serve() returned
    assert last["pid"] == os.getpid()
    assert last["metrics"]["channels_runtime_connections_opened_total"] == [[["websocket", "r"], 2]]


@pytest.mark.anyio
async def test_serve_publishing_raises_the_servers_own_exception(
    tmp_path: Path, counting: None
) -> None:
    publisher = Publisher(tmp_path, include_process=False)

    async def serve() -> None:
        raise LookupError("startup failed")

    with pytest.raises(LookupError, match="startup failed"):
        await serve_publishing(publisher, serve)
    assert publisher.path.exists()  # the last flush still happened


def test_directories_of_dead_runs_are_swept(tmp_path: Path) -> None:
    dead = tmp_path / f"{PREFIX}999999999-x1"  # beyond any pid_max: no such process
    alive = tmp_path / f"{PREFIX}{os.getpid()}-x2"
    other = tmp_path / f"{PREFIX}abc"
    for directory in (dead, alive, other):
        directory.mkdir()
        (directory / "1.json").write_text("{}")
    assert sweep_stale_directories(tmp_path) == [dead]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([alive.name, other.name])


def test_a_failing_flush_is_logged_once_and_never_raises(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    gone = tmp_path / "gone"
    gone.mkdir()
    publisher = Publisher(gone, include_process=False)
    gone.rmdir()
    with caplog.at_level(logging.WARNING, "channels_runtime.metrics"):
        assert publisher.flush() is False
        assert publisher.flush() is False
    assert caplog.text.count("Cannot publish metrics") == 1
    gone.mkdir()
    assert publisher.flush() is True


# -- the metrics bind ---------------------------------------------------------------------


def test_parse_bind() -> None:
    assert parse_bind("127.0.0.1:9100") == ("127.0.0.1", 9100)
    assert parse_bind("[::1]:0") == ("::1", 0)
    for bad in ("9100", "127.0.0.1", ":9100", "::1:9100", "host:99999", "unix:/x"):
        with pytest.raises(ValueError):
            parse_bind(bad)


def test_metrics_bind_setting_is_checked() -> None:
    assert check_setting("metrics_bind", "0.0.0.0:9100", source="hypercorn.toml") == "0.0.0.0:9100"
    with pytest.raises(ConfigError, match=r"--metrics-bind: invalid value 'localhost'"):
        check_setting("metrics_bind", "localhost", source="--metrics-bind")
    with pytest.raises(ConfigError, match="expected a string"):
        check_setting("metrics_bind", 9100, source="hypercorn.toml")


def test_the_server_setting_wins_over_the_django_setting() -> None:
    assert metrics_bind(Config()) is None
    with override_settings(CHANNELS_RUNTIME_METRICS_BIND="127.0.0.1:9300"):
        assert metrics_bind(Config()) == "127.0.0.1:9300"
        config = Config()
        config.metrics_bind = "127.0.0.1:9200"  # type: ignore[attr-defined]
        assert metrics_bind(config) == "127.0.0.1:9200"
    with (
        override_settings(CHANNELS_RUNTIME_METRICS_BIND="nowhere"),
        pytest.raises(ConfigError, match=r"settings\.CHANNELS_RUNTIME_METRICS_BIND"),
    ):
        metrics_bind(Config())


def test_metrics_server_routes(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[Request] = []

    def hello(request: Request) -> Response:
        seen.append(request)
        return Response(200, b"hello\n", headers=(("X-Extra", "1"),))

    def broken(request: Request) -> Response:
        raise RuntimeError("handler bug")

    server = MetricsServer("127.0.0.1:0", {"/hello": hello})
    with server:
        assert server.running
        assert server.url == f"http://127.0.0.1:{server.address[1]}"
        with httpx.Client(base_url=server.url, timeout=5) as client:
            response = client.get("/hello?x=1", headers={"X-Probe": "yes"})
            assert (response.status_code, response.text) == (200, "hello\n")
            assert response.headers["x-extra"] == "1"
            assert (seen[0].method, seen[0].path, seen[0].query) == ("GET", "/hello", "x=1")
            assert seen[0].headers["X-Probe"] == "yes"
            head = client.head("/hello")
            assert (head.status_code, head.content, head.headers["content-length"]) == (
                200,
                b"",
                "6",
            )
            assert client.get("/hello/").status_code == 404
            assert client.post("/hello").status_code == 405
            server.add_route("/broken", broken)  # after start
            assert client.get("/broken").status_code == 500
            server.add_route("/hello", lambda request: Response(204))  # replaced
            assert client.get("/hello").status_code == 204
        assert "handler bug" in caplog.text
        with pytest.raises(RuntimeError, match="already started"):
            server.start()
        with pytest.raises(ValueError, match="must start with '/'"):
            server.add_route("nope", hello)
        port = server.address[1]
    assert not server.running
    server.stop()  # idempotent
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/hello", timeout=2)


def test_metrics_server_reports_a_busy_port() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        server = MetricsServer(f"127.0.0.1:{busy.getsockname()[1]}")
        with pytest.raises(OSError):
            server.start()
        assert not server.running


def test_a_slow_client_does_not_hold_up_a_scrape() -> None:
    server = MetricsServer("127.0.0.1:0", {"/metrics": lambda request: Response(200, b"ok")})
    with server, socket.create_connection(server.address) as idle:
        idle.sendall(b"GET /metr")  # and nothing more
        assert httpx.get(server.url + "/metrics", timeout=5).text == "ok"
    assert threading.active_count() < 50


# -- channel layers --------------------------------------------------------------------


class _StateCounting(InMemoryChannelLayer):
    """Counts how often the metrics read its state."""

    reads = 0

    def metrics_state(self) -> dict[str, float]:
        self.reads += 1
        return super().metrics_state()


@pytest.mark.anyio
async def test_a_layers_state_is_read_once_per_snapshot(counting: None) -> None:
    # metrics_state() walks every channel: with the four metrics that read it
    # (buffered, groups, two Redis ones), a publish every half second walked them
    # four times.
    layer = _StateCounting()
    layers.track(layer, "mem-snapshots")
    await layer.send("a", {"type": "m"})
    await layer.group_add("g", "a")
    first = core.snapshot()
    assert layer.reads == 1
    # Other tests' layers may still be tracked (a weak set): look at this one's alias.
    assert [["mem-snapshots"], 1.0] in first["channels_runtime_layer_buffered_messages"]
    assert [["mem-snapshots"], 1.0] in first["channels_runtime_layer_groups"]
    await layer.receive("a")
    second = core.snapshot()
    assert layer.reads == 2  # a new snapshot reads it again: no stale values
    assert [["mem-snapshots"], 0.0] in second["channels_runtime_layer_buffered_messages"]
    assert value(layers.BUFFERED, "mem-snapshots") == 0  # outside a snapshot: read afresh
    assert layer.reads == 3


@pytest.mark.anyio
async def test_inmemory_layer_counts(counting: None) -> None:
    layer = InMemoryChannelLayer(capacity=1, expiry=0.2)
    layers.track(layer, "mem")
    await layer.send("a", {"type": "m"})
    with pytest.raises(ChannelFull):
        await layer.send("a", {"type": "m"})
    assert await layer.receive("a") == {"type": "m"}
    channels = [await layer.new_channel() for _ in range(3)]
    for channel in channels:
        await layer.group_add("g", channel)
    await layer.send(channels[0], {"type": "fill"})  # at capacity: skipped by the group_send
    await layer.group_send("g", {"type": "g"})
    await layer.group_send("empty", {"type": "g"})
    assert layer.metrics_state() == {"buffered": 3, "groups": 1}
    await anyio.sleep(0.25)
    await layer.send("b", {"type": "late"})  # a fresh message, the others have expired
    await layer.receive("b")  # the sweep drops the three expired messages
    assert value(layers.SENT, "mem") == 3
    assert value(layers.RECEIVED, "mem") == 2
    assert value(layers.FULL, "mem", "send") == 1
    assert value(layers.FULL, "mem", "group_send") == 1
    assert value(layers.GROUP_SENDS, "mem") == 2
    assert value(layers.FANOUT, "mem")[-1] == 2  # fan-outs 2 and 0
    assert value(layers.EXPIRED, "mem") == 3
    assert value(layers.BUFFERED, "mem") == 0


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["lists", "pubsub"])
async def test_redis_layers_count(kind: str, redis: RedisServer, counting: None) -> None:
    layer_class = RedisChannelLayer if kind == "lists" else RedisPubSubChannelLayer
    layer = layer_class(hosts=[redis.url], prefix="m" + uuid.uuid4().hex[:8], capacity=1)
    layers.track(layer, kind)
    try:
        members = [await layer.new_channel() for _ in range(2)]
        for member in members:
            await layer.group_add("g", member)
        async with anyio.create_task_group() as tg:
            for member in members:
                tg.start_soon(layer.receive, member)
            await anyio.sleep(0.2)  # both receivers waiting (pub/sub: subscribed)
            await layer.group_send("g", {"type": "g"})
        await layer.send(members[0], {"type": "direct"})
        with anyio.fail_after(5):
            assert await layer.receive(members[0]) == {"type": "direct"}
        assert value(layers.GROUP_SENDS, kind) == 1
        # Lists: both members; pub/sub: the one subscribed process.
        assert value(layers.FANOUT, kind)[-1] == (2 if kind == "lists" else 1)
        assert value(layers.SENT, kind) == 1
        assert value(layers.RECEIVED, kind) == 3
        if kind == "lists":
            await layer.send("normal", {"type": "1"})
            with pytest.raises(ChannelFull):
                await layer.send("normal", {"type": "2"})
            assert value(layers.FULL, kind, "send") == 1
        assert layer.metrics_state()["redis_unavailable"] == 0
    finally:
        await layer.flush()
        await layer.close()


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["lists", "pubsub"])
async def test_redis_outage_is_counted(kind: str, counting: None) -> None:
    layer_class = RedisChannelLayer if kind == "lists" else RedisPubSubChannelLayer
    with RedisServer() as server:
        layer = layer_class(hosts=[server.url], retry_budget=10)
        layer.backoff_max = 0.2  # type: ignore[misc]  (reconnect soon after the restart)
        layers.track(layer, kind)
        channel = await layer.new_channel()
        got: list[Any] = []

        async def receive() -> None:
            got.append(await layer.receive(channel))
            while True:  # the sends that arrive after the first
                await layer.receive(channel)

        async with anyio.create_task_group() as tg:
            tg.start_soon(receive)
            await anyio.sleep(0.3)
            server.kill()
            with anyio.fail_after(10):
                while not layer.metrics_state()["redis_unavailable"]:  # noqa: ASYNC110
                    await anyio.sleep(0.05)
            await anyio.sleep(0.5)
            outage = layer.metrics_state()["redis_unavailable_seconds"]
            assert outage > 0.3
            server.start()
            with anyio.fail_after(15):
                while not value(layers.RECONNECTS, kind):  # noqa: ASYNC110
                    await anyio.sleep(0.05)
                while not got:  # pub/sub: until re-subscribed, a message reaches nobody
                    await layer.send(channel, {"type": "after"})
                    await anyio.sleep(0.2)
            tg.cancel_scope.cancel()
        assert got[0] == {"type": "after"}
        assert layer.metrics_state()["redis_unavailable"] == 0
        assert value(layers.UNAVAILABLE_SECONDS, kind) >= outage
        assert value(layers.RECONNECTS, kind) == 1
        await layer.close()


# -- consumers -------------------------------------------------------------------------


class Counted(AsyncWebsocketConsumer):
    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if text_data == "fail":
            raise KeyError("no such thing")
        if text_data == "stop":
            raise StopConsumer
        if text_data == "slow":
            await self.channel_layer.send(self.channel_name, {"type": "chat.message"})
            await anyio.sleep(0.2)  # the chat message waits for its turn meanwhile
        await self.send(text_data=text_data)

    async def chat_message(self, event: dict[str, Any]) -> None:
        await self.send(text_data="chat")


@pytest.mark.anyio
async def test_consumers_count_messages_time_exceptions_and_turn_waits(counting: None) -> None:
    communicator = WebsocketCommunicator(Counted.as_asgi(), "/")
    assert (await communicator.connect())[0]
    await communicator.send_to(text_data="slow")
    assert await communicator.receive_from() == "slow"
    assert await communicator.receive_from() == "chat"
    await communicator.send_to(text_data="stop")
    await communicator.wait()
    failing = WebsocketCommunicator(Counted.as_asgi(), "/")
    assert (await failing.connect())[0]
    await failing.send_to(text_data="fail")
    with pytest.raises(KeyError):
        await failing.wait()
    consumers = metrics.consumers
    # connect, slow, stop; connect, fail: websocket. The layer message: chat.
    assert value(consumers.HANDLED, "websocket") == 5
    assert value(consumers.HANDLED, "chat") == 1
    assert value(consumers.DURATION, "websocket")[-1] >= 0.2  # the slow handler's time
    assert value(consumers.EXCEPTIONS, "websocket", "KeyError") == 1
    assert value(consumers.EXCEPTIONS, "websocket", "StopConsumer") == 0
    (_, waits), = consumers.TURN_WAIT.copy_values()  # fmt: skip
    assert sum(waits[:-1]) == 1  # one message waited,
    assert waits[-1] >= 0.1  # for most of the slow handler's 0.2 s


@pytest.mark.anyio
async def test_nothing_is_counted_when_off() -> None:
    core.clear_all()
    assert not metrics.enabled
    communicator = WebsocketCommunicator(Counted.as_asgi(), "/")
    assert (await communicator.connect())[0]
    await communicator.send_to(text_data="slow")
    assert await communicator.receive_from() == "slow"
    assert await communicator.receive_from() == "chat"
    await communicator.disconnect()
    assert all(not metric.values for metric in core.REGISTRY.values() if hasattr(metric, "values"))
