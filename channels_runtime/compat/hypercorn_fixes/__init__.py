"""Fixes for Hypercorn defects that reach channels-runtime's users, at one seam.

channels-runtime serves with Hypercorn and does not fork it; where Hypercorn
misbehaves in ways Daphne users would not expect, the fix lives in one module
of this package, patched in place by :func:`install`:

* :mod:`.app_inbox`: the final disconnect is never stuck behind a full
  application queue (a reset client's consumer is always told it left);
* :mod:`.ws_stream`: close codes (pgjones/hypercorn#127), protocol errors,
  oversized messages, bytes after the upgrade request (#225), keepalive
  with a pong timeout, a close-handshake timeout, the permessage-deflate
  switch (#307);
* :mod:`.tcp`: bounded writes to clients that stop reading, bounded closes,
  one connection's error never ends the worker, and a way for the server's
  shutdown to cut every connection at its deadline.

Each module docstring says what Hypercorn does and what changes. They were
checked against the Hypercorn versions in :data:`CHECKED_VERSIONS`; on any
other version :func:`install` still installs them (the patched names are
checked to exist first) but logs a warning once, so an upgrade that changes
Hypercorn's internals is noticed rather than silently misbehaving.

``channels-runtime serve`` (and :func:`channels_runtime.server.serve`)
install the fixes before serving. Under plain ``hypercorn``,
``ProtocolTypeRouter`` installs them at lifespan startup. The environment
variable ``CHANNELS_RUNTIME_HYPERCORN_FIXES=0`` turns them all off, to
compare with Hypercorn's own behaviour.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from importlib.metadata import PackageNotFoundError, version

__all__ = [
    "CHECKED_VERSIONS",
    "DISABLE_VARIABLE",
    "install",
    "install_if_served_by_hypercorn",
    "installed",
]

logger = logging.getLogger("channels_runtime.server")

#: Hypercorn releases these fixes were written and tested against.
CHECKED_VERSIONS = ("0.18.0",)

#: Set to ``0`` to leave Hypercorn unpatched.
DISABLE_VARIABLE = "CHANNELS_RUNTIME_HYPERCORN_FIXES"

_lock = threading.Lock()
_installed = False


def _hypercorn_version() -> str:
    try:
        return version("hypercorn")
    except PackageNotFoundError:  # pragma: no cover - hypercorn is a dependency
        return "unknown"


def installed() -> bool:
    """Whether :func:`install` has patched Hypercorn in this process."""
    return _installed


def install() -> bool:
    """Patch Hypercorn with every fix of this package, once; return whether they are on."""
    global _installed
    if _installed:
        return True
    if os.environ.get(DISABLE_VARIABLE, "1").strip().lower() in {"0", "false", "no", "off"}:
        return False
    with _lock:
        if _installed:
            return True
        found = _hypercorn_version()
        if found not in CHECKED_VERSIONS:
            logger.warning(
                "Hypercorn %s is installed; channels-runtime's fixes for it were checked "
                "against %s only",
                found,
                ", ".join(CHECKED_VERSIONS),
            )
        from . import app_inbox, tcp, ws_stream

        app_inbox.install()
        ws_stream.install()
        tcp.install()
        _installed = True
    return True


def install_if_served_by_hypercorn() -> bool:
    """Install the fixes if this process runs a Hypercorn worker; return whether they are on.

    Called by ``ProtocolTypeRouter`` for the lifespan scope, which a server
    sends before it accepts connections: under plain ``hypercorn`` that is
    the only point where channels-runtime code runs in time. A process
    served by another server (Daphne, uvicorn) has not imported Hypercorn's
    worker modules and is left alone.
    """
    if _installed:
        return True
    if "hypercorn.asyncio.run" in sys.modules or "hypercorn.trio.run" in sys.modules:
        return install()
    return False
