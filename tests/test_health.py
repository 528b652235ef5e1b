"""``/healthz`` and ``/readyz``: the checks in this process, and real ``serve`` processes.

In-process tests run the checks against real components (a private
``redis-server``, the machine's PostgreSQL, a TCP server that accepts and never
answers) on asyncio, uvloop and trio. Process tests start ``channels-runtime
serve`` with ``--metrics-bind`` and ask both binds over HTTP, with one worker
(the server answers) and two (the supervisor answers on the metrics bind, a
worker on the main bind).
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import yaml
from conftest import postgres_settings
from e2e_app.harness import Server, base_env, cli_command
from redis_server import RedisServer, free_port

from channels_runtime import cli
from channels_runtime.layers.redis import RedisChannelLayer, RedisPubSubChannelLayer
from channels_runtime.server.config import load_toml
from channels_runtime.server.health import (
    LOOP_ANSWER_GRACE,
    Check,
    HealthChecker,
    HealthEndpoints,
    channel_layer_checks,
    database_check,
)
from channels_runtime.server.readiness import ServerReadiness, ServerState, SupervisorReadiness

WORKER_CLASSES = ["asyncio", "uvloop", "trio"]

_METRICS_URL = re.compile(r"Metrics on (http://127\.0\.0\.1:\d+)/metrics")


# -- helpers ------------------------------------------------------------------------


@contextmanager
def silent_server() -> Iterator[int]:
    """A TCP server on a free port that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except (TimeoutError, OSError):
                continue
            accepted.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        thread.join(5)
        for conn in accepted:
            conn.close()
        listener.close()


def start_server(
    tmp_path: Path, *args: str, config: str = "", settings: str | None = None, **env: str
) -> Server:
    """``serve tests.e2e_app.asgi``, its metrics bind on a free port, ``config`` as its TOML."""
    toml = tmp_path / "hypercorn.toml"
    toml.write_text("graceful_timeout = 1.0\n" + config)
    environment = base_env(**env)
    if settings is not None:
        environment["DJANGO_SETTINGS_MODULE"] = settings
        environment["PYTHONPATH"] = f"{tmp_path}:{environment['PYTHONPATH']}"
    server = Server(
        [
            *cli_command(),
            "serve",
            "tests.e2e_app.asgi",
            "-b",
            "127.0.0.1:0",
            "--metrics-bind",
            "127.0.0.1:0",
            "-c",
            str(toml),
            *args,
        ],
        log_path=tmp_path / "server.log",
        env=environment,
    )
    server.start()
    return server


def metrics_url(server: Server) -> str:
    return server.wait_for_log(_METRICS_URL.pattern).group(1)


def get(url: str, method: str = "GET") -> tuple[int, Any, float]:
    """Status, parsed JSON body (None when empty or not JSON), and seconds taken."""
    started = time.monotonic()
    response = httpx.request(method, url, timeout=10)
    elapsed = time.monotonic() - started
    try:
        body = response.json()
    except ValueError:
        body = None
    return response.status_code, body, elapsed


