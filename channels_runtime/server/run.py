"""``channels-runtime serve``: processes, logging and exit statuses.

Why not ``hypercorn.run.run()``? With one or more worker processes it returns
0 even when a worker crashed (for example when lifespan startup failed), so a
process manager would never learn that the service is broken; and its
single-process trio mode dies on SIGTERM without any cleanup. Here:

* one worker (the default) runs in this process: ``serve_until`` on the chosen
  loop, signals handled through anyio, so every worker class shuts down the
  same graceful way and an error becomes exit status 1;
* ``--workers N`` (or ``--reload``) binds the sockets here and runs N child
  processes, each an in-process server as above on the shared sockets. The
  parent watches them: a child that fails stops the rest and its status
  becomes ours; a child that exits cleanly on its own (``max_requests``) is
  replaced. Each child watches a pipe from the parent, so it shuts down when
  the parent asks, and also if the parent dies.

Exit statuses: 0 after a graceful shutdown, 1 when the server failed (a worker
crashed, lifespan startup failed, a second signal forced the stop), 2 for
configuration and usage errors (reported before anything is started).
"""

from __future__ import annotations

import errno
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any

import anyio
from hypercorn.config import Config, Sockets

from ..asgi import ASGIApp
from .config import build_config
from .project import (
    INMEMORY_BACKEND,
    ProjectError,
    describe_channel_layer,
    ensure_default_channel_layer,
    import_application,
    prepare_django,
    settings_hint_for,
    split_target,
)
from .serve import ServeResult, bind_sockets, close_sockets, serve_until, socket_urls
from .signals import SHUTDOWN_SIGNALS, signal_name, wait_until_readable

__all__ = ["ServeSpec", "anyio_backend", "configure_logging", "run_serve"]

logger = logging.getLogger("channels_runtime.server")

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

#: How often ``--reload`` looks at the source files.
RELOAD_POLL_INTERVAL = 1.0


def anyio_backend(worker_class: str, *, debug: bool = False) -> tuple[str, dict[str, Any]]:
    """The ``anyio.run`` backend and options for a Hypercorn worker class name.

    ``debug`` (Hypercorn's setting) turns on asyncio's debug mode; trio has none.
    """
    if worker_class == "trio":
        return "trio", {}
    options: dict[str, Any] = {"debug": True} if debug else {}
    if worker_class == "uvloop":
        options["use_uvloop"] = True
    return "asyncio", options


