"""``manage.py runworker CHANNEL [CHANNEL ...]``: background consumers, as in Channels.

The ``"channel"`` part of ``settings.ASGI_APPLICATION`` (usually a
``ChannelNameRouter``) handles messages sent with
``channel_layer.send("thumbnails", {...})``. This command runs it for the named
channels, receiving from the channel layer, until Ctrl-C or SIGTERM (both stop
it gracefully). It is ``channels-runtime worker`` for people who start
everything through ``manage.py``; both use :func:`channels_runtime.worker.run_worker`.

Messages reach a worker only through a layer shared between processes (Redis):
the in-memory layer lives inside one process, so nothing sent from a web
server process can arrive here.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError, CommandParser

from ... import DEFAULT_CHANNEL_LAYER
from ...exceptions import InvalidChannelLayerError
from ...layers import channel_layers
from ...routing import get_default_application
from .runserver import WORKER_CLASSES, check_project, check_worker_class


class Command(BaseCommand):
    help = (
        "Runs the 'channel' consumers of ASGI_APPLICATION for the given channel names, "
        "receiving from the channel layer."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("channels", nargs="+", metavar="CHANNEL", help="Channel names to run.")
        parser.add_argument(
            "--layer",
            default=DEFAULT_CHANNEL_LAYER,
            help="Channel layer alias in CHANNEL_LAYERS (default: %(default)s).",
        )
        parser.add_argument(
            "--worker-class",
            "-k",
            choices=WORKER_CLASSES,
            default="asyncio",
            help="The event loop to run on (default: asyncio).",
        )
        parser.add_argument(
            "--graceful-timeout",
            type=float,
            default=10.0,
            help="At shutdown, how long messages being handled get to finish (default: 10).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        from ...worker import WorkerConfigurationError, run_worker_sync

        try:
            check_worker_class(options["worker_class"])
        except ImproperlyConfigured as exc:
            raise CommandError(str(exc)) from None
        check_project(options["worker_class"], route="manage.py runworker")
        try:
            application = get_default_application()
        except ImproperlyConfigured as exc:
            raise CommandError(str(exc)) from None
        alias = options["layer"]
        if alias not in channel_layers:
            raise CommandError(
                f"No channel layer {alias!r} in CHANNEL_LAYERS; a worker needs one to receive from."
            )
        channels = options["channels"]
        self.stdout.write(
            f"Running worker for channel(s) {', '.join(channels)} "
            f"(layer {alias!r}, {options['worker_class']}). Quit with CONTROL-C."
        )
        self.stdout.flush()
        try:
            run_worker_sync(
                application,
                channels,
                layer_alias=alias,
                worker_class=options["worker_class"],
                graceful_timeout=options["graceful_timeout"],
            )
        except (InvalidChannelLayerError, WorkerConfigurationError) as exc:
            raise CommandError(str(exc)) from None
        except KeyboardInterrupt:
            pass
        self.stdout.write("Worker stopped.")
