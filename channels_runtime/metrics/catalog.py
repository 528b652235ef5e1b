"""Imports every concept module, so :data:`~channels_runtime.metrics.core.REGISTRY` is complete.

The process answering scrapes may never run the code that imports a concept
module (the supervisor of ``--workers N`` runs no consumer), yet must expose
every metric, with zeros where nothing happened yet.
"""

from __future__ import annotations

from . import connections, consumers, http, layers, outbound

__all__ = ["connections", "consumers", "http", "layers", "outbound"]
