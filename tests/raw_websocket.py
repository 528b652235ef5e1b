"""A WebSocket client on a bare socket, for clients that must misbehave.

Well-behaved client libraries always read, answer pings and close politely.
The hardening tests need clients that stop reading, never answer a ping,
reset the connection, or send bytes no library would; this one frames with
wsproto (which Hypercorn already depends on) and leaves every such choice to
the test.
"""

from __future__ import annotations

import socket
import struct
import time
from typing import Any

from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)
from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import CloseReason

__all__ = ["RawWebSocket", "http_request"]


class RawWebSocket:
    """One client connection; every step is explicit and bounded by ``timeout``."""

    def __init__(
        self,
        url: str,
        path: str,
        *,
        receive_buffer: int | None = None,
        deflate: bool = False,
        timeout: float = 10.0,
    ) -> None:
        host, port = url.split("://", 1)[1].rsplit(":", 1)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if receive_buffer is not None:
            # Before connect(), so the advertised window is small from the start.
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self.sock.settimeout(timeout)
        self.sock.connect((host, int(port)))
        self.timeout = timeout
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.path = path
        self.deflate = deflate
        #: The extensions the server accepted (by name), once the handshake is done.
        self.accepted_extensions: list[str] = []

    def handshake(self) -> None:
        """Send the upgrade request and wait for the server to accept it."""
        offer = [PerMessageDeflate()] if self.deflate else []
        request = Request(host="localhost", target=self.path, extensions=offer)
        self.sock.sendall(self.ws.send(request))
        for event in self.events():
            if isinstance(event, AcceptConnection):
                self.accepted_extensions = [extension.name for extension in event.extensions]
                return
            if isinstance(event, RejectConnection):
                raise AssertionError(f"handshake rejected with HTTP {event.status_code}")
        raise AssertionError("connection closed during the handshake")

    def send_text(self, text: str) -> None:
        self.sock.sendall(self.ws.send(TextMessage(data=text)))

    def send_bytes(self, data: bytes) -> None:
        self.sock.sendall(self.ws.send(BytesMessage(data=data)))

    def send_close(self, code: int | None = None) -> None:
        # wsproto sends a close frame without a code only for the enum member itself.
        close_code = CloseReason.NO_STATUS_RCVD if code is None else code
        self.sock.sendall(self.ws.send(CloseConnection(code=close_code)))

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def events(self, timeout: float | None = None) -> Any:
        """Yield events from the server until the connection closes or ``timeout`` passes."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            for event in self.ws.events():
                yield event
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                return
            except ConnectionError:
                data = b""
            self.ws.receive_data(data or None)
            if not data:
                for event in self.ws.events():
                    yield event
                return

    def close_code(self, timeout: float | None = None) -> int | None:
        """Read (answering pings) until the server's close frame; its code, or None."""
        for event in self.events(timeout):
            if isinstance(event, CloseConnection):
                return int(event.code)
            if isinstance(event, Ping) and self.ws.state is ConnectionState.OPEN:
                self.sock.sendall(self.ws.send(event.response()))
        return None

    def reset(self) -> None:
        """Drop the connection with a TCP reset (SO_LINGER 0), as a crashed client would."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawWebSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def frame(opcode: int, payload: bytes, *, fin: bool = True, masked: bool = True) -> bytes:
        """One hand-built frame, for inputs wsproto itself would refuse to send."""
        first = (0x80 if fin else 0) | opcode
        length = len(payload)
        mask_bit = 0x80 if masked else 0
        if length < 126:
            header = struct.pack("!BB", first, mask_bit | length)
        elif length < 65536:
            header = struct.pack("!BBH", first, mask_bit | 126, length)
        else:
            header = struct.pack("!BBQ", first, mask_bit | 127, length)
        if not masked:
            return header + payload
        key = b"\x01\x02\x03\x04"
        return header + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def http_request(url: str, raw: bytes, timeout: float = 5.0) -> bytes:
    """Send ``raw`` bytes to the server at ``url`` and return what it answers before closing."""
    host, port = url.split("://", 1)[1].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(raw)
        chunks = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except (TimeoutError, ConnectionError):
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)
