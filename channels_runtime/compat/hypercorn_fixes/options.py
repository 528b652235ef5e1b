"""The settings channels-runtime adds to Hypercorn's, and where the fixes read them.

They live in the same ``hypercorn.toml`` as Hypercorn's own settings, as flat
keys, so one file serves ``channels-runtime serve`` and plain ``hypercorn``:
Hypercorn's ``Config.from_mapping`` stores unknown keys as attributes, which is
where the fixes in this package look for them (``getattr`` with the default
below). ``serve`` validates them with the rest (see
:mod:`channels_runtime.server.config`).
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "DEFAULTS",
    "PERMESSAGE_DEFLATE",
    "PING_TIMEOUT",
    "WRITE_TIMEOUT",
    "option",
]

#: Seconds a WebSocket may leave a ping unanswered (no pong and no other frame)
#: before the connection is dropped as dead. Only used when Hypercorn's
#: ``websocket_ping_interval`` is set. Daphne's default is 30 s.
PING_TIMEOUT = "websocket_ping_timeout"

#: Seconds a write to a client may wait for room in the socket buffer (the
#: client is not reading) before the connection is closed as a slow client.
WRITE_TIMEOUT = "write_timeout"

#: Whether WebSocket handshakes may negotiate permessage-deflate (RFC 7692).
#: Hypercorn 0.18 always does (pgjones/hypercorn#307).
PERMESSAGE_DEFLATE = "websocket_permessage_deflate"

#: The value each setting has when neither the file nor a flag gives one.
DEFAULTS: dict[str, Any] = {
    PING_TIMEOUT: 30.0,
    WRITE_TIMEOUT: 30.0,
    PERMESSAGE_DEFLATE: True,
}


def option(config: Any, name: str) -> Any:
    """The value of channels-runtime setting ``name`` on a Hypercorn ``config``."""
    return getattr(config, name, DEFAULTS[name])
