"""``/healthz`` and ``/readyz``: is the process alive, and should it get traffic?

* **Liveness** (``/healthz``) answers 200 as long as the process can answer at
  all, draining included: a liveness failure makes Kubernetes kill the process,
  which must never happen to a server that is finishing its work.
* **Readiness** (``/readyz``) answers 200 only when every check passes, else
  503; the JSON body names each check with its status, its latency and one line
  of detail. The checks:

  - ``server``: the lifecycle of :mod:`~channels_runtime.server.readiness`
    (serving, not starting, draining or stopping; under ``-w N`` also every
    worker serving);
  - ``channel_layer:<alias>`` for each alias of ``CHANNEL_LAYERS``: a layer
    with a ``ping()`` coroutine (both Redis layers) is pinged through its own
    connections, so the answer is what the consumers' next ``send`` would
    meet; the in-memory layer lives in the process and is always reachable;
  - ``database`` (``readiness_database = true``): ``SELECT 1`` on Django's
    ``default`` database, in a thread of its own.

  When ``server`` fails, the other checks are skipped: a server that will not
  take traffic anyway needs no pinging (and at shutdown its layers are being
  closed). Every check runs under ``readiness_timeout``: a hung Redis makes
  the probe answer 503 in time instead of hanging it. The checks run
  concurrently, so the probe takes as long as the slowest.

The same :class:`HealthChecker` answers on the metrics bind and, when
``healthz_path``/``readyz_path`` are set, on the main bind, through
:func:`health_routes`, in front of the application: those two exact paths
(GET or HEAD) are answered there, everything else goes to the application
untouched.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import anyio
from anyio.abc import TaskStatus
from anyio.from_thread import BlockingPortal
from anyio.lowlevel import RunVar

from ..asgi import ASGIApp, Receive, Scope, Send
from .readiness import StateCheck

__all__ = [
    "DEFAULT_READINESS_TIMEOUT",
    "Check",
    "CheckResult",
    "HealthChecker",
    "HealthEndpoints",
    "HealthOptions",
    "HealthReport",
    "channel_layer_checks",
    "database_check",
    "health_routes",
    "options_from_config",
]

#: Seconds each readiness check may take (``readiness_timeout``). Below
#: Kubernetes' default probe timeout of 1 s, so a hung check still gets its 503
#: to the kubelet before the kubelet gives up on its own.
DEFAULT_READINESS_TIMEOUT = 0.5

#: A readiness check: a coroutine returning one line of detail, raising on failure.
CheckFunction = Callable[[], Awaitable[str]]


@dataclass(frozen=True)
class Check:
    name: str
    run: CheckFunction


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check: ``"ok"``, ``"fail"`` or ``"skipped"``."""

    name: str
    status: str
    latency: float
    detail: str

    def as_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "latency_ms": round(self.latency * 1000, 3),
            "detail": self.detail,
        }


@dataclass(frozen=True)
class HealthReport:
    """What an endpoint answers: status code and JSON body."""

    status_code: int
    body: dict[str, Any] = field(default_factory=dict)

    def encode(self) -> bytes:
        return json.dumps(self.body, separators=(",", ":")).encode() + b"\n"


