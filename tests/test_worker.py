"""Background workers: ``run_worker`` in this process, ``channels-runtime worker`` as a process.

The in-memory layer lives in one process, so the in-process tests run the
worker in a task and talk to it through that layer. The subprocess tests check
the command's start, signals and exit statuses, and, when Redis is available,
a message travelling browser → server → worker → server → browser.
"""

from __future__ import annotations

import importlib
import logging
import signal
from contextlib import ExitStack
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import anyio
import pytest
from e2e_app.harness import Process, Server, base_env, cli_command, read_events, wait_until
from websockets.sync.client import connect

from channels_runtime.consumer import AsyncConsumer
from channels_runtime.exceptions import InvalidChannelLayerError
from channels_runtime.layers import get_channel_layer
from channels_runtime.routing import ChannelNameRouter, ProtocolTypeRouter
from channels_runtime.worker import WorkerConfigurationError, run_worker


class Jobs(AsyncConsumer):
    """Reports each job to the ``results`` channel, naming the instance that ran it."""

    started: ClassVar[anyio.Event | None] = None
    finished: ClassVar[list[str]] = []

    async def job_run(self, message: dict[str, Any]) -> None:
        if message.get("crash"):
            raise RuntimeError("job crashed on purpose")
        if message.get("sleep"):
            if Jobs.started is not None:
                Jobs.started.set()
            await anyio.sleep(message["sleep"])
        Jobs.finished.append(message["value"])
        await self.channel_layer.send(
            "results",
            {
                "type": "result",
                "value": message["value"],
                "channel": self.scope["channel"],
                "instance": id(self),
            },
        )


APP = ProtocolTypeRouter(
    {"channel": ChannelNameRouter({"jobs": Jobs.as_asgi(), "more-jobs": Jobs.as_asgi()})}
)


@pytest.fixture(autouse=True)
def _reset_jobs() -> None:
    Jobs.started = None
    Jobs.finished = []


async def results(count: int) -> list[dict[str, Any]]:
    layer = get_channel_layer()
    with anyio.fail_after(5):
        return [await layer.receive("results") for _ in range(count)]


@pytest.mark.anyio
async def test_one_instance_per_channel_handles_messages_in_order(anyio_backend: Any) -> None:
    layer = get_channel_layer()
    stop = anyio.Event()
    async with anyio.create_task_group() as group:
        await group.start(
            partial(run_worker, APP, ["jobs", "more-jobs"], shutdown_trigger=stop.wait)
        )
        for value in ("a", "b", "c"):
            await layer.send("jobs", {"type": "job.run", "value": value})
        await layer.send("more-jobs", {"type": "job.run", "value": "other"})
        got = await results(4)
        stop.set()
    jobs = [r for r in got if r["channel"] == "jobs"]
    assert [r["value"] for r in jobs] == ["a", "b", "c"]
    assert len({r["instance"] for r in jobs}) == 1
    other = [r for r in got if r["channel"] == "more-jobs"]
    assert [r["value"] for r in other] == ["other"]
    assert other[0]["instance"] != jobs[0]["instance"]


@pytest.mark.anyio
async def test_a_crash_is_logged_and_the_next_message_gets_a_new_instance(
    anyio_backend: Any, caplog: pytest.LogCaptureFixture
) -> None:
    layer = get_channel_layer()
    stop = anyio.Event()
    with caplog.at_level(logging.ERROR, logger="channels_runtime.worker"):
        async with anyio.create_task_group() as group:
            await group.start(partial(run_worker, APP, ["jobs"], shutdown_trigger=stop.wait))
            await layer.send("jobs", {"type": "job.run", "value": "before"})
            (before,) = await results(1)
            await layer.send("jobs", {"type": "job.run", "value": "x", "crash": True})
            await layer.send("jobs", {"no": "type"})
            await layer.send("jobs", {"type": "job.run", "value": "after"})
            (after,) = await results(1)
            stop.set()
    assert after["value"] == "after"
    assert after["instance"] != before["instance"]
    messages = [record.getMessage() for record in caplog.records]
    assert "Exception inside the application for channel 'jobs'" in messages
    assert any("Dropped a message without a 'type' on channel 'jobs'" in m for m in messages)


@pytest.mark.anyio
async def test_stop_lets_the_message_in_hand_finish(anyio_backend: Any) -> None:
    layer = get_channel_layer()
    stop = anyio.Event()
    Jobs.started = anyio.Event()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            await group.start(partial(run_worker, APP, ["jobs"], shutdown_trigger=stop.wait))
            await layer.send("jobs", {"type": "job.run", "value": "slow", "sleep": 0.3})
            await Jobs.started.wait()
            stop.set()
    assert Jobs.finished == ["slow"]
    (result,) = await results(1)
    assert result["value"] == "slow"


