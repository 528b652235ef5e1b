"""Hypercorn's WebSocket stream with the close codes, keepalive and errors Daphne users expect.

:class:`WebSocketStream` is a subclass of Hypercorn's ``WSStream`` that
:func:`install` puts where Hypercorn's HTTP/1.1 and HTTP/2 protocols look the
class up. Each change fixes one behaviour of Hypercorn 0.17.3 and 0.18.0:

* **Close codes** (pgjones/hypercorn#127). Hypercorn reports 1006 to the
  application for every close the client starts, whatever code the client
  sent, and 1000 for every close the application starts. Here the
  application receives the code of the close that happened: the client's
  (1000, 1001, 3xxx, 4xxx; 1005 when its close frame had no code), the one
  the application or the server itself closed with, or 1006 only when the
  connection was lost without a close handshake.
* **Protocol errors.** When wsproto cannot parse the client's frames (a
  reserved opcode, an unmasked frame, invalid UTF-8 in a text message),
  Hypercorn drops the connection without a close frame and reports 1006.
  Here the client gets a close frame with wsproto's code (1002, 1007), the
  application gets the same code, and one warning line is logged.
* **Messages over** ``websocket_max_message_size``. Hypercorn sends close
  1009 but then waits for the client's answer forever and tells the
  application nothing. Here the connection ends and the application
  receives 1009.
* **Bytes after the upgrade request** (pgjones/hypercorn#225). Hypercorn
  answers 400, but the h11 state machine then refuses the rest of the
  answer, and on the trio worker that ``LocalProtocolError`` escapes the TCP
  server and stops the whole worker; the application it had already started
  never gets a disconnect. Here the 400 goes out as far as h11 allows, the
  connection closes and the application receives a disconnect (1006).
* **Keepalive.** Hypercorn sends a ping every ``websocket_ping_interval`` but
  never checks for the pong, and its ping task sleeps on after the
  connection closed, holding up the connection's teardown and the server's
  shutdown. Here a peer that answers neither with a pong nor with any other
  frame within ``websocket_ping_timeout`` seconds is dropped (the
  application receives 1006, the peer is sent 1011 in case it still
  listens), and the ping task ends as soon as the connection does.
* **Close handshake timeout.** After the application closes, Hypercorn
  waits for the client's close frame for as long as the client likes. Here
  it waits :data:`CLOSE_TIMEOUT` seconds, then closes the TCP connection.
* **permessage-deflate** (pgjones/hypercorn#307). Always negotiated by
  Hypercorn; ``websocket_permessage_deflate = false`` turns it off (it costs
  CPU per frame and a compressor and decompressor per connection).
* **Decompression bombs.** With permessage-deflate on, wsproto inflates each
  compressed chunk in full before Hypercorn compares the message with
  ``websocket_max_message_size``: one 64 KiB frame of compressed zeros became
  64 MiB and blocked the loop for a second and a half. Here inflating stops
  at the limit (:class:`BoundedPerMessageDeflate`) and the connection closes
  with 1009.
* **Non-ASCII bytes in the handshake's** ``Connection``,
  ``Sec-WebSocket-Extensions`` or ``Sec-WebSocket-Protocol`` headers make
  Hypercorn's handshake parser raise ``UnicodeDecodeError`` (on the trio
  worker without these fixes, that stops the worker). Here such a handshake
  is invalid and answered with 400 (:class:`TolerantHandshake`).

Not a fix but the same seam: with metrics on (:mod:`channels_runtime.metrics`),
the stream is where a connection is known to be accepted, the close code it
ends with is final, and each frame's bytes on the wire are known, so it reports
them, one line each.
"""

from __future__ import annotations

import logging
import zlib
from contextvars import ContextVar
from typing import Any

import anyio
import h11
from hypercorn.protocol.events import Body, Data, Request, StreamClosed
from hypercorn.protocol.ws_stream import (
    ASGIWebsocketState,
    FrameTooLargeError,
    Handshake,
    WSStream,
)
from wsproto.connection import ConnectionState
from wsproto.events import BytesMessage, CloseConnection, Message, Ping, Pong, TextMessage
from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import CloseReason
from wsproto.utilities import LocalProtocolError

