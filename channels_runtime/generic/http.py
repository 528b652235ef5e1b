"""AsyncHttpConsumer: a long-lived, hand-built HTTP response (streaming, long-poll, SSE).

The request body arrives as one or more ``http.request`` messages; the consumer
gathers them and calls :meth:`AsyncHttpConsumer.handle` once with the whole
body, then ends. Responses are built from :meth:`~AsyncHttpConsumer.send_headers`
and :meth:`~AsyncHttpConsumer.send_body`, so a handler can keep the response
open (``more_body=True``) while it waits on the channel layer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TypeAlias

from ..asgi import Message
from ..consumer import AsyncConsumer
from ..exceptions import StopConsumer

#: Response headers as users write them: a mapping or an iterable of pairs, str or bytes.
HeaderValue: TypeAlias = str | bytes
HeadersArg: TypeAlias = (
    Mapping[str, HeaderValue]
    | Mapping[bytes, HeaderValue]
    | Iterable[tuple[HeaderValue, HeaderValue] | list[HeaderValue]]
)
#: Binary payloads accepted on the way out; anything but ``bytes`` is copied to ``bytes``.
BytesLike: TypeAlias = bytes | bytearray | memoryview


def _header_bytes(value: object, *, name: bool) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        # Same encodings as Django's ASGIHandler: names are ASCII tokens,
        # values are ISO-8859-1 on the wire.
        encoding = "ascii" if name else "latin-1"
        try:
            return value.encode(encoding)
        except UnicodeEncodeError as exc:
            part = "name" if name else "value"
            raise ValueError(
                f"HTTP header {part} {value!r} cannot be encoded as {encoding}"
            ) from exc
    raise TypeError(f"HTTP header names and values must be str or bytes, got {value!r}")


def encode_headers(headers: HeadersArg | None) -> list[tuple[bytes, bytes]]:
    """Normalise ``headers`` to the ASGI shape: a list of ``(bytes, bytes)`` pairs.

    Accepts a dict or an iterable of pairs, each part str or bytes, because
    Channels code passes all of those and the server accepts only bytes. Order
    and repeated names (``Set-Cookie``) are kept.
    """
    if headers is None:
        return []
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    encoded: list[tuple[bytes, bytes]] = []
    for pair in pairs:
        try:
            header_name, header_value = pair
        except (TypeError, ValueError):
            raise TypeError(
                f"Each HTTP header must be a (name, value) pair, got {pair!r}"
            ) from None
        encoded.append(
            (_header_bytes(header_name, name=True), _header_bytes(header_value, name=False))
        )
    return encoded


class AsyncHttpConsumer(AsyncConsumer):
    """An HTTP endpoint written as a consumer: implement :meth:`handle`.

    The consumer ends after :meth:`handle` returns (or raises), and when the
    client disconnects early; :meth:`disconnect` runs in both cases so cleanup
    such as leaving groups has one home.
    """

    body: list[bytes]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Like Channels, ``as_asgi(**initkwargs)`` arguments are accepted and ignored here.
        self.body = []

    async def send_headers(self, *, status: int = 200, headers: HeadersArg | None = None) -> None:
        """Start the response with ``status`` and ``headers`` (dict or pairs, str or bytes).

        The server sends nothing to the client until the first :meth:`send_body`.
        """
        await self.send(
            {"type": "http.response.start", "status": status, "headers": encode_headers(headers)}
        )

    async def send_body(self, body: BytesLike, *, more_body: bool = False) -> None:
        """Send a chunk of the response body; ``more_body=True`` keeps the response open.

        The final chunk (the default) completes the response; anything sent
        after it is dropped by the server.
        """
        if isinstance(body, bytearray | memoryview):
            body = bytes(body)
        elif not isinstance(body, bytes):
            raise TypeError(
                f"send_body() needs bytes, got {type(body).__name__}"
                + (" (encode the str first)" if isinstance(body, str) else "")
            )
        await self.send({"type": "http.response.body", "body": body, "more_body": more_body})

    async def send_response(self, status: int, body: bytes, **kwargs: Any) -> None:
        """Send a whole response in one go; ``kwargs`` go to :meth:`send_headers`."""
        await self.send_headers(status=status, **kwargs)
        await self.send_body(body)

    async def handle(self, body: bytes) -> None:
        """Respond to a request whose complete body is ``body``; override this.

        Build the response with the ``send_*`` methods; the return value is ignored.
        """
        raise NotImplementedError(
            f"{type(self).__qualname__} must define 'async def handle(self, body)': "
            "AsyncHttpConsumer subclasses respond to requests from handle()."
        )

    async def disconnect(self) -> None:
        """Cleanup hook, run once when the request ends or the client leaves.

        The response is finished or abandoned by then: do not send from here.
        """

    async def http_request(self, message: Message) -> None:
        """Collect one body chunk; on the last, call :meth:`handle` and end the consumer."""
        chunk = message.get("body")
        if chunk:
            self.body.append(chunk)
        if message.get("more_body", False):
            return
        # Joining once at the end keeps a many-chunk upload linear in its size.
        try:
            await self.handle(b"".join(self.body))
        finally:
            await self.disconnect()
        raise StopConsumer()

    async def http_disconnect(self, message: Message) -> None:
        """The client went away before the response finished: clean up and end."""
        await self.disconnect()
        raise StopConsumer()


__all__ = ["AsyncHttpConsumer", "BytesLike", "HeaderValue", "HeadersArg", "encode_headers"]
