"""WebSocket consumers with the Channels 4.2 API: connect, receive, send, close, groups.

The ASGI message shapes are built and parsed by small module-level functions
(:func:`websocket_frame_data`, :func:`websocket_send_message`, ...) so that the
async consumers here and the sync consumers share one definition of what a
frame looks like — including servers such as Hypercorn that send both the
``text`` and ``bytes`` keys with the unused one set to ``None``.
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Mapping
from typing import Any, ClassVar

import anyio

from ..asgi import Message, Receive, Scope, Send
from ..consumer import AsyncConsumer, SyncConsumer
from ..exceptions import (
    AcceptConnection,
    DenyConnection,
    InvalidChannelLayerError,
    InvalidJsonFrame,
    StopConsumer,
    UnexpectedBinaryFrame,
)
from ..sync import async_to_sync
from .http import BytesLike, HeadersArg, encode_headers

logger = logging.getLogger(__name__)

#: "Invalid frame payload data" (RFC 6455 §7.4.1): the close code for text that is not JSON.
CLOSE_CODE_INVALID_PAYLOAD = 1007

#: "Unsupported data" (RFC 6455 §7.4.1): the close code for a binary frame sent to a
#: consumer that takes JSON in text frames.
CLOSE_CODE_UNSUPPORTED_DATA = 1003

#: What decoding a text frame may raise because of what the client sent: ``ValueError``
#: (``json.JSONDecodeError``, ``UnicodeDecodeError``, most other decoders' errors) and
#: ``RecursionError`` (a document nested deeper than the decoder can recurse, such as
#: ``"[" * 100000``). Anything else is a bug in the decoder and keeps its traceback.
_DECODE_ERRORS = (ValueError, RecursionError)

#: How much of a decoding error's text goes into the warning: enough to diagnose, and
#: bounded because a decoder may quote the client's input in its message.
_ERROR_TEXT_LIMIT = 200

#: How long leaving groups may take when a consumer is torn down by an error or a
#: cancellation. Bounded so that a dead layer cannot keep a finished connection alive.
GROUP_CLEANUP_TIMEOUT = 10.0


# -- ASGI message helpers, shared with the sync consumers ---------------------


def websocket_frame_data(message: Message) -> dict[str, Any]:
    """The ``receive()`` keyword arguments for a ``websocket.receive`` message.

    Returns ``{"text_data": str}`` or ``{"bytes_data": bytes}``. A key that is
    present but ``None`` counts as absent, because Hypercorn sends both keys on
    every frame. A message with neither is a server bug and raises ``ValueError``
    naming it, rather than calling ``receive()`` with nothing.
    """
    text = message.get("text")
    if text is not None:
        return {"text_data": text}
    data = message.get("bytes")
    if data is not None:
        return {"bytes_data": data}
    raise ValueError(
        f"websocket.receive message has neither 'text' nor 'bytes' (both missing or None): "
        f"{message!r}"
    )


def websocket_accept_message(
    subprotocol: str | None = None, headers: HeadersArg | None = None
) -> Message:
    """A ``websocket.accept`` message; ``headers`` are included only when given.

    Header names and values are encoded to bytes, but each pair keeps the shape
    it was given in: Channels passes accept headers through as they are, so a
    pair given as a list (``[[b"foo", b"bar"]]``) stays a list, and code
    comparing ``response_headers`` with what it passed still finds it equal.
    """
    message: Message = {"type": "websocket.accept", "subprotocol": subprotocol}
    if headers is not None:
        if isinstance(headers, Mapping):
            message["headers"] = encode_headers(headers)
        else:
            given = list(headers)
            message["headers"] = [
                list(pair) if isinstance(original, list) else pair
                for original, pair in zip(given, encode_headers(given), strict=True)
            ]
    return message


def websocket_send_message(
    text_data: str | None = None, bytes_data: BytesLike | None = None
) -> Message:
    """A ``websocket.send`` message carrying exactly one of ``text_data``/``bytes_data``.

    Passing both is refused instead of silently dropping one, and the types are
    checked here so the mistake surfaces in the consumer, not deep in the server.
    """
    if bytes_data is None and type(text_data) is str:  # the common case, first
        return {"type": "websocket.send", "text": text_data}
    if (text_data is None) == (bytes_data is None):
        raise ValueError(
            "send() needs exactly one of text_data or bytes_data, got "
            + ("both" if text_data is not None else "neither")
        )
    if text_data is not None:
        if not isinstance(text_data, str):
            raise TypeError(f"text_data must be str, got {type(text_data).__name__}")
        return {"type": "websocket.send", "text": text_data}
    if not isinstance(bytes_data, bytes | bytearray | memoryview):
        raise TypeError(f"bytes_data must be bytes, got {type(bytes_data).__name__}")
    return {"type": "websocket.send", "bytes": bytes(bytes_data)}


def websocket_close_message(code: int | bool | None = None, reason: str | None = None) -> Message:
    """A ``websocket.close`` message; ``code`` and ``reason`` appear only when given.

    ``code=True`` means "close, no particular code", which is what
    ``send(..., close=True)`` passes down.
    """
    message: Message = {"type": "websocket.close"}
    if code is not None and not isinstance(code, bool):
        message["code"] = code
    if reason is not None:
        message["reason"] = reason
    return message


def _as_decode_error(exc: ValueError | RecursionError) -> ValueError:
    """A decoding failure as the ``ValueError`` that ``receive_invalid_json()`` receives.

    A ``RecursionError`` (the document is nested too deeply) is wrapped, with the
    original as ``__cause__``, so the hook keeps Channels' one-type signature and an
    override typed ``error: ValueError`` stays correct.
    """
    if isinstance(exc, ValueError):
        return exc
    error = ValueError(f"nested too deeply to decode: {exc}")
    error.__cause__ = exc
    return error


def _one_line(text: str) -> str:
    """``text`` safe for a single log line: control characters escaped, length bounded.

    Decoders may echo client input in their messages; without this a client could
    write newlines, and so forged lines, into the server's log.
    """
    if len(text) > _ERROR_TEXT_LIMIT:
        text = text[:_ERROR_TEXT_LIMIT] + "..."
    return text if text.isprintable() else repr(text)[1:-1]


def _consumer_name(consumer: Any) -> str:
    return f"{type(consumer).__module__}.{type(consumer).__qualname__}"


def _warn_invalid_json(consumer: Any, error: ValueError) -> None:
    logger.warning(
        "%s received a WebSocket text frame that is not valid JSON (%s) on %r; "
        "closing the connection with code %d",
        _consumer_name(consumer),
        _one_line(str(error)),
        consumer.scope.get("path", ""),
        CLOSE_CODE_INVALID_PAYLOAD,
    )


def _warn_binary_frame(consumer: Any, bytes_data: bytes) -> None:
    logger.warning(
        "%s received a binary WebSocket frame (%d bytes) on %r but takes JSON in text "
        "frames; closing the connection with code %d",
        _consumer_name(consumer),
        len(bytes_data),
        consumer.scope.get("path", ""),
        CLOSE_CODE_UNSUPPORTED_DATA,
    )


async def _resolve(value: Any) -> Any:
    """Await ``value`` if it is awaitable: JSON hooks may be overridden sync or async."""
    if inspect.isawaitable(value):
        return await value
    return value


# -- consumers ----------------------------------------------------------------


class GroupMembership:
    """Joining :attr:`groups` on connect and leaving them however the connection ends.

    Shared by the async and sync WebSocket consumers. Groups are left in the
    normal disconnect path and, failing that, when the instance is torn down
    by an error or a cancellation, so a crashed connection does not keep
    receiving group messages until the membership expires.
    """

    #: Groups joined on connect and left on disconnect (needs a channel layer).
    groups: list[str] | None = None

    channel_layer: Any
    channel_layer_alias: ClassVar[str | None]
    channel_name: str
    _groups_left: bool = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Like Channels, ``as_asgi(**initkwargs)`` arguments are accepted and ignored.
        # A per-instance copy, so appending in connect() never edits the class list.
        self.groups = list(self.groups) if self.groups is not None else []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)  # type: ignore[misc]
        finally:
            if not self._groups_left:
                await self._leave_groups_on_teardown()

    async def _join_groups(self) -> None:
        groups = self.groups or []
        if not groups:
            return
        if self.channel_layer is None:
            raise InvalidChannelLayerError(
                f"{type(self).__qualname__}.groups is {groups!r} but no channel layer is "
                f"configured under {self.channel_layer_alias!r} in CHANNEL_LAYERS"
            )
        for group in groups:
            await self.channel_layer.group_add(group, self.channel_name)

    async def _leave_groups(self) -> None:
        """Discard this channel from every group, trying all even if one fails."""
        self._groups_left = True
        layer = getattr(self, "channel_layer", None)
        channel_name = getattr(self, "channel_name", None)
        if layer is None or channel_name is None or not self.groups:
            return
        failure: Exception | None = None
        for group in self.groups:
            try:
                await layer.group_discard(group, channel_name)
            except Exception as exc:
                if failure is None:
                    failure = exc
        if failure is not None:
            raise failure

    async def _leave_groups_on_teardown(self) -> None:
        # Runs while an exception (or cancellation) is propagating: shield it so
        # the discard completes, bound it, and log rather than mask the original.
        try:
            with anyio.move_on_after(GROUP_CLEANUP_TIMEOUT, shield=True) as scope:
                await self._leave_groups()
            if scope.cancelled_caught:
                logger.warning(
                    "%s: leaving groups %r timed out after %ss",
                    type(self).__qualname__,
                    self.groups,
                    GROUP_CLEANUP_TIMEOUT,
                )
        except Exception:
            logger.exception("%s: could not leave groups %r", type(self).__qualname__, self.groups)


class AsyncWebsocketConsumer(GroupMembership, AsyncConsumer):
    """A WebSocket connection handled with ``connect``/``receive``/``disconnect``.

    Channels listed in :attr:`groups` are joined before :meth:`connect` runs and
    left when the connection ends (see :class:`GroupMembership`).
    """

    # -- connection lifecycle --------------------------------------------------

    async def websocket_connect(self, message: Message) -> None:
        """Join :attr:`groups`, then run :meth:`connect`, honouring Accept/DenyConnection."""
        await self._join_groups()
        try:
            await self.connect()
        except AcceptConnection:
            await self.accept()
        except DenyConnection:
            await self.close()

    async def connect(self) -> None:
        """Decide whether to accept the connection; the default accepts.

        Call :meth:`accept` or :meth:`close`, or raise ``AcceptConnection`` /
        ``DenyConnection``.
        """
        await self.accept()

    async def accept(
        self, subprotocol: str | None = None, headers: HeadersArg | None = None
    ) -> None:
        """Accept the connection, optionally choosing a subprotocol and adding headers."""
        await super().send(websocket_accept_message(subprotocol, headers))

    async def websocket_receive(self, message: Message) -> None:
        """Unpack a frame and pass its text or bytes (only the one present) to :meth:`receive`."""
        text = message.get("text")
        if text is not None:  # the common case, without building a kwargs dict
            await self.receive(text_data=text)
        else:
            await self.receive(**websocket_frame_data(message))

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Handle one frame; exactly one argument is given. The default ignores it."""

    async def send(  # type: ignore[override]
        self,
        text_data: str | None = None,
        bytes_data: BytesLike | None = None,
        close: bool | int = False,
    ) -> None:
        """Send one text or binary frame; ``close`` (True or a close code) closes afterwards."""
        await super().send(websocket_send_message(text_data, bytes_data))
        if close:
            await self.close(close)

    async def close(self, code: int | bool | None = None, reason: str | None = None) -> None:
        """Close the connection (or refuse it, if not yet accepted)."""
        await super().send(websocket_close_message(code, reason))

    async def websocket_disconnect(self, message: Message) -> None:
        """Leave :attr:`groups`, run :meth:`disconnect`, and end the consumer.

        :meth:`disconnect` runs even if leaving a group fails.
        """
        try:
            await self._leave_groups()
        finally:
            # 1005 is "no status received", what servers report for a code-less close.
            await self.disconnect(message.get("code", 1005))
        raise StopConsumer()

    async def disconnect(self, code: int) -> None:
        """Cleanup hook for when the connection has closed; the default does nothing."""


