"""What ``channels-runtime serve`` starts for metrics, and when it stops it.

:func:`metrics_bind` decides whether metrics are on: the ``metrics_bind``
server setting (``--metrics-bind`` or ``hypercorn.toml``) wins, else the Django
setting ``CHANNELS_RUNTIME_METRICS_BIND``; neither means off, and nothing is
started or counted.

:class:`MetricsRun` is one serve run's share: a private directory the workers
publish into (created here, removed by :meth:`MetricsRun.stop`), the
:class:`~channels_runtime.metrics.aggregate.Aggregator` that sums it, and the
:class:`~channels_runtime.metrics.exposition.MetricsServer` answering
``/metrics`` (its ``server`` attribute: other routes, such as health checks,
are added there). ``run.py`` owns it: started before the workers, told of each
worker it reaps (:meth:`MetricsRun.worker_exited`), stopped on every way out.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ..server.config import ConfigError, check_setting
from .exposition import MetricsServer, Request, Response

__all__ = ["PREFIX", "SETTING", "MetricsRun", "metrics_bind", "sweep_stale_directories"]

#: The Django setting naming the metrics bind (the server setting wins over it).
SETTING = "CHANNELS_RUNTIME_METRICS_BIND"

#: A run's directory is ``<tempdir>/<PREFIX><pid of its owner>-<random>``.
PREFIX = "channels-runtime-metrics-"


def sweep_stale_directories(parent: str | os.PathLike[str] | None = None) -> list[Path]:
    """Remove the metrics directories whose owner process is gone; return them.

    A serve run removes its own directory on every way out but SIGKILL; the
    next run on the machine removes what such a run left. Only directories of
    this user whose owner pid no longer exists are touched.
    """
    removed = []
    for path in Path(parent or tempfile.gettempdir()).glob(PREFIX + "*"):
        owner = path.name[len(PREFIX) :].partition("-")[0]
        try:
            if not owner.isdigit() or path.stat().st_uid != os.getuid():
                continue
            os.kill(int(owner), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
        except OSError:
            continue  # alive under another user, or vanished meanwhile
    return removed


def metrics_bind(config: Any) -> str | None:
    """The metrics bind for this run, or None when metrics are off. Raises ConfigError.

    ``config`` is the Hypercorn ``Config`` built from the checked settings; the
    Django setting is read only when the server settings name no bind, and
    checked the same way. The ``metrics`` extra (``prometheus_client``) must be
    installed when a bind is set.
    """
    bind = getattr(config, "metrics_bind", None)
    if bind is None:
        from django.conf import settings

        if not settings.configured:
            return None
        bind = getattr(settings, SETTING, None)
        if bind is None:
            return None
        bind = check_setting("metrics_bind", bind, source=f"settings.{SETTING}")
    if importlib.util.find_spec("prometheus_client") is None:
        raise ConfigError(
            f"metrics bind {bind!r}: metrics need the prometheus_client package "
            "(pip install 'channels-runtime[metrics]')",
            key="metrics_bind",
            value=bind,
        )
    return str(bind)


class MetricsRun:
    """One serve run's metrics directory, aggregator and endpoint; see the module docstring.

    ``supervised``: the workers are child processes (``--workers N`` or
    ``--reload``) and this process is their supervisor.
    """

    def __init__(self, bind: str, *, supervised: bool) -> None:
        from . import catalog  # noqa: F401 (every metric defined, so the scrape knows them all)
        from .aggregate import Aggregator

        self.supervised = supervised
        sweep_stale_directories()
        self.directory = tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-")
        self.aggregator = Aggregator(self.directory, supervised=supervised)
        self.server = MetricsServer(bind, {"/metrics": self._metrics})

    def _metrics(self, request: Request) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(200, self.aggregator.render(), CONTENT_TYPE_LATEST)

    def start(self) -> None:
        """Listen on the metrics bind. Raises OSError (and cleans up) when it cannot."""
        try:
            self.server.start()
        except BaseException:
            self.stop()
            raise

    def worker_exited(self, pid: int) -> None:
        """Worker ``pid`` was reaped: its counts stay, its gauges go (see ``aggregate``)."""
        self.aggregator.retire(pid)

    def stop(self) -> None:
        """Stop the endpoint and remove the directory (idempotent)."""
        self.server.stop()
        shutil.rmtree(self.directory, ignore_errors=True)