class _HideHypercornBanner(logging.Filter):
    """Drops Hypercorn's per-worker "Running on ..." lines: our own startup line
    already names every address, once, with the rest of the setup."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Running on ")


def configure_logging(level: str) -> None:
    """Send channels_runtime's log lines to stderr in Hypercorn's style, at ``level``.

    Only our own logger tree is touched (and only if nothing configured it),
    so Django's ``LOGGING`` setting keeps working for everything else. Called
    again once the project is loaded, because a ``LOGGING`` setting with
    ``disable_existing_loggers`` would otherwise silence the lines after it.
    """
    root = logging.getLogger("channels_runtime")
    root.setLevel(level.upper())
    # "hypercorn.error" too: it exists early only because the filter below is
    # attached to it, which must not get it disabled by the project's LOGGING.
    for name in (
        "channels_runtime",
        "channels_runtime.server",
        "channels_runtime.worker",
        "hypercorn.error",
    ):
        logging.getLogger(name).disabled = False
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(
            logging.Formatter(
                "[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s", "%Y-%m-%d %H:%M:%S %z"
            )
        )
        root.addHandler(handler)
    banner_filter = _HideHypercornBanner()
    error_logger = logging.getLogger("hypercorn.error")
    if not any(isinstance(f, _HideHypercornBanner) for f in error_logger.filters):
        error_logger.addFilter(banner_filter)


@dataclass
class ServeSpec:
    """Everything a server process needs, in a form that survives pickling to a child."""

    target: str
    settings: dict[str, Any]
    log_level: str = "info"
    sources: list[str] = field(default_factory=list)


@dataclass
class _Project:
    target: str
    app: ASGIApp
    layer: str
    default_layer: bool


def _load_project(spec: ServeSpec) -> _Project:
    target = split_target(spec.target)
    chosen = prepare_django(target.module)
    app = import_application(target, settings_hint=chosen or settings_hint_for(target.module))
    default_layer = ensure_default_channel_layer()
    return _Project(str(target), app, describe_channel_layer(), default_layer)


def _describe_failure(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _is_expected_failure(exc: BaseException) -> bool:
    """Errors whose message says it all, so a traceback would only add noise."""
    from hypercorn.utils import LifespanFailureError, LifespanTimeoutError

    return isinstance(exc, LifespanFailureError | LifespanTimeoutError)


def _serve_in_this_process(
    app: ASGIApp,
    config: Config,
    sockets: Sockets,
    *,
    triggers: tuple[Callable[[], Any], ...] = (),
    signals: tuple[signal.Signals, ...] = SHUTDOWN_SIGNALS,
) -> int:
    backend, options = anyio_backend(config.worker_class, debug=bool(config.debug))
    try:
        result: ServeResult = anyio.run(
            partial(serve_until, app, config, triggers=triggers, signals=signals, sockets=sockets),
            backend=backend,
            backend_options=options,
        )
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
    except Exception as exc:
        if _is_expected_failure(exc):
            logger.error("Server stopped: %s", _describe_failure(exc))
        else:
            logger.exception("Server stopped by an error: %s", _describe_failure(exc))
        return EXIT_FAILURE
    if result.forced:
        return EXIT_FAILURE
    logger.info("Server stopped")
    return EXIT_OK


def run_serve(spec: ServeSpec) -> int:
    """Run ``channels-runtime serve`` as described by ``spec``; returns the exit status."""
    configure_logging(spec.log_level)
    config = build_config(spec.settings)
    try:
        project = _load_project(spec)
    except ProjectError as exc:
        logger.error("%s", exc)
        return EXIT_USAGE
    configure_logging(spec.log_level)
    try:
        sockets = bind_sockets(config)
    except OSError as exc:
        logger.error("Cannot listen on %s: %s", ", ".join(config.bind), exc.strerror or exc)
        return EXIT_FAILURE
    workers = max(config.workers, 1)
    urls = socket_urls(sockets)
    layer = project.layer
    if project.default_layer:
        layer += " (built-in default: the settings define no CHANNEL_LAYERS)"
    logger.info(
        "channels-runtime serving %s on %s | worker class %s | %d worker%s | channel layer %s",
        project.target,
        ", ".join(urls),
        config.worker_class,
        workers,
        "" if workers == 1 else "s",
        layer,
    )
    if workers > 1 and project.layer.endswith(INMEMORY_BACKEND.rpartition(".")[2]):
        logger.warning(
            "The in-memory channel layer lives inside one process: with %d workers, "
            "group messages do not reach consumers in the other workers. Configure a "
            "shared layer (Redis) in CHANNEL_LAYERS.",
            workers,
        )
    if config.pid_path:
        Path(config.pid_path).write_text(f"{os.getpid()}\n")
    try:
        if workers == 1 and not config.use_reloader:
            return _serve_in_this_process(project.app, config, sockets)
        return _Supervisor(spec, config, sockets, workers).run()
    finally:
        if config.pid_path:
            Path(config.pid_path).unlink(missing_ok=True)


# -- worker processes ---------------------------------------------------------


def _worker_process(spec: ServeSpec, sockets: Sockets, stop_pipe: Any) -> None:
    """Entry point of one worker process (started with the "spawn" method)."""
    # Ctrl-C reaches every process of the terminal's group; the parent turns it
    # into an orderly stop through the pipe, so the workers ignore it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    configure_logging(spec.log_level)
    try:
        project = _load_project(spec)
    except ProjectError as exc:
        logger.error("%s", exc)
        sys.exit(EXIT_USAGE)
    configure_logging(spec.log_level)
    config = build_config(spec.settings)

    async def parent_says_stop() -> None:
        await wait_until_readable(stop_pipe.fileno())

    status = _serve_in_this_process(
        project.app,
        config,
        sockets,
        triggers=(parent_says_stop,),
        signals=(signal.SIGTERM,),
    )
    sys.exit(status)


@dataclass
class _Child:
    process: Any  # multiprocessing.process.BaseProcess
    stop_writer: Any  # multiprocessing.connection.Connection

    def ask_to_stop(self) -> None:
        if not self.stop_writer.closed:
            self.stop_writer.close()


def _status_of(exitcode: int) -> int:
    """A child's exit code as a shell would report it (128 + N when killed by signal N)."""
    return 128 - exitcode if exitcode < 0 else exitcode


def _watched_files() -> dict[Path, float]:
    """Source files of the loaded modules outside the Python installation."""
    prefixes = tuple({os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)})
    files: dict[Path, float] = {}
    for module in list(sys.modules.values()):
        filename = getattr(module, "__file__", None)
        if not filename or os.path.realpath(filename).startswith(prefixes):
            continue
        path = Path(filename)
        try:
            files[path] = path.stat().st_mtime
        except OSError:
            continue
    return files


def _changed(files: dict[Path, float]) -> Path | None:
    for path, mtime in files.items():
        try:
            if path.stat().st_mtime != mtime:
                return path
        except OSError:
            return path
    return None