class AsyncJsonWebsocketConsumer(AsyncWebsocketConsumer):
    """A WebSocket consumer that exchanges JSON documents in text frames.

    Override :meth:`receive_json` and reply with :meth:`send_json`. What a client
    gets wrong closes the connection with a close code saying why, logs one
    warning line, and ends the consumer with a ``ValueError``, as in Channels:

    * a text frame that cannot be decoded (not JSON, nested too deeply): 1007,
      then :class:`~channels_runtime.exceptions.InvalidJsonFrame`; see
      :meth:`receive_invalid_json`;
    * a binary frame: 1003, then
      :class:`~channels_runtime.exceptions.UnexpectedBinaryFrame`; see
      :meth:`receive_binary`.

    Both are :class:`~channels_runtime.exceptions.ClientInputRefused`, which
    ``ProtocolTypeRouter`` ends quietly, so under a server no client can flood
    the log with tracebacks or have its mistake reported as a server error;
    a test driving the consumer directly sees the exception from
    ``communicator.wait()``. Errors raised by :meth:`receive_json` itself are
    the application's and propagate as usual.
    """

    async def receive(
        self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any
    ) -> None:
        if text_data is None:
            if bytes_data is None:  # called directly with neither: a programming error
                raise ValueError("No text section for incoming WebSocket frame!")
            await self.receive_binary(bytes_data, **kwargs)
            return
        try:
            content = await _resolve(self.decode_json(text_data))
        except _DECODE_ERRORS as exc:  # the client's input, not a server error
            await self.receive_invalid_json(text_data, _as_decode_error(exc))
            return
        await self.receive_json(content, **kwargs)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        """Handle one decoded JSON document. The default ignores it."""

    async def receive_invalid_json(self, text_data: str, error: ValueError) -> None:
        """A text frame could not be decoded: warn, close with 1007, raise ``InvalidJsonFrame``.

        ``error`` is the decoder's ``ValueError``; a document nested too deeply
        arrives as a ``ValueError`` whose ``__cause__`` is the ``RecursionError``.
        The :class:`~channels_runtime.exceptions.InvalidJsonFrame` raised is a
        ``ValueError`` with ``error``'s message and ``error`` as its cause.
        Override to answer differently, e.g. ``await self.send_json({"error": ...})``
        to keep the connection open.
        """
        _warn_invalid_json(self, error)
        await self.close(code=CLOSE_CODE_INVALID_PAYLOAD)
        raise InvalidJsonFrame(str(error)) from error

    async def receive_binary(self, bytes_data: bytes, **kwargs: Any) -> None:
        """A binary frame arrived: warn, close with 1003, raise ``UnexpectedBinaryFrame``.

        JSON travels in text frames; Channels fails the connection with
        ``ValueError("No text section for incoming WebSocket frame!")`` here, and
        :class:`~channels_runtime.exceptions.UnexpectedBinaryFrame` is that
        ``ValueError``, raised once the client has its close code ("unsupported
        data"). Override to accept binary frames, for example to decode them
        yourself and call :meth:`receive_json`; ``kwargs`` are the ones
        :meth:`receive` was given.
        """
        _warn_binary_frame(self, bytes_data)
        await self.close(code=CLOSE_CODE_UNSUPPORTED_DATA)
        raise UnexpectedBinaryFrame()

    async def send_json(self, content: Any, close: bool | int = False) -> None:
        """Encode ``content`` with :meth:`encode_json` and send it as a text frame."""
        await super().send(text_data=await _resolve(self.encode_json(content)), close=close)

    @classmethod
    async def decode_json(cls, text_data: str) -> Any:
        """Parse a text frame (``json.loads``); override to use another decoder.

        ``ValueError`` (including ``UnicodeDecodeError``) or ``RecursionError``
        raised for bad input gets the invalid-JSON handling. May be overridden
        as a plain or an ``async`` classmethod.
        """
        return json.loads(text_data)

    @classmethod
    async def encode_json(cls, content: Any) -> str:
        """Serialise outgoing content (``json.dumps``); override to use another encoder."""
        return json.dumps(content)


