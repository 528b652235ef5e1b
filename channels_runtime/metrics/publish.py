"""Worker side: copy the in-process metrics to a file every half second.

Each worker process writes everything it has counted so far (cumulative
values, not deltas) to ``<directory>/<pid>.json``, replacing the file
atomically, so the process answering scrapes
(:mod:`channels_runtime.metrics.aggregate`) always reads a whole copy. This
runs as one task next to the server, never on the path of a message: the hot
path only adds to plain numbers (:mod:`channels_runtime.metrics.core`).

A scrape therefore sees values up to :data:`FLUSH_INTERVAL` old. The last copy
is written when the server has stopped, so a worker that exits on its own
(``max_requests``, SIGTERM) leaves its final counts; one killed with SIGKILL
loses at most the last interval's.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio

from ..exception_groups import failures_in
from . import core

__all__ = ["FLUSH_INTERVAL", "Publisher", "serve_publishing"]

#: Seconds between two copies of a worker's metrics.
FLUSH_INTERVAL = 0.5

T = TypeVar("T")

logger = logging.getLogger("channels_runtime.metrics")


class Publisher:
    """Writes this process's metrics to ``directory`` (see the module docstring).

    ``include_process``: also copy this process's ``process_*`` and
    ``python_gc_*`` samples, for a scrape answered by another process
    (the supervisor of ``--workers N``), which cannot read them itself.
    """

    def __init__(self, directory: str | os.PathLike[str], *, include_process: bool) -> None:
        self.directory = Path(directory)
        self.pid = os.getpid()
        self.path = self.directory / f"{self.pid}.json"
        self._temporary = self.directory / f"{self.pid}.json.tmp"
        self.include_process = include_process
        self._process_registry: Any = None
        self._failing = False

    def _process_samples(self) -> list[Any]:
        if not self.include_process:
            return []
        if self._process_registry is None:
            # Made at the first flush, not before the server starts: importing
            # prometheus_client would delay every worker's startup.
            from prometheus_client import CollectorRegistry, GCCollector, ProcessCollector

            self._process_registry = CollectorRegistry(auto_describe=False)
            ProcessCollector(registry=self._process_registry)
            GCCollector(registry=self._process_registry)
        return [
            [family.name, family.type, family.documentation, family.unit,
             [[s.name, s.labels, s.value] for s in family.samples]]
            for family in self._process_registry.collect()
        ]  # fmt: skip

    def flush(self) -> bool:
        """Write the current values (cumulative) to this process's file.

        A failure to write (a full disk, the directory removed under a worker
        whose supervisor died) is logged, once until a write succeeds again, and
        never stops the server; it returns False.
        """
        data = {"pid": self.pid, "metrics": core.snapshot(), "process": self._process_samples()}
        try:
            self._temporary.write_text(json.dumps(data, separators=(",", ":")))
            os.replace(self._temporary, self.path)
        except OSError as exc:
            if not self._failing:
                logger.warning("Cannot publish metrics to %s: %s", self.path, exc)
            self._failing = True
            return False
        self._failing = False
        return True

    async def run(self) -> None:
        """Flush every :data:`FLUSH_INTERVAL` seconds until cancelled."""
        while True:
            await anyio.sleep(FLUSH_INTERVAL)
            self.flush()


async def serve_publishing(publisher: Publisher, serve: Callable[[], Awaitable[T]]) -> T:
    """Run ``serve()`` with metrics on, flushing them beside it; the last flush after it.

    ``serve()``'s own exception comes out unwrapped (the command line tells
    failures apart by their type), not in the task group's exception group.
    """
    from . import enable

    enable()
    result: list[T] = []
    try:
        async with anyio.create_task_group() as group:
            group.start_soon(publisher.run)
            result.append(await serve())
            group.cancel_scope.cancel()
    except BaseExceptionGroup as exc_group:
        leaves = failures_in(exc_group)
        if len(leaves) == 1:
            raise leaves[0] from None
        raise
    finally:
        publisher.flush()
    return result[0]