from channels_runtime import metrics
from channels_runtime.asgi import describe_client
from channels_runtime.compat.wakeup import Notice

from .options import PERMESSAGE_DEFLATE, PING_TIMEOUT, option

#: The application's messages as Hypercorn sends them (for the frames-sent metric).
_DATA_FRAMES = (TextMessage, BytesMessage)

__all__ = [
    "CLOSE_TIMEOUT",
    "BoundedPerMessageDeflate",
    "TolerantHandshake",
    "WebSocketStream",
    "install",
]

logger = logging.getLogger("channels_runtime.server")

#: Seconds the server waits for the client's answer to its close frame.
CLOSE_TIMEOUT = 10.0

_ABNORMAL = 1006
_INTERNAL_ERROR = 1011
_MESSAGE_TOO_BIG = 1009


#: The message size limit of the handshake being accepted, for the extension it creates.
_inflate_limit: ContextVar[int | None] = ContextVar("channels_runtime_inflate_limit", default=None)


class BoundedPerMessageDeflate(PerMessageDeflate):
    """wsproto's permessage-deflate, inflating no message past the server's size limit."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_message_size: int | None = _inflate_limit.get()
        self._inflated = 0  # bytes of the current message inflated so far

    def frame_inbound_payload_data(self, proto: Any, data: bytes) -> bytes | CloseReason:
        limit = self.max_message_size
        decompressor = self._decompressor
        if (
            limit is None
            or decompressor is None
            or not self._inbound_compressed
            or not self._inbound_is_compressible
        ):
            return super().frame_inbound_payload_data(proto, data)
        budget = limit + 1 - self._inflated
        try:
            inflated = decompressor.decompress(bytes(data), max(budget, 1))
        except zlib.error:
            return CloseReason.INVALID_FRAME_PAYLOAD_DATA
        self._inflated += len(inflated)
        if decompressor.unconsumed_tail or self._inflated > limit:
            return CloseReason.MESSAGE_TOO_BIG
        return inflated

    def frame_inbound_complete(self, proto: Any, fin: bool) -> bytes | CloseReason | None:
        if fin:
            self._inflated = 0
        return super().frame_inbound_complete(proto, fin)


class TolerantHandshake(Handshake):
    """Hypercorn's handshake parser, treating undecodable header values as invalid."""

    def __init__(self, headers: list[tuple[bytes, bytes]], http_version: str) -> None:
        try:
            super().__init__(headers, http_version)
        except UnicodeDecodeError:
            # is_valid() then refuses it, and Hypercorn answers 400 as for any
            # other malformed handshake.
            self.version = None
            self.extensions = None
            self.subprotocols = None