def wait_for_status(
    url: str, status: int, timeout: float = 20.0, *, serving: bool = False
) -> dict[str, Any]:
    """Poll ``url`` until it answers ``status``; return that body.

    ``serving``: also wait until the ``server`` check passes, so a 503 that
    only says a worker is still starting does not count.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            code, body, _ = get(url)
            try:
                started = not serving or body["checks"]["server"]["status"] == "ok"
            except (KeyError, TypeError):  # not a readiness body (yet)
                started = False
            if code == status and started:
                return body  # type: ignore[no-any-return]
            last = (code, body)
        except httpx.HTTPError as exc:
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} did not answer {status} within {timeout}s: {last!r}")
        time.sleep(0.1)


def check(body: dict[str, Any], name: str) -> dict[str, Any]:
    assert name in body["checks"], body
    result = body["checks"][name]
    assert set(result) == {"status", "latency_ms", "detail"}, result
    assert result["latency_ms"] >= 0
    return result  # type: ignore[no-any-return]


# -- the checks, in this process ----------------------------------------------------


@pytest.mark.anyio
async def test_readiness_follows_the_server_state(anyio_backend: Any) -> None:
    readiness = ServerReadiness()
    checker = HealthChecker(readiness.check, channel_layer_checks())

    report = await checker.readyz()
    assert report.status_code == 503
    assert report.body["status"] == "not ready"
    assert check(report.body, "server")["status"] == "fail"
    assert check(report.body, "server")["detail"].startswith("starting for ")
    layer = check(report.body, "channel_layer:default")
    assert layer["status"] == "skipped"
    assert layer["detail"] == "not run: the server is not serving"

    readiness.advance(ServerState.SERVING)
    report = await checker.readyz()
    assert report.status_code == 200, report.body
    assert report.body["status"] == "ready"
    assert check(report.body, "channel_layer:default") == {
        "status": "ok",
        "latency_ms": report.body["checks"]["channel_layer:default"]["latency_ms"],
        "detail": "InMemoryChannelLayer: in this process, always reachable",
    }
    assert json.loads(report.encode()) == report.body

    readiness.advance(ServerState.DRAINING)
    assert not readiness.advance(ServerState.SERVING)  # never back
    report = await checker.readyz()
    assert report.status_code == 503
    assert check(report.body, "server")["detail"].startswith("draining for ")

    alive = await checker.healthz()  # liveness does not care
    assert alive.status_code == 200
    assert alive.body["status"] == "alive"


def test_supervisor_readiness_needs_every_worker_serving() -> None:
    readiness = SupervisorReadiness(2)
    readiness.own.advance(ServerState.SERVING)
    readiness.worker_state(101, ServerState.STARTING)
    readiness.worker_state(102, ServerState.SERVING)
    assert readiness.check() == (False, "1 of 2 workers serving (worker 101 starting)")
    readiness.worker_state(101, ServerState.SERVING)
    assert readiness.check() == (True, "2 of 2 workers serving")
    readiness.worker_gone(102)  # being replaced
    assert readiness.check() == (False, "1 of 2 workers serving")
    readiness.worker_state(103, ServerState.SERVING)
    readiness.worker_state(103, ServerState.DRAINING)  # got SIGTERM on its own
    assert readiness.check() == (False, "1 of 2 workers serving (worker 103 draining)")
    readiness.own.advance(ServerState.DRAINING)
    ready, detail = readiness.check()
    assert not ready
    assert detail.startswith("supervisor draining for ")


def _serving_checker(*checks: Check, timeout: float = 0.5) -> HealthChecker:
    readiness = ServerReadiness()
    readiness.advance(ServerState.SERVING)
    return HealthChecker(readiness.check, checks, timeout=timeout)


def _layer_check(layer: Any) -> Check:
    async def ping() -> str:
        await layer.ping()
        return "PING answered"

    return Check("channel_layer:default", ping)


@pytest.mark.anyio
@pytest.mark.parametrize("layer_class", [RedisChannelLayer, RedisPubSubChannelLayer])
async def test_redis_ping_follows_the_server(anyio_backend: Any, layer_class: type) -> None:
    with RedisServer() as redis:
        layer = layer_class(hosts=[redis.url], connect_timeout=0.5, socket_timeout=0.5)
        checker = _serving_checker(_layer_check(layer), timeout=2.0)
        try:
            await layer.ping()
            assert (await checker.readyz()).status_code == 200
            redis.kill()
            report = await checker.readyz()
            assert report.status_code == 503
            failed = check(report.body, "channel_layer:default")
            assert failed["status"] == "fail"
            assert failed["detail"].startswith(f"RedisUnavailable: Redis at {redis.url} ")
            assert "did not answer PING" in failed["detail"]
            redis.start()
            # The pooled connection is from before the restart: the ping retries afresh.
            report = await checker.readyz()
            assert report.status_code == 200, report.body
        finally:
            await layer.close()


@pytest.mark.anyio
@pytest.mark.parametrize("layer_class", [RedisChannelLayer, RedisPubSubChannelLayer])
async def test_a_hung_redis_fails_within_the_timeout(anyio_backend: Any, layer_class: type) -> None:
    with silent_server() as port:
        # The layer's own timeouts are long: the readiness timeout must be what ends it.
        layer = layer_class(
            hosts=[f"redis://127.0.0.1:{port}/0"], connect_timeout=30, socket_timeout=30
        )
        checker = _serving_checker(_layer_check(layer), timeout=0.3)
        started = time.monotonic()
        report = await checker.readyz()
        elapsed = time.monotonic() - started
        assert report.status_code == 503
        assert check(report.body, "channel_layer:default") == {
            "status": "fail",
            "latency_ms": report.body["checks"]["channel_layer:default"]["latency_ms"],
            "detail": "no answer within 0.3s (readiness_timeout)",
        }
        # uvloop's clock counts whole milliseconds: its 0.3 s may end a hair early.
        assert 0.29 <= elapsed < 1.0, elapsed
        await layer.close()


@pytest.mark.anyio
async def test_database_check(anyio_backend: Any) -> None:
    checker = _serving_checker(database_check("pg"), timeout=5.0)
    report = await checker.readyz()
    assert report.status_code == 200, report.body
    assert check(report.body, "database")["detail"] == "postgresql: SELECT 1 answered"


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_blocked_event_loop_makes_readyz_fail_in_time(backend: str) -> None:
    """The metrics bind's handler runs in a thread; a loop that never gets to the
    checks must not hang it."""
    endpoints = HealthEndpoints(_serving_checker(timeout=0.2))
    with anyio.from_thread.start_blocking_portal(backend) as portal:
        endpoints.attach(portal)
        assert endpoints.readyz_report().status_code == 200
        release = threading.Event()

        async def hog_the_loop() -> None:
            release.wait(10)  # a sync call blocking the event loop

        blocked = portal.start_task_soon(hog_the_loop)
        try:
            started = time.monotonic()
            report = endpoints.readyz_report()
            elapsed = time.monotonic() - started
        finally:
            release.set()
            blocked.result(10)
        assert report.status_code == 503
        server = check(report.body, "server")
        assert server["status"] == "fail"
        wait = 0.2 + LOOP_ANSWER_GRACE
        assert server["detail"] == f"the event loop did not answer within {wait:g}s"
        assert elapsed < 0.2 + LOOP_ANSWER_GRACE + 0.5, elapsed
        assert endpoints.readyz_report().status_code == 200  # answers again once unblocked
        endpoints.attach(None)
    report = endpoints.readyz_report()  # the loop is gone
    assert report.status_code == 503
    assert check(report.body, "server")["detail"] == "no event loop to run the checks on"


# -- configuration errors -----------------------------------------------------------


@pytest.mark.parametrize(
    ("toml", "flags", "message"),
    [
        ("drain_seconds = -1\n", [], "invalid value -1 for 'drain_seconds': must be >= 0"),
        ('drain_seconds = "soon"\n', [], "expected a number of seconds, got str"),
        ("", ["--drain-seconds", "-2"], "--drain-seconds: invalid value -2.0 for 'drain_seconds'"),
        ("readiness_timeout = 0\n", [], "invalid value 0 for 'readiness_timeout': must be > 0"),
        ('readiness_database = "yes"\n', [], "expected true or false, got str"),
        ('readyz_path = "readyz"\n', [], "expected a URL path such as '/readyz'"),
        ('healthz_path = "/h z"\n', [], "expected a URL path such as '/readyz'"),
        (
            'healthz_path = "/health"\nreadyz_path = "/health"\n',
            [],
            "healthz_path and readyz_path are both '/health': give them different paths",
        ),
    ],
)
def test_bad_settings_exit_2(
    toml: str, flags: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "hypercorn.toml"
    config.write_text(toml)
    assert cli.main(["serve", "tests.e2e_app.asgi", "-c", str(config), *flags]) == 2
    assert message in capsys.readouterr().err


def test_drain_flag_is_in_the_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["serve", "--help"])
    assert "--drain-seconds SECONDS" in capsys.readouterr().out


# -- real servers -------------------------------------------------------------------


@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
def test_endpoints_on_both_binds(worker_class: str, tmp_path: Path) -> None:
    server = start_server(
        tmp_path,
        "-k",
        worker_class,
        config='healthz_path = "/live"\nreadyz_path = "/health/"\n',
    )
    try:
        metrics = metrics_url(server)
        status, alive, _ = get(metrics + "/healthz")
        assert status == 200
        assert alive["status"] == "alive"
        assert alive["pid"] == server.pid
        ready = wait_for_status(metrics + "/readyz", 200)
        assert ready["status"] == "ready"
        assert check(ready, "server")["detail"].startswith("serving for ")
        assert check(ready, "channel_layer:default")["status"] == "ok"

        # The main bind answers at the configured paths, in front of the app: the
        # application's own /health/ route is shadowed by readyz_path...
        status, body, _ = get(server.url + "/health/")
        assert status == 200
        assert body["status"] == "ready"
        assert set(body["checks"]) == {"server", "channel_layer:default"}
        status, body, _ = get(server.url + "/live")
        assert (status, body["status"]) == (200, "alive")
        head = httpx.head(server.url + "/health/", timeout=10)
        assert head.status_code == 200
        assert head.content == b""
        assert head.headers["content-type"] == "application/json"
        # ...but only for GET and HEAD on those exact paths.
        assert httpx.post(server.url + "/health/", timeout=10).text.startswith("ok ")
        status, body, _ = get(server.url + "/readyz")
        assert status == 404
        assert body is None
        assert "No route found for path '/readyz' (http)" in server.log()
        status, _, _ = get(metrics + "/nothing-here")
        assert status == 404
    finally:
        server.close()


@pytest.mark.parametrize("workers", [1, 2])
def test_the_health_routes_answer_from_the_first_connection(workers: int, tmp_path: Path) -> None:
    # A probe that reaches the metrics bind the moment it listens is answered by
    # the health routes (503 "starting" at worst), never by a 404.
    port = free_port()
    (tmp_path / "hypercorn.toml").write_text("graceful_timeout = 1.0\n")
    server = Server(
        [
            *cli_command(),
            "serve",
            "tests.e2e_app.asgi",
            "-b",
            "127.0.0.1:0",
            "--metrics-bind",
            f"127.0.0.1:{port}",
            "-w",
            str(workers),
            "-c",
            str(tmp_path / "hypercorn.toml"),
        ],
        log_path=tmp_path / "server.log",
        env=base_env(),
    )
    try:
        seen: dict[str, list[int]] = {"/healthz": [], "/readyz": []}
        deadline = time.monotonic() + 30
        while seen["/readyz"][-1:] != [200]:
            assert time.monotonic() < deadline, f"{seen}\n{server.log()}"
            for path, statuses in seen.items():
                try:
                    statuses.append(
                        httpx.get(f"http://127.0.0.1:{port}{path}", timeout=5).status_code
                    )
                except httpx.TransportError:
                    time.sleep(0.002)  # not listening yet
        assert seen["/healthz"], "the bind never answered"
        assert set(seen["/healthz"]) == {200}, seen
        assert set(seen["/readyz"]) <= {200, 503}, seen
    finally:
        server.close()


def test_main_bind_paths_are_off_by_default(tmp_path: Path) -> None:
    server = start_server(tmp_path)
    try:
        wait_for_status(metrics_url(server) + "/readyz", 200)
        for route in ("/readyz", "/healthz"):
            status, body, _ = get(server.url + route)
            assert status == 404
            assert body is None
            assert f"No route found for path '{route}' (http)" in server.log()
    finally:
        server.close()


@pytest.mark.parametrize(
    ("worker_class", "workers"),
    [("asyncio", 1), ("uvloop", 1), ("trio", 1), ("asyncio", 2), ("trio", 2)],
)
def test_readiness_follows_our_redis(worker_class: str, workers: int, tmp_path: Path) -> None:
    with RedisServer() as redis:
        server = start_server(
            tmp_path,
            "-k",
            worker_class,
            "-w",
            str(workers),
            config='readyz_path = "/readyz"\nreadiness_timeout = 2.0\n',
            E2E_REDIS_URL=redis.url,
        )
        try:
            urls = [metrics_url(server) + "/readyz", server.url + "/readyz"]
            for url in urls:
                body = wait_for_status(url, 200)
                assert check(body, "channel_layer:default")["detail"] == (
                    "RedisChannelLayer: PING answered"
                )
            if workers > 1:
                # The supervisor answers on the metrics bind, a worker on the main bind.
                supervisor = wait_for_status(urls[0], 200)
                assert check(supervisor, "server")["detail"] == "2 of 2 workers serving"
                assert check(wait_for_status(urls[1], 200), "server")["detail"].startswith(
                    "serving for "
                )

            redis.kill()
            for url in urls:
                body = wait_for_status(url, 503, timeout=10)
                failed = check(body, "channel_layer:default")
                assert failed["status"] == "fail"
                assert "did not answer PING" in failed["detail"]
                assert check(body, "server")["status"] == "ok"

            redis.start()
            for url in urls:
                wait_for_status(url, 200, timeout=10)
        finally:
            server.close()


@pytest.mark.parametrize(("worker_class", "workers"), [("trio", 1), ("asyncio", 2)])
def test_a_hung_redis_gives_503_within_the_timeout(
    worker_class: str, workers: int, tmp_path: Path
) -> None:
    with silent_server() as port:
        server = start_server(
            tmp_path,
            "-k",
            worker_class,
            "-w",
            str(workers),
            config='readyz_path = "/readyz"\nreadiness_timeout = 0.4\n',
            E2E_REDIS_URL=f"redis://127.0.0.1:{port}/0",
        )
        try:
            for url in (metrics_url(server) + "/readyz", server.url + "/readyz"):
                # With -w 2 the first 503s say a worker is still starting.
                body = wait_for_status(url, 503, serving=True)
                assert check(body, "server")["status"] == "ok", body
                for _ in range(2):  # and again, while the first attempt may still hang
                    status, body, elapsed = get(url)
                    assert status == 503
                    assert check(body, "channel_layer:default")["detail"] == (
                        "no answer within 0.4s (readiness_timeout)"
                    )
                    assert elapsed < 0.4 + 1.5, elapsed  # the detail says which timeout fired
        finally:
            server.close()


def test_database_readiness(tmp_path: Path) -> None:
    """readiness_database: PostgreSQL answers; a database that never answers gives 503 in time."""
    with silent_server() as port:
        (tmp_path / "health_db_settings.py").write_text(
            "import os\n"
            "from tests.e2e_app.settings import *  # noqa: F403\n"
            f"DATABASES = {{'default': {postgres_settings()!r}}}\n"
            "if os.environ.get('HUNG_DB_PORT'):\n"
            "    DATABASES['default'].update(HOST='127.0.0.1', PORT=os.environ['HUNG_DB_PORT'])\n"
        )
        config = "readiness_database = true\nreadiness_timeout = 1.5\n"
        server = start_server(tmp_path, "-k", "trio", config=config, settings="health_db_settings")
        try:
            body = wait_for_status(metrics_url(server) + "/readyz", 200)
            assert check(body, "database")["detail"] == "postgresql: SELECT 1 answered"
        finally:
            server.close()

        hung = tmp_path / "hung"
        hung.mkdir()
        settings = (tmp_path / "health_db_settings.py").read_text()
        (hung / "health_db_settings.py").write_text(settings)
        server = start_server(
            hung, config=config, settings="health_db_settings", HUNG_DB_PORT=str(port)
        )
        try:
            url = metrics_url(server) + "/readyz"
            for _ in range(2):  # the second waits for the first's abandoned thread, in time too
                status, body, elapsed = get(url)
                assert status == 503, body
                assert check(body, "database")["detail"] == (
                    "no answer within 1.5s (readiness_timeout)"
                )
                assert check(body, "channel_layer:default")["status"] == "ok"
                assert elapsed < 1.5 + 1.5, elapsed
        finally:
            server.close()


# -- the deployment examples in docs/serving.md -------------------------------------

SERVING_DOC = Path(__file__).resolve().parent.parent / "docs" / "serving.md"


def _blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)\n```$", SERVING_DOC.read_text(), re.S | re.M)


def test_serving_doc_toml_blocks_pass_the_checks(tmp_path: Path) -> None:
    blocks = _blocks("toml")
    assert any("drain_seconds" in block for block in blocks)
    for number, block in enumerate(blocks):
        path = tmp_path / f"block{number}.toml"
        path.write_text(block)
        load_toml(path)  # raises ConfigError naming the key


def test_kubernetes_example_is_consistent(tmp_path: Path) -> None:
    (block,) = [b for b in _blocks("yaml") if "terminationGracePeriodSeconds" in b]
    config_map, deployment = yaml.safe_load_all(block)
    toml = tmp_path / "hypercorn.toml"
    toml.write_text(config_map["data"]["hypercorn.toml"])
    settings = load_toml(toml)

    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    (mount,) = container["volumeMounts"]
    assert pod["volumes"][0]["configMap"]["name"] == config_map["metadata"]["name"]
    config_flag = container["command"].index("--config")
    assert container["command"][config_flag + 1] == mount["mountPath"] + "/hypercorn.toml"

    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports["ops"] == int(settings["metrics_bind"].rpartition(":")[2])
    assert ports["http"] == int(settings["bind"][0].rpartition(":")[2])
    for probe, path in [
        ("startupProbe", "/healthz"),
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
    ]:
        assert container[probe]["httpGet"] == {"path": path, "port": "ops"}, probe
    # The kubelet's default 1 s probe timeout must leave room for the checks.
    assert container["readinessProbe"]["timeoutSeconds"] > (
        settings["readiness_timeout"] + LOOP_ANSWER_GRACE
    )
    # Long enough for the drain, the graceful period and the supervisor's allowance.
    shutdown = (
        settings["drain_seconds"]
        + settings["graceful_timeout"]
        + settings["shutdown_timeout"]
        + 5.0
    )
    assert pod["terminationGracePeriodSeconds"] > shutdown
    readiness = container["readinessProbe"]
    assert settings["drain_seconds"] >= readiness["periodSeconds"] * readiness["failureThreshold"]
