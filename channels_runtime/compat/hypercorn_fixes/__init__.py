"""Fixes for Hypercorn defects that reach channels-runtime's users, at one seam.

channels-runtime serves with Hypercorn and does not fork it; where Hypercorn
misbehaves in ways Daphne users would not expect, the fix lives in one module
of this package, patched in place by :func:`install`:

* :mod:`.app_inbox`: the final disconnect is never stuck behind a full
  application queue (a reset client's consumer is always told it left), and
  the queue an idle connection holds is a few lists, not four deques;
* :mod:`.ws_stream`: close codes (pgjones/hypercorn#127), protocol errors,
  oversized messages, bytes after the upgrade request (#225), keepalive
  with a pong timeout, a close-handshake timeout, the permessage-deflate
  switch (#307);
* :mod:`.tcp`: bounded writes to clients that stop reading, bounded closes,
  one connection's error never ends the worker, and a way for the server's
  shutdown to cut every connection at its deadline;
* :mod:`.h2_protocol`: an HTTP/2 connection that ends mid-response no longer
  leaks, and an h2c upgrade with bad settings is answered over HTTP/1.1.

Each module docstring says what Hypercorn does and what changes. They were
checked against the Hypercorn versions in :data:`CHECKED_VERSIONS`; on any
other version :func:`install` still installs them but logs a warning once,
so an upgrade is noticed. If a name they patch is missing, it installs
nothing and logs an error naming it: the server then behaves as plain
Hypercorn instead of failing mid-request.

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
    "missing_patch_points",
]

logger = logging.getLogger("channels_runtime.server")

#: Hypercorn releases these fixes were written and tested against.
CHECKED_VERSIONS = ("0.17.3", "0.18.0")

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


#: What the fixes patch or call, by module: a release that renames one of these
#: must leave Hypercorn unpatched (and say so), not break in the middle of serving.
_PATCH_POINTS: dict[str, tuple[str, ...]] = {
    "hypercorn.protocol.h11": ("WSStream", "H11Protocol._check_protocol"),
    "hypercorn.protocol.h2": ("WSStream", "H2Protocol.handle"),
    "hypercorn.protocol.ws_stream": (
        "ASGIWebsocketState",
        "FrameTooLargeError",
        "Handshake",
        "PerMessageDeflate",
        "WSStream._accept",
        "WSStream._handle_events",
        "WSStream._send_error_response",
        "WSStream._send_pings",
        "WSStream._send_wsproto_event",
        "WSStream.app_send",
        "WSStream.handle",
    ),
    "hypercorn.asyncio.task_group": ("TaskGroup.spawn_app", "_handle"),
    "hypercorn.asyncio.tcp_server": (
        "TCPServer._close",
        "TCPServer._read_data",
        "TCPServer.protocol_send",
        "TCPServer.run",
    ),
    "hypercorn.trio.task_group": ("TaskGroup.spawn_app", "_handle"),
    "hypercorn.trio.tcp_server": (
        "TCPServer._close",
        "TCPServer._read_data",
        "TCPServer.protocol_send",
        "TCPServer.run",
    ),
}

#: wsproto internals :class:`.ws_stream.BoundedPerMessageDeflate` reads (wsproto 1.2, 1.3).
_DEFLATE_ATTRIBUTES = ("_decompressor", "_inbound_compressed", "_inbound_is_compressible")


def missing_patch_points() -> list[str]:
    """The Hypercorn names the fixes need that the installed Hypercorn lacks."""
    import importlib

    missing = []
    for module_name, names in _PATCH_POINTS.items():
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            if module_name.startswith("hypercorn.trio"):
                continue  # trio is an optional extra
            missing.append(module_name)
            continue
        for dotted in names:
            target: object = module
            for part in dotted.split("."):
                target = getattr(target, part, None)
                if target is None:
                    missing.append(f"{module_name}.{dotted}")
                    break
    from wsproto.extensions import PerMessageDeflate

    deflate = PerMessageDeflate()
    missing.extend(
        f"wsproto.extensions.PerMessageDeflate().{name}"
        for name in _DEFLATE_ATTRIBUTES
        if not hasattr(deflate, name)
    )
    return missing


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
        missing = missing_patch_points()
        if missing:
            logger.error(
                "Hypercorn %s lacks what channels-runtime's fixes for it patch (%s); "
                "serving with Hypercorn's own behaviour",
                found,
                ", ".join(missing),
            )
            return False
        if found not in CHECKED_VERSIONS:
            logger.warning(
                "Hypercorn %s is installed; channels-runtime's fixes for it were checked "
                "against %s only",
                found,
                ", ".join(CHECKED_VERSIONS),
            )
        from . import app_inbox, h2_protocol, tcp, ws_stream

        app_inbox.install()
        ws_stream.install()
        tcp.install()
        h2_protocol.install()
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