@pytest.mark.anyio
async def test_stop_cancels_work_after_the_graceful_timeout(anyio_backend: Any) -> None:
    layer = get_channel_layer()
    stop = anyio.Event()
    Jobs.started = anyio.Event()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            await group.start(
                partial(run_worker, APP, ["jobs"], shutdown_trigger=stop.wait, graceful_timeout=0.2)
            )
            await layer.send("jobs", {"type": "job.run", "value": "stuck", "sleep": 60})
            await Jobs.started.wait()
            stop.set()
    assert Jobs.finished == []


@pytest.mark.anyio
async def test_bad_requests_are_refused_before_running(anyio_backend: Any) -> None:
    with pytest.raises(InvalidChannelLayerError, match="'nope'"):
        await run_worker(APP, ["jobs"], layer_alias="nope")
    with pytest.raises(WorkerConfigurationError, match="at least one channel"):
        await run_worker(APP, [])
    with pytest.raises(WorkerConfigurationError, match="not a single string"):
        await run_worker(APP, "jobs")
    with pytest.raises(WorkerConfigurationError, match="Channel name"):
        await run_worker(APP, ["bad name"])


# -- the command ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("worker_class", "use_settings"), [("asyncio", False), ("uvloop", False), ("trio", True)]
)
def test_worker_command_starts_and_stops_on_sigterm(
    worker_class: str, use_settings: bool, tmp_path: Path
) -> None:
    """``--application`` or ``settings.ASGI_APPLICATION``; SIGTERM → exit 0."""
    args = [*cli_command(), "worker", "e2e-tasks", "-k", worker_class]
    env = base_env()
    if use_settings:
        env["DJANGO_SETTINGS_MODULE"] = "tests.e2e_app.settings"
    else:
        args += ["--application", "tests.e2e_app.asgi.application"]
    worker = Process(args, log_path=tmp_path / "worker.log", env=env)
    try:
        worker.wait_for_log(r"Worker running for channel e2e-tasks \(layer 'default'")
        worker.signal(signal.SIGTERM)
        assert worker.wait(15) == 0, worker.log()
        assert "Worker shutting down (SIGTERM)" in worker.log()
    finally:
        worker.close()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--layer", "nope"], "No channel layer is configured under 'nope'"),
        (["-k", "bogus"], "invalid value 'bogus' for 'worker_class'"),
        (["--application", "nosuch.asgi.application"], "Cannot import 'nosuch.asgi'"),
    ],
)
def test_worker_command_usage_errors_exit_2(args: list[str], expected: str, tmp_path: Path) -> None:
    worker = Process(
        [*cli_command(), "worker", "e2e-tasks", *args],
        log_path=tmp_path / "worker.log",
        env=base_env(DJANGO_SETTINGS_MODULE="tests.e2e_app.settings"),
    )
    try:
        assert worker.wait(15) == 2, worker.log()
        assert expected in worker.log()
    finally:
        worker.close()


def test_worker_command_needs_settings_or_application(tmp_path: Path) -> None:
    worker = Process(
        [*cli_command(), "worker", "jobs"], log_path=tmp_path / "worker.log", env=base_env()
    )
    try:
        assert worker.wait(15) == 2
        assert "Cannot find the Django settings" in worker.log()
    finally:
        worker.close()


def _redis_layer_available() -> bool:
    try:
        module = importlib.import_module("channels_runtime.layers.redis")
    except ImportError:
        return False
    return hasattr(module, "RedisChannelLayer")


@pytest.mark.skipif(not _redis_layer_available(), reason="the Redis channel layer is not present")
def test_server_and_worker_share_work_through_redis(tmp_path: Path) -> None:
    """Client → server consumer → worker process → group → client, across processes."""
    from redis_server import RedisServer

    events = tmp_path / "events.txt"
    with ExitStack() as stack:
        redis = stack.enter_context(RedisServer())
        env = base_env(E2E_REDIS_URL=redis.url, E2E_EVENTS_FILE=str(events))
        worker = Process(
            [*cli_command(), "worker", "e2e-tasks", "-k", "trio", "--application",
             "tests.e2e_app.asgi.application"],
            log_path=tmp_path / "worker.log",
            env=env,
        )  # fmt: skip
        stack.callback(worker.close)
        server = Server(
            [*cli_command(), "serve", "tests.e2e_app.asgi", "-b", "127.0.0.1:0"],
            log_path=tmp_path / "server.log",
            env=env,
        )
        stack.callback(server.close)
        worker.wait_for_log("Worker running for channel e2e-tasks")
        server.start()
        assert "channel layer channels_runtime.layers.redis.RedisChannelLayer" in server.log()
        client = stack.enter_context(connect(server.ws_url + "/ws/room/jobs/", open_timeout=10))
        assert client.recv(timeout=5) == "joined"
        client.send("task:42")
        assert client.recv(timeout=10) == "done 42"
        wait_until(lambda: "task 42" in read_events(events), 5)
        worker.signal(signal.SIGTERM)
        server.signal(signal.SIGTERM)
        assert worker.wait(15) == 0, worker.log()
        assert server.wait(15) == 0, server.log()
