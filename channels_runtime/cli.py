"""The ``channels-runtime`` command: ``serve`` a project, or run a background ``worker``.

Settings for ``serve`` come from four places, later ones winning: Hypercorn's
defaults, the safer ones of :data:`~channels_runtime.server.config.SERVE_DEFAULTS`,
a Hypercorn TOML file (``--config``, or ``./hypercorn.toml`` when it
exists), and the flags. Every value is checked before anything starts; a bad
one is reported with its source, key and value, and the exit status is 2.

Both commands install the ``channels`` alias (:mod:`channels_runtime.alias`)
before they import the project, so an unmodified Channels project runs; and
``serve`` refuses, with exit status 2, a project that cannot run on the chosen
worker class (:mod:`channels_runtime.server.preflight`).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from . import DEFAULT_CHANNEL_LAYER
from .server.config import (
    DEFAULT_CONFIG_FILE,
    LOG_LEVELS,
    SERVE_DEFAULTS,
    WORKER_CLASSES,
    ConfigError,
    check_combination,
    check_setting,
    load_toml,
)

__all__ = ["build_parser", "main"]

EXIT_USAGE = 2

#: serve flag (argparse dest) -> Hypercorn setting it overrides.
_FLAG_SETTINGS = {
    "bind": ("bind", "--bind"),
    "worker_class": ("worker_class", "--worker-class"),
    "workers": ("workers", "--workers"),
    "reload": ("use_reloader", "--reload"),
    "root_path": ("root_path", "--root-path"),
    "graceful_timeout": ("graceful_timeout", "--graceful-timeout"),
    "log_level": ("loglevel", "--log-level"),
    "access_logfile": ("accesslog", "--access-logfile"),
    "drain_seconds": ("drain_seconds", "--drain-seconds"),
    "metrics_bind": ("metrics_bind", "--metrics-bind"),
}

_SERVE_EPILOG = f"""\
Settings are read from Hypercorn's defaults, then the TOML file (--config, or
./{DEFAULT_CONFIG_FILE} when present), then these flags. Unknown keys and bad values
are errors (exit status 2). SIGINT/SIGTERM shut down gracefully on every worker
class: the server stops accepting, open WebSockets are closed with code 1001 and
their consumers' disconnect handlers run, HTTP requests in flight get up to
--graceful-timeout seconds, then channel layers are closed. A second signal
stops at once. Exit status: 0 after a graceful shutdown, 1 if the server or a
worker failed (including lifespan startup failure), 2 for usage/config errors,
including settings that cannot run on the chosen worker class (an asyncio-only
channel layer or application on trio). Before the project is imported,
'channels', 'channels_redis' and 'daphne' are made to resolve to channels_runtime
(CHANNELS_RUNTIME_ALIAS=0 turns that off).
"""

_WORKER_EPILOG = """\
Each channel gets one application instance at a time, called with the scope
{"type": "channel", "channel": NAME} and fed the channel's messages from the
channel layer. SIGINT/SIGTERM stop receiving, let messages being handled
finish (up to --graceful-timeout), then exit 0. Exit status 1 if the channel
layer fails, 2 for usage/configuration errors.
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand (also used to render ``--help``)."""
    parser = argparse.ArgumentParser(
        prog="channels-runtime",
        description="Serve a Django project that uses channels_runtime, with Hypercorn "
        "on asyncio, uvloop or trio; or run a background channel worker.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    serve = commands.add_parser(
        "serve",
        help="serve an ASGI application with Hypercorn",
        description="Serve an ASGI application (HTTP and WebSocket) with Hypercorn.",
        epilog=_SERVE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument(
        "application",
        nargs="?",
        metavar="MODULE[:ATTR]",
        help="the application to serve, e.g. myproject.asgi (ATTR defaults to 'application'). "
        "DJANGO_SETTINGS_MODULE is taken from the environment, else MODULE's sibling "
        "'settings' module when it exists. The current directory is put on sys.path. "
        "May be omitted when the config file sets application_path.",
    )
    serve.add_argument(
        "-b",
        "--bind",
        action="append",
        metavar="ADDRESS",
        help="address to listen on; repeat for several: HOST:PORT, HOST, [IPV6]:PORT, "
        "unix:PATH or fd://N (default 127.0.0.1:8000)",
    )
    serve.add_argument(
        "-k",
        "--worker-class",
        metavar="CLASS",
        help=f"event loop for the workers: {', '.join(WORKER_CLASSES)} (default asyncio)",
    )
    serve.add_argument(
        "-w",
        "--workers",
        type=int,
        metavar="N",
        help="number of worker processes (default 1: serve in this process; more "
        "need a shared channel layer such as Redis for groups to span them)",
    )
    serve.add_argument(
        "-c",
        "--config",
        metavar="PATH",
        help=f"Hypercorn TOML config file (default ./{DEFAULT_CONFIG_FILE} if it exists)",
    )
    serve.add_argument(
        "--reload",
        action="store_true",
        default=None,
        help="restart the worker(s) when a source file of the project changes (development)",
    )
    serve.add_argument(
        "--access-log",
        action="store_true",
        default=None,
        help="write an access log line per request to stdout",
    )
    serve.add_argument(
        "--access-logfile",
        metavar="PATH",
        help="write the access log to PATH ('-' is stdout)",
    )
    serve.add_argument(
        "--root-path",
        metavar="PATH",
        help="ASGI root_path: the URL prefix the app is mounted under behind a proxy",
    )
    serve.add_argument(
        "--graceful-timeout",
        type=float,
        metavar="SECONDS",
        help="at shutdown, how long open connections get to finish (default 3)",
    )
    serve.add_argument(
        "--log-level",
        metavar="LEVEL",
        help=f"log level: {', '.join(LOG_LEVELS)} (default info)",
    )
    serve.add_argument(
        "--drain-seconds",
        type=float,
        metavar="SECONDS",
        help="on SIGTERM, first report not ready (/readyz: 503) while still accepting and "
        "serving for SECONDS, so load balancers stop sending clients; then shut down "
        "(default 0: no drain)",
    )
    serve.add_argument(
        "--metrics-bind",
        metavar="HOST:PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics, on a bind of its own "
        "(default: off; needs the 'metrics' extra). Also hypercorn.toml's metrics_bind or "
        "the CHANNELS_RUNTIME_METRICS_BIND setting",
    )

    worker = commands.add_parser(
        "worker",
        help="run background consumers for named channels",
        description="Run the 'channel' part of an application (ChannelNameRouter) for the "
        "given channels, receiving from the channel layer.",
        epilog=_WORKER_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    worker.add_argument("channels", nargs="+", metavar="CHANNEL", help="channel names to consume")
    worker.add_argument(
        "--application",
        metavar="PATH",
        help="the application, as dotted.path.attr or module:attr (default: "
        "settings.ASGI_APPLICATION)",
    )
    worker.add_argument(
        "--layer",
        default=DEFAULT_CHANNEL_LAYER,
        metavar="ALIAS",
        help="channel layer alias in CHANNEL_LAYERS (default 'default')",
    )
    worker.add_argument(
        "-k",
        "--worker-class",
        default="asyncio",
        metavar="CLASS",
        help=f"event loop: {', '.join(WORKER_CLASSES)} (default asyncio)",
    )
    worker.add_argument(
        "--graceful-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="at shutdown, how long messages being handled get to finish (default 10)",
    )
    worker.add_argument(
        "--log-level",
        default="info",
        metavar="LEVEL",
        help=f"log level: {', '.join(LOG_LEVELS)} (default info)",
    )
    return parser


def _usage_error(command: str, message: str) -> int:
    print(f"channels-runtime {command}: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def serve_settings(args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    """The checked Hypercorn settings for ``serve``: file first, then flags on top.

    Returns the settings and the sources used (for messages). Raises ConfigError.
    """
    sources: list[str] = []
    settings: dict[str, Any] = dict(SERVE_DEFAULTS)
    path = args.config
    if path is None and os.path.isfile(DEFAULT_CONFIG_FILE):
        path = DEFAULT_CONFIG_FILE
    if path is not None:
        settings.update(load_toml(path))
        sources.append(path)
    if args.access_log:
        args.access_logfile = args.access_logfile or "-"
    for dest, (key, flag) in _FLAG_SETTINGS.items():
        value = getattr(args, dest)
        if value is not None:
            settings[key] = check_setting(key, value, source=flag)
    check_combination(settings)
    return settings, sources


def _serve(args: argparse.Namespace) -> int:
    from .server.run import ServeSpec, run_serve

    try:
        settings, sources = serve_settings(args)
    except ConfigError as exc:
        return _usage_error("serve", str(exc))
    target = args.application or settings.get("application_path")
    if not target:
        return _usage_error(
            "serve", "no application given: pass MODULE[:ATTR], e.g. myproject.asgi"
        )
    settings.pop("application_path", None)
    log_level = str(settings.get("loglevel", "info")).lower()
    spec = ServeSpec(target=target, settings=settings, log_level=log_level, sources=sources)
    return run_serve(spec)


def _worker(args: argparse.Namespace) -> int:
    from .worker import WorkerOptions, run_worker_command

    try:
        worker_class = check_setting("worker_class", args.worker_class, source="--worker-class")
        log_level = check_setting("loglevel", args.log_level, source="--log-level")
        graceful = check_setting(
            "graceful_timeout", args.graceful_timeout, source="--graceful-timeout"
        )
    except ConfigError as exc:
        return _usage_error("worker", str(exc))
    options = WorkerOptions(
        channels=list(args.channels),
        application=args.application,
        layer_alias=args.layer,
        worker_class=worker_class,
        graceful_timeout=graceful,
        log_level=log_level.lower(),
    )
    return run_worker_command(options)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``channels-runtime`` script; returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    return _worker(args)


if __name__ == "__main__":
    sys.exit(main())