class _Supervisor:
    """Runs and watches the worker processes; see the module docstring."""

    def __init__(self, spec: ServeSpec, config: Config, sockets: Sockets, workers: int) -> None:
        self.spec = spec
        self.config = config
        self.sockets = sockets
        self.workers = workers
        self.context = multiprocessing.get_context("spawn")
        self.children: list[_Child] = []
        self.stop_reason: str | None = None
        self.reload_reason: str | None = None
        self._wake_reader, self._wake_writer = os.pipe()
        os.set_blocking(self._wake_reader, False)
        os.set_blocking(self._wake_writer, False)

    # Signal handlers run between bytecodes of the main thread; they only record
    # the request and wake the wait below.

    def _on_stop_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.stop_reason is not None:
            logger.warning("%s again: stopping the workers now", signal_name(signum))
            for child in self.children:
                if child.process.is_alive():
                    child.process.kill()
        self.stop_reason = self.stop_reason or signal_name(signum)
        self._wake()

    def _on_reload_signal(self, signum: int, frame: FrameType | None) -> None:
        self.reload_reason = signal_name(signum)
        self._wake()

    def _wake(self) -> None:
        try:
            os.write(self._wake_writer, b"x")
        except OSError as exc:  # a full pipe already wakes the loop
            if exc.errno != errno.EAGAIN:
                raise

    def _spawn(self) -> None:
        reader, writer = self.context.Pipe(duplex=False)
        process = self.context.Process(
            target=_worker_process,
            args=(self.spec, self.sockets, reader),
            name="channels-runtime worker",
            daemon=False,
        )
        # Started with SIGINT ignored so the child inherits that from its first
        # instruction on, not only once it has imported enough to ignore it itself.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            process.start()
        finally:
            signal.signal(signal.SIGINT, previous)
        reader.close()  # the child holds the only reading end now
        self.children.append(_Child(process, writer))

    def _stop_children(self) -> None:
        for child in self.children:
            child.ask_to_stop()

    def _reap(self, deadline: float | None) -> list[tuple[_Child, int]]:
        """Wait until a child exits, a signal arrives, or ``deadline``; return exited children."""
        timeout = RELOAD_POLL_INTERVAL if self.config.use_reloader else None
        if deadline is not None:
            remaining = max(deadline - time.monotonic(), 0.0)
            timeout = remaining if timeout is None else min(timeout, remaining)
        handles: list[Any] = [child.process.sentinel for child in self.children]
        multiprocessing.connection.wait([*handles, self._wake_reader], timeout)
        try:
            while os.read(self._wake_reader, 512):
                pass
        except BlockingIOError:
            pass
        exited = []
        for child in list(self.children):
            if child.process.exitcode is not None:
                child.process.join()
                child.ask_to_stop()
                self.children.remove(child)
                exited.append((child, child.process.exitcode))
        return exited

    def _restart_all(self, reason: str) -> None:
        logger.info("Reloading the workers (%s)", reason)
        self._stop_children()
        deadline = time.monotonic() + self._shutdown_allowance()
        while self.children and time.monotonic() < deadline:
            self._reap(deadline)
        for child in self.children:
            child.process.kill()
            child.process.join()
        self.children.clear()
        for _ in range(self.workers):
            self._spawn()

    def _shutdown_allowance(self) -> float:
        """How long workers may take to stop: the graceful period, lifespan shutdown, slack."""
        return float(self.config.graceful_timeout) + float(self.config.shutdown_timeout) + 5.0

    def run(self) -> int:
        handlers = {
            signal.SIGINT: signal.signal(signal.SIGINT, self._on_stop_signal),
            signal.SIGTERM: signal.signal(signal.SIGTERM, self._on_stop_signal),
            signal.SIGHUP: signal.signal(signal.SIGHUP, self._on_reload_signal),
        }
        try:
            return self._run()
        finally:
            for signum, handler in handlers.items():
                signal.signal(signum, handler)
            close_sockets(self.sockets)
            os.close(self._wake_reader)
            os.close(self._wake_writer)

    def _run(self) -> int:
        status = EXIT_OK
        watched = _watched_files() if self.config.use_reloader else {}
        for _ in range(self.workers):
            self._spawn()
        deadline: float | None = None
        while self.children:
            for child, exitcode in self._reap(deadline):
                pid = child.process.pid
                if exitcode == 0 and deadline is None:
                    logger.info("Worker %s exited; starting a new one", pid)
                    self._spawn()
                elif exitcode != 0:
                    if status == EXIT_OK:
                        status = _status_of(exitcode)
                    if deadline is None:
                        logger.error(
                            "Worker %s exited with status %s; stopping the server",
                            pid,
                            _status_of(exitcode),
                        )
                        self.stop_reason = self.stop_reason or "worker failure"
            if self.stop_reason is not None and deadline is None:
                logger.info("Shutting down (%s)", self.stop_reason)
                deadline = time.monotonic() + self._shutdown_allowance()
                close_sockets(self.sockets)  # no new connections queue up for nobody
                self._stop_children()
            elif deadline is None:
                reason = self.reload_reason
                if reason is None and watched:
                    changed = _changed(watched)
                    reason = f"{changed} changed" if changed else None
                if reason is not None:
                    self.reload_reason = None
                    self._restart_all(reason)
                    watched = _watched_files()
            if deadline is not None and time.monotonic() >= deadline and self.children:
                logger.error("Workers did not stop in time; killing them")
                for child in self.children:
                    child.process.kill()
                status = status or EXIT_FAILURE
        if status == EXIT_OK:
            logger.info("Server stopped")
        return status
