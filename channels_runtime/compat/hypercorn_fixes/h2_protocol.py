"""HTTP/2: connections that end mid-response, and h2c upgrades with bad settings.

Two Hypercorn 0.17.3/0.18.0 behaviours, found by the fuzz test
(``tests/test_server_fuzz.py``):

* **A client that leaves while a response is being sent leaks the
  connection for good.** When the connection closes, Hypercorn's
  ``H2Protocol`` closes its streams but not their send buffers, and its send
  task stops. A stream whose application then finishes its response waits in
  ``StreamBuffer.drain()`` for a send task that is gone, so the connection's
  task group never ends, and its socket, task and consumer stay until the
  process exits. Here every buffer is closed with the connection, which
  wakes those waits.
* **An h2c upgrade request with a malformed** ``HTTP2-Settings`` **header.**
  Hypercorn answers ``101 Switching Protocols`` first and parses the
  settings afterwards; a bad value then raises from the middle of the
  switch (``binascii.Error``, h2's ``InvalidSettingsValueError``), and on
  the trio worker without these fixes that stops the whole server. Here the
  settings are checked before anything is sent, and a request whose settings
  do not parse (or that has none, or several) is served over HTTP/1.1 as if
  it had not asked to upgrade: a server may ignore ``Upgrade`` (RFC 9110,
  section 7.8), and must not upgrade without exactly one such header
  (RFC 7540, section 3.2.1).
"""

from __future__ import annotations

from typing import Any

__all__ = ["install", "settings_parse"]


def settings_parse(value: bytes) -> bool:
    """Whether an ``HTTP2-Settings`` header value is one h2 can start a connection from."""
    import h2.config
    import h2.connection

    connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    try:
        connection.initiate_upgrade_connection(value)
    except Exception:  # whatever h2 and base64 raise for a malformed value
        return False
    return True


def _patch_close(protocol_class: Any) -> None:
    original = protocol_class.handle
    if getattr(original, "_channels_runtime_fixed", False):
        return

    async def handle(self: Any, event: Any) -> None:
        from hypercorn.events import Closed

        await original(self, event)
        if isinstance(event, Closed):
            for buffer in list(self.stream_buffers.values()):
                await buffer.close()

    handle._channels_runtime_fixed = True  # type: ignore[attr-defined]
    handle.__wrapped__ = original  # type: ignore[attr-defined]
    protocol_class.handle = handle


def _patch_upgrade(protocol_class: Any) -> None:
    original = protocol_class._check_protocol
    if getattr(original, "_channels_runtime_fixed", False):
        return

    async def check_protocol(self: Any, event: Any) -> None:
        upgrade = b""
        settings: list[bytes] = []
        for name, value in event.headers:
            lowered = name.lower()
            if lowered == b"upgrade":
                upgrade = value.strip().lower()
            elif lowered == b"http2-settings":
                settings.append(value)
        if upgrade == b"h2c" and (len(settings) != 1 or not settings_parse(settings[0])):
            return  # not upgraded: answered over HTTP/1.1
        await original(self, event)

    check_protocol._channels_runtime_fixed = True  # type: ignore[attr-defined]
    check_protocol.__wrapped__ = original  # type: ignore[attr-defined]
    protocol_class._check_protocol = check_protocol


def install() -> None:
    """Patch Hypercorn's HTTP/2 and HTTP/1.1 protocols (idempotent)."""
    from hypercorn.protocol.h2 import H2Protocol
    from hypercorn.protocol.h11 import H11Protocol

    _patch_close(H2Protocol)
    _patch_upgrade(H11Protocol)