def _describe_error(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def _run_check(check: Check, limit: float) -> CheckResult:
    started = time.perf_counter()
    try:
        with anyio.fail_after(limit):
            detail = await check.run()
    except TimeoutError:
        return CheckResult(
            check.name,
            "fail",
            time.perf_counter() - started,
            f"no answer within {limit:g}s (readiness_timeout)",
        )
    except Exception as exc:
        return CheckResult(check.name, "fail", time.perf_counter() - started, _describe_error(exc))
    return CheckResult(check.name, "ok", time.perf_counter() - started, detail)


class HealthChecker:
    """Answers ``/healthz`` and ``/readyz`` for one server (or one supervisor).

    ``state`` is the lifecycle check (:meth:`ServerReadiness.check
    <channels_runtime.server.readiness.ServerReadiness.check>` or the
    supervisor's); ``checks`` are the dependencies, each bounded by ``timeout``
    seconds. Both methods are coroutines for the event loop the checks should
    use (a Redis layer's connections belong to one loop).
    """

    def __init__(
        self,
        state: StateCheck,
        checks: Sequence[Check] = (),
        *,
        timeout: float = DEFAULT_READINESS_TIMEOUT,
    ) -> None:
        self.state = state
        self.checks = list(checks)
        self.timeout = timeout
        self.started_at = time.time()

    def healthz_report(self) -> HealthReport:
        """200 while the process can answer, whatever its state."""
        return HealthReport(
            200,
            {
                "status": "alive",
                "pid": os.getpid(),
                "uptime_seconds": round(time.time() - self.started_at, 3),
            },
        )

    async def healthz(self) -> HealthReport:
        return self.healthz_report()

    async def readyz(self) -> HealthReport:
        """200 when the server is serving and every check passes, else 503."""
        started = time.perf_counter()
        ready, detail = self.state()
        server = CheckResult(
            "server", "ok" if ready else "fail", time.perf_counter() - started, detail
        )
        if not ready:
            return self.skipped_report(server, "not run: the server is not serving")
        found: dict[str, CheckResult] = {}

        async def run(check: Check) -> None:
            found[check.name] = await _run_check(check, self.timeout)

        async with anyio.create_task_group() as group:
            for check in self.checks:
                group.start_soon(run, check)
        return self._report([server, *(found[check.name] for check in self.checks)])

    def skipped_report(self, server: CheckResult, why: str) -> HealthReport:
        """The report when the dependency checks were not run (``server`` says why)."""
        skipped = [CheckResult(check.name, "skipped", 0.0, why) for check in self.checks]
        return self._report([server, *skipped])

    @staticmethod
    def _report(results: Sequence[CheckResult]) -> HealthReport:
        ok = all(result.status == "ok" for result in results)
        body = {
            "status": "ready" if ok else "not ready",
            "checks": {result.name: result.as_json() for result in results},
        }
        return HealthReport(200 if ok else 503, body)


# -- the checks ---------------------------------------------------------------------


def channel_layer_checks() -> list[Check]:
    """One check per alias of ``settings.CHANNEL_LAYERS`` (none when it has none)."""
    from django.conf import settings

    if not settings.configured:
        return []
    aliases = getattr(settings, "CHANNEL_LAYERS", None) or {}
    if not isinstance(aliases, dict):
        return []
    return [Check(f"channel_layer:{alias}", _layer_check(alias)) for alias in aliases]


def _layer_check(alias: str) -> CheckFunction:
    async def check() -> str:
        from ..layers import InMemoryChannelLayer, get_channel_layer

        layer = get_channel_layer(alias)
        kind = type(layer).__name__
        ping = getattr(layer, "ping", None)
        if ping is not None:
            await ping()
            return f"{kind}: PING answered"
        if isinstance(layer, InMemoryChannelLayer):
            return f"{kind}: in this process, always reachable"
        return f"{kind}: has no ping() method; not checked"

    return check


#: One thread at a time checks the database: a hung database then holds one
#: abandoned thread, and later probes time out waiting for it instead of
#: piling up threads.
_database_limiter: RunVar[anyio.CapacityLimiter] = RunVar("channels_runtime_readiness_db")


def _limiter() -> anyio.CapacityLimiter:
    try:
        return _database_limiter.get()
    except LookupError:
        limiter = anyio.CapacityLimiter(1)
        _database_limiter.set(limiter)
        return limiter


def _select_one(alias: str) -> str:
    from django.db import connections

    connection = connections[alias]
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    finally:
        # Probes come from whichever pool thread runs them: keep no connection
        # behind in a thread that may never run a probe again.
        connection.close()
    return f"{connection.vendor}: SELECT 1 answered"


def database_check(alias: str = "default") -> Check:
    """``SELECT 1`` on Django's database ``alias``, in a thread the probe can abandon."""

    async def check() -> str:
        return await anyio.to_thread.run_sync(
            _select_one, alias, abandon_on_cancel=True, limiter=_limiter()
        )

    return Check("database", check)


# -- settings -----------------------------------------------------------------------


@dataclass(frozen=True)
class HealthOptions:
    """The health settings of a Hypercorn ``Config`` (``serve`` checks them)."""

    healthz_path: str = ""
    readyz_path: str = ""
    timeout: float = DEFAULT_READINESS_TIMEOUT
    database: bool = False
    drain_seconds: float = 0.0

    def checks(self) -> list[Check]:
        """The dependency checks these options ask for (needs Django set up)."""
        checks = channel_layer_checks()
        if self.database:
            checks.append(database_check())
        return checks


def options_from_config(config: Any) -> HealthOptions:
    """Read channels-runtime's health settings off a Hypercorn ``Config`` (absent: defaults)."""
    return HealthOptions(
        healthz_path=str(getattr(config, "healthz_path", "") or ""),
        readyz_path=str(getattr(config, "readyz_path", "") or ""),
        timeout=float(getattr(config, "readiness_timeout", DEFAULT_READINESS_TIMEOUT)),
        database=bool(getattr(config, "readiness_database", False)),
        drain_seconds=float(getattr(config, "drain_seconds", 0.0) or 0.0),
    )


# -- answering on the metrics bind --------------------------------------------------

#: Seconds past ``readiness_timeout`` that the metrics bind waits for the event
#: loop to hand back a readiness report before calling the loop unresponsive.
LOOP_ANSWER_GRACE = 0.2


class HealthEndpoints:
    """``/healthz`` and ``/readyz`` for the metrics bind, whose HTTP server runs
    handlers in threads of its own (:mod:`channels_runtime.metrics.exposition`).

    The checks must run on an event loop: the server's own (a Redis layer's
    connections belong to the loop that opened them, and the consumers' sends
    use the server loop's), or under ``-w N`` a loop the supervisor starts for
    them. :meth:`run_on_this_loop` lends the running loop for as long as it
    runs; a handler hands the checks to it through a blocking portal and waits
    at most ``readiness_timeout`` + :data:`LOOP_ANSWER_GRACE`. So a loop that is
    blocked (a consumer doing sync I/O on it, say) makes ``/readyz`` answer 503,
    "the event loop did not answer", instead of hanging the probe.

    While the lifecycle check fails (starting, draining, stopping) the report is
    made here in the handler's thread: no loop is needed for it, and after the
    loop has ended there is none.
    """

    def __init__(self, checker: HealthChecker) -> None:
        self.checker = checker
        self._portal: BlockingPortal | None = None
        self._lock = threading.Lock()
        self._pending: concurrent.futures.Future[HealthReport] | None = None

    def attach(self, portal: BlockingPortal | None) -> None:
        """Run the checks through ``portal`` from now on (``None``: no loop any more)."""
        self._portal = portal

    async def run_on_this_loop(
        self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Lend the running loop to the handlers until cancelled."""
        async with BlockingPortal() as portal:
            self.attach(portal)
            task_status.started()
            try:
                await anyio.sleep_forever()
            finally:
                self.attach(None)

    def readyz_report(self) -> HealthReport:
        checker = self.checker
        started = time.perf_counter()
        ready, detail = checker.state()
        server = CheckResult(
            "server", "ok" if ready else "fail", time.perf_counter() - started, detail
        )
        if not ready:
            return checker.skipped_report(server, "not run: the server is not serving")
        portal = self._portal
        if portal is None:
            failed = replace(server, status="fail", detail="no event loop to run the checks on")
            return checker.skipped_report(failed, "not run: no event loop")
        wait = checker.timeout + LOOP_ANSWER_GRACE
        try:
            return self._on_the_loop(portal).result(timeout=wait)
        except TimeoutError:
            failed = replace(
                server,
                status="fail",
                latency=time.perf_counter() - started,
                detail=f"the event loop did not answer within {wait:g}s",
            )
            return checker.skipped_report(failed, "not run: the event loop did not answer")
        except RuntimeError:  # the portal stopped in between: the loop is ending
            failed = replace(server, status="fail", detail="stopping")
            return checker.skipped_report(failed, "not run: the server is not serving")

    def _on_the_loop(self, portal: BlockingPortal) -> concurrent.futures.Future[HealthReport]:
        """The checks' report, computed on the portal's loop.

        Handing work to a loop blocks until that loop takes it, so the hand-over
        happens on a helper thread and the handler waits on this future with its
        own timeout. Probes that arrive while one is in flight share its answer:
        a loop that stays blocked holds one helper thread, never one per probe.
        """
        with self._lock:
            pending = self._pending
            if pending is not None and not pending.done():
                return pending
            future: concurrent.futures.Future[HealthReport] = concurrent.futures.Future()
            self._pending = future

        def hand_over() -> None:
            try:
                future.set_result(portal.call(self.checker.readyz))
            except BaseException as exc:
                future.set_exception(exc)

        threading.Thread(target=hand_over, name="channels-runtime readiness", daemon=True).start()
        return future

    def routes(self) -> dict[str, Any]:
        """``{"/healthz": handler, "/readyz": handler}`` for ``MetricsServer.add_route``."""
        from ..metrics.exposition import Request, Response

        def as_response(report: HealthReport) -> Response:
            return Response(
                report.status_code,
                report.encode(),
                "application/json",
                (("Cache-Control", "no-store"),),
            )

        def healthz(request: Request) -> Response:
            return as_response(self.checker.healthz_report())

        def readyz(request: Request) -> Response:
            return as_response(self.readyz_report())

        return {"/healthz": healthz, "/readyz": readyz}


# -- answering on the main bind -----------------------------------------------------


async def send_report(send: Send, report: HealthReport, *, head: bool = False) -> None:
    """Send ``report`` as a complete ASGI HTTP response (no body for HEAD)."""
    body = report.encode()
    await send(
        {
            "type": "http.response.start",
            "status": report.status_code,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": b"" if head else body})


def health_routes(
    app: ASGIApp, checker: HealthChecker, *, healthz_path: str = "", readyz_path: str = ""
) -> ASGIApp:
    """``app`` with GET/HEAD on ``healthz_path`` and ``readyz_path`` answered in front of it.

    An empty path is not answered. Only an exact match of ``scope["path"]``
    (as the client sent it, before any ``root_path`` handling) is taken; any
    other request, method, or scope type reaches ``app`` as it came.
    """
    routes: dict[str, Callable[[], Awaitable[HealthReport]]] = {}
    if healthz_path:
        routes[healthz_path] = checker.healthz
    if readyz_path:
        routes[readyz_path] = checker.readyz
    if not routes:
        return app

    async def with_health(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            route = routes.get(scope["path"])
            method = scope.get("method", "GET")
            if route is not None and method in ("GET", "HEAD"):
                await send_report(send, await route(), head=method == "HEAD")
                return
        await app(scope, receive, send)

    return with_health