class WebSocketStream(WSStream):
    """Hypercorn's ``WSStream`` with the fixes listed in the module docstring."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: The close code the application will be told; None until someone closes.
        self.close_code: int | None = None
        self.close_reason: str = ""
        self._heard = False  # any frame from the peer since the last ping
        self._refused = False  # the handshake was refused by the server itself
        self._closed_event: Notice | None = None  # made when a task waits for the end
        #: The connection's metrics record (channels_runtime.metrics.connections), when on.
        self.metrics_record: Any = None

    # -- what the application is told ---------------------------------------

    def note_close(self, code: int, reason: str = "") -> None:
        """Record why the connection ends, unless an earlier close already said."""
        if self.close_code is None:
            self.close_code = int(code)
            self.close_reason = reason

    async def handle(self, event: Any) -> None:
        if self.closed:
            return
        if type(event) is Data:
            # The hot path, frames from the client: Hypercorn's own steps, without
            # going through its handle() and its chain of isinstance checks again.
            if self.handshake.accepted:
                self.connection.receive_data(event.data)
                await self._handle_events()
            else:
                await self._refuse_early_data()
            return
        if isinstance(event, StreamClosed):
            self.closed = True
            if self.metrics_record is not None:
                metrics.connections.closed(self.metrics_record, self.close_code or _ABNORMAL)
            if self._closed_event is not None:
                self._closed_event.set()
            if self.app_put is not None:
                message: dict[str, Any] = {
                    "type": "websocket.disconnect",
                    "code": self.close_code if self.close_code is not None else _ABNORMAL,
                }
                if self.close_reason:
                    message["reason"] = self.close_reason
                await self.app_put(message)
            return
        if isinstance(event, Body | Data) and not self.handshake.accepted:
            await self._refuse_early_data()
            return
        if metrics.enabled and isinstance(event, Request):  # the application starts here
            await metrics.connections.handshake(self, super().handle, event)
            return
        await super().handle(event)

    async def _refuse_early_data(self) -> None:
        """The client sent data before the handshake was answered: 400, then close."""
        logger.warning(
            "WebSocket client %s sent data before the handshake was answered; refusing it",
            describe_client(self.client),
        )
        self._refused = True  # from now on the application's messages go nowhere
        if self.state is ASGIWebsocketState.HANDSHAKE:
            self.state = ASGIWebsocketState.HTTPCLOSED
            try:
                await self._send_error_response(400)
            except h11.LocalProtocolError:
                pass  # h11 refuses the rest of a 400 to a protocol switch; the close says it
        await self.send(StreamClosed(stream_id=self.stream_id))

    async def app_send(self, message: Any) -> None:
        if self._refused:
            return
        if self.metrics_record is not None and self.state is ASGIWebsocketState.HANDSHAKE:
            metrics.connections.handshake_answered(self.metrics_record, message)
        if message is None:
            if self.state is ASGIWebsocketState.CONNECTED and not self.closed:
                self.note_close(_INTERNAL_ERROR)  # Hypercorn closes with 1011 for us
        elif (
            message["type"] == "websocket.close"
            and self.state is ASGIWebsocketState.CONNECTED
            and not self.closed
        ):
            code = message.get("code")
            self.note_close(1000 if code is None else int(code), message.get("reason") or "")
            await super().app_send(message)
            self.task_group.spawn(self._end_after_close_timeout)
            return
        await super().app_send(message)

    async def _send_wsproto_event(self, event: Any) -> None:
        # Hypercorn's own steps, with the frames and bytes counted when metrics are on.
        try:
            data = self.connection.send(event)
        except LocalProtocolError:
            return
        if self.metrics_record is not None:
            # type(), not isinstance(): wsproto's events are ABCs, whose check is a Python call.
            data_frame = type(event) in _DATA_FRAMES
            metrics.outbound.frame_sent(self.metrics_record, data_frame, len(data))
        await self.send(Data(stream_id=self.stream_id, data=data))

    # -- frames from the client ---------------------------------------------

    async def _handle_events(self) -> None:
        connection = self.connection
        for event in connection.events():
            if isinstance(event, Message):
                self._heard = True
                try:
                    self.buffer.extend(event)
                except FrameTooLargeError:
                    logger.warning(
                        "WebSocket client %s sent a message over websocket_max_message_size "
                        "(%d bytes); closing with 1009",
                        describe_client(self.client),
                        self.config.websocket_max_message_size,
                    )
                    await self._close_now(_MESSAGE_TOO_BIG, "message too big")
                    return
                if event.message_finished and self.app_put is not None:
                    await self.app_put(self.buffer.to_message())
                    self.buffer.clear()
            elif isinstance(event, Ping):
                self._heard = True
                await self._send_wsproto_event(event.response())
            elif isinstance(event, Pong):
                self._heard = True
            elif isinstance(event, CloseConnection):
                await self._peer_closed(event)
                return

    async def _peer_closed(self, event: CloseConnection) -> None:
        state = self.connection.state
        code = int(event.code)
        if state is ConnectionState.REMOTE_CLOSING:
            # The client started the close: answer it and report its code.
            self.note_close(code, event.reason or "")
            await self._send_wsproto_event(event.response())
        elif state is ConnectionState.OPEN:
            # wsproto could not parse the client's frames and says so with a close
            # event, without changing state: send the close frame ourselves.
            logger.warning(
                "WebSocket protocol error from %s: %s; closing with %d",
                describe_client(self.client),
                event.reason,
                code,
            )
            self.note_close(code, event.reason or "")
            await self._send_wsproto_event(CloseConnection(code=code, reason=event.reason))
        else:
            # The client answered a close the server sent; that close's code stands.
            self.note_close(code, event.reason or "")
        await self.send(StreamClosed(stream_id=self.stream_id))

    async def _close_now(self, code: int, reason: str, *, report: int | None = None) -> None:
        """Send a close frame and end the connection without waiting for an answer."""
        self.note_close(code if report is None else report, reason if report is None else "")
        if self.connection.state in {ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING}:
            await self._send_wsproto_event(CloseConnection(code=code, reason=reason))
        await self.send(StreamClosed(stream_id=self.stream_id))

    # -- tasks that end with the connection ----------------------------------

    def _ended(self) -> Notice:
        # A Notice, not an anyio.Event under move_on_after: the keepalive task
        # waits on it for the whole connection, and that pair costs about 1.5 KB.
        if self._closed_event is None:
            self._closed_event = Notice()
        return self._closed_event

    async def _accept(self, message: Any) -> None:
        if not option(self.config, PERMESSAGE_DEFLATE):
            self.handshake.extensions = None  # no offer seen, so none accepted
        if self.config.websocket_ping_interval is not None:
            self._ended()  # before the ping task exists, so it can wait on it
        # The extension is made inside Hypercorn's accept; it reads its limit here.
        token = _inflate_limit.set(int(self.config.websocket_max_message_size))
        try:
            await super()._accept(message)
        finally:
            _inflate_limit.reset(token)
        if self.metrics_record is not None:
            metrics.connections.opened(self.metrics_record)

    async def _end_after_close_timeout(self) -> None:
        """After a server close, give the client :data:`CLOSE_TIMEOUT` s to answer."""
        await self._ended().wait_until(anyio.current_time() + CLOSE_TIMEOUT)
        if not self.closed:
            await self.send(StreamClosed(stream_id=self.stream_id))

    async def _send_pings(self) -> None:
        """Ping every interval; drop a peer that stays silent for the ping timeout.

        Replaces Hypercorn's loop, which never looks for the pong and sleeps a
        whole interval after the connection has closed.
        """
        interval = float(self.config.websocket_ping_interval or 0.0)
        timeout = option(self.config, PING_TIMEOUT)
        ended = self._ended()
        now = anyio.current_time()
        next_ping = now + interval
        answer_by: float | None = None
        while True:
            wake_at = next_ping if answer_by is None else min(next_ping, answer_by)
            await ended.wait_until(wake_at)
            if self.closed or self.state is not ASGIWebsocketState.CONNECTED:
                return
            now = anyio.current_time()
            if answer_by is not None:
                if self._heard:
                    answer_by = None
                elif now >= answer_by:
                    logger.info(
                        "WebSocket client %s did not answer a ping within %gs; closing",
                        describe_client(self.client),
                        timeout,
                    )
                    await self._close_now(
                        _INTERNAL_ERROR, "keepalive ping timeout", report=_ABNORMAL
                    )
                    return
            if now >= next_ping:
                if answer_by is None and timeout:
                    self._heard = False
                    answer_by = now + float(timeout)
                await self._send_wsproto_event(Ping())
                next_ping = now + interval


def install() -> None:
    """Make Hypercorn's HTTP/1.1 and HTTP/2 protocols use :class:`WebSocketStream`.

    Also puts :class:`TolerantHandshake` and :class:`BoundedPerMessageDeflate`
    where Hypercorn's WebSocket stream looks them up.
    """
    import hypercorn.protocol.h2 as h2_protocol
    import hypercorn.protocol.h11 as h11_protocol
    import hypercorn.protocol.ws_stream as ws_stream_module

    h11_protocol.WSStream = WebSocketStream  # type: ignore[misc]
    h2_protocol.WSStream = WebSocketStream  # type: ignore[misc]
    ws_stream_module.Handshake = TolerantHandshake  # type: ignore[misc]
    ws_stream_module.PerMessageDeflate = BoundedPerMessageDeflate  # type: ignore[misc]