class WebsocketConsumer(GroupMembership, SyncConsumer):
    """The synchronous :class:`AsyncWebsocketConsumer`: handlers are plain methods.

    ``connect``, ``receive`` and ``disconnect`` run in the thread-sensitive
    thread, where the ORM can be used directly. ``send`` and ``close`` queue
    their message for the event loop and return at once (the thread all sync
    consumers share never waits on a client; see
    :mod:`channels_runtime.sync_send`); ``accept`` returns once the server has
    it. Groups are joined and left as in the async consumer (see
    :class:`GroupMembership`).
    """

    def websocket_connect(self, message: Message) -> None:
        """Join :attr:`groups`, then run :meth:`connect`, honouring Accept/DenyConnection."""
        async_to_sync(self._join_groups)()
        try:
            self.connect()
        except AcceptConnection:
            self.accept()
        except DenyConnection:
            self.close()

    def connect(self) -> None:
        """Decide whether to accept the connection; the default accepts."""
        self.accept()

    def accept(self, subprotocol: str | None = None, headers: HeadersArg | None = None) -> None:
        """Accept the connection, optionally choosing a subprotocol and adding headers."""
        super().send(websocket_accept_message(subprotocol, headers))

    def websocket_receive(self, message: Message) -> None:
        """Unpack a frame and pass its text or bytes (only the one present) to :meth:`receive`."""
        text = message.get("text")
        if text is not None:  # the common case, without building a kwargs dict
            self.receive(text_data=text)
        else:
            self.receive(**websocket_frame_data(message))

    def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Handle one frame; exactly one argument is given. The default ignores it."""

    def send(  # type: ignore[override]
        self,
        text_data: str | None = None,
        bytes_data: BytesLike | None = None,
        close: bool | int = False,
    ) -> None:
        """Send one text or binary frame; ``close`` (True or a close code) closes afterwards."""
        super().send(websocket_send_message(text_data, bytes_data))
        if close:
            self.close(close)

    def close(self, code: int | bool | None = None, reason: str | None = None) -> None:
        """Close the connection (or refuse it, if not yet accepted)."""
        super().send(websocket_close_message(code, reason))

    def websocket_disconnect(self, message: Message) -> None:
        """Leave :attr:`groups`, run :meth:`disconnect`, and end the consumer."""
        try:
            async_to_sync(self._leave_groups)()
        finally:
            self.disconnect(message.get("code", 1005))
        raise StopConsumer()

    def disconnect(self, code: int) -> None:
        """Cleanup hook for when the connection has closed; the default does nothing."""


class JsonWebsocketConsumer(WebsocketConsumer):
    """The synchronous :class:`AsyncJsonWebsocketConsumer`.

    The client's mistakes are handled as in the async variant: a text frame that
    cannot be decoded closes with 1007 (:meth:`receive_invalid_json`), a binary
    frame with 1003 (:meth:`receive_binary`), each with one warning line, and
    the consumer ends with the ``ValueError`` Channels raises there.
    """

    def receive(
        self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any
    ) -> None:
        if text_data is None:
            if bytes_data is None:  # called directly with neither: a programming error
                raise ValueError("No text section for incoming WebSocket frame!")
            self.receive_binary(bytes_data, **kwargs)
            return
        try:
            content = self.decode_json(text_data)
        except _DECODE_ERRORS as exc:  # the client's input, not a server error
            self.receive_invalid_json(text_data, _as_decode_error(exc))
            return
        self.receive_json(content, **kwargs)

    def receive_json(self, content: Any, **kwargs: Any) -> None:
        """Handle one decoded JSON document. The default ignores it."""

    def receive_invalid_json(self, text_data: str, error: ValueError) -> None:
        """A text frame could not be decoded: warn, close with 1007, raise ``InvalidJsonFrame``.

        Overridable as in :meth:`AsyncJsonWebsocketConsumer.receive_invalid_json`.
        """
        _warn_invalid_json(self, error)
        self.close(code=CLOSE_CODE_INVALID_PAYLOAD)
        raise InvalidJsonFrame(str(error)) from error

    def receive_binary(self, bytes_data: bytes, **kwargs: Any) -> None:
        """A binary frame arrived: warn, close with 1003, raise ``UnexpectedBinaryFrame``.

        Overridable as in :meth:`AsyncJsonWebsocketConsumer.receive_binary`.
        """
        _warn_binary_frame(self, bytes_data)
        self.close(code=CLOSE_CODE_UNSUPPORTED_DATA)
        raise UnexpectedBinaryFrame()

    def send_json(self, content: Any, close: bool | int = False) -> None:
        """Encode ``content`` with :meth:`encode_json` and send it as a text frame."""
        super().send(text_data=self.encode_json(content), close=close)

    @classmethod
    def decode_json(cls, text_data: str) -> Any:
        """Parse a text frame (``json.loads``); override to use another decoder.

        Bad input raising ``ValueError`` or ``RecursionError`` gets the
        invalid-JSON handling, as in the async variant.
        """
        return json.loads(text_data)

    @classmethod
    def encode_json(cls, content: Any) -> str:
        """Serialise outgoing content (``json.dumps``); override to use another encoder."""
        return json.dumps(content)


__all__ = [
    "CLOSE_CODE_INVALID_PAYLOAD",
    "CLOSE_CODE_UNSUPPORTED_DATA",
    "AsyncJsonWebsocketConsumer",
    "AsyncWebsocketConsumer",
    "GroupMembership",
    "JsonWebsocketConsumer",
    "WebsocketConsumer",
    "websocket_accept_message",
    "websocket_close_message",
    "websocket_frame_data",
    "websocket_send_message",
]
