"""AsyncHttpConsumer: a long-lived, hand-built HTTP response (streaming, long-poll, SSE).

The request body arrives as one or more ``http.request`` messages; the consumer
gathers them and calls :meth:`AsyncHttpConsumer.handle` once with the whole
body, then ends. Responses are built from :meth:`~AsyncHttpConsumer.send_headers`
and :meth:`~AsyncHttpConsumer.send_body`, so a handler can keep the response
open (``more_body=True``) while it waits on the channel layer.

Once ``handle()`` streams (its first ``send_body(..., more_body=True)``), the
consumer also listens to the client: if it goes away before the response is
complete, ``handle()`` is cancelled, so a stream or long-poll stops at once
instead of writing into a closed connection until it runs out (see
:meth:`AsyncHttpConsumer.http_request`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TypeAlias

import anyio

from ..asgi import Message, Receive, Scope, Send
from ..compat.tasks import BackgroundTask, start_background_task
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
    such as leaving groups has one home. A client that leaves while
    :meth:`handle` is streaming the response cancels :meth:`handle`.
    """

    body: list[bytes]
    # Class-level defaults, so a subclass ``__init__`` that skips ours still works.
    _client_receive: Receive | None = None
    _response_complete = False
    #: Cancels handle(); set only while handle() runs, from http_request().
    _handler_scope: anyio.CancelScope | None = None
    #: The task reading the client while handle() streams (see _start_watching).
    _watcher: BackgroundTask | None = None
    _watch_failure: Exception | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Like Channels, ``as_asgi(**initkwargs)`` arguments are accepted and ignored here.
        self.body = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The client's receive is kept so http_request() can listen to it while
        # handle() runs: the dispatch pump that normally reads it is then busy
        # running http_request() itself. Sends go through _send_to_server, which
        # starts the watching when the response streams and notes when it is complete.
        self._client_receive = receive
        self._server_send = send
        try:
            await super().__call__(scope, receive, self._send_to_server)
        finally:
            # base_send held a bound method of self: a cycle that would keep the
            # ended consumer alive until the next garbage collection.
            self.base_send = send

    async def _send_to_server(self, message: Message) -> None:
        """Pass ``message`` to the server, watching the client once the response streams.

        A body chunk with ``more_body`` means handle() will be around for a
        while, so this is where the client starts being watched; a response
        sent in one piece never pays for the watcher task. Completion is noted
        before the await: the server answers the final body with
        ``http.disconnect`` (Hypercorn does so from inside this very send), and
        that one must not be taken for a client that left.
        """
        if message.get("type") == "http.response.body":
            if not message.get("more_body", False):
                self._response_complete = True
            elif self._watcher is None and self._handler_scope is not None:
                self._start_watching(self._handler_scope)
        await self._server_send(message)

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
        """Collect one body chunk; on the last, call :meth:`handle` and end the consumer.

        From the first streamed chunk (``more_body=True``) until :meth:`handle`
        returns, the client is watched: an ``http.disconnect`` arriving before
        the response is complete cancels :meth:`handle` (its awaits raise the
        backend's cancellation exception, so ``finally`` blocks run). Then, as
        always, :meth:`disconnect` runs once and the consumer ends. A
        disconnect after the complete response is what the server says once it
        has sent it; :meth:`handle` goes on undisturbed.
        """
        chunk = message.get("body")
        if chunk:
            self.body.append(chunk)
        if message.get("more_body", False):
            return
        # Joining once at the end keeps a many-chunk upload linear in its size.
        body = b"".join(self.body)
        try:
            if self._client_receive is None:  # dispatched by hand, outside __call__
                await self.handle(body)
            else:
                await self._handle_cancellable(body)
        finally:
            await self.disconnect()
        raise StopConsumer()

    async def _handle_cancellable(self, body: bytes) -> None:
        """Run :meth:`handle` in a scope the client watcher can cancel; stop the watcher after.

        The scope is all a one-piece response costs. The watcher task is started
        lazily (see :meth:`_send_to_server`), so it cannot be a child of a task
        group opened here; it is a background task this method owns instead,
        cancelled and waited for before returning.
        """
        with anyio.CancelScope() as scope:
            self._handler_scope = scope
            try:
                await self.handle(body)
            finally:
                self._handler_scope = None
                watcher = self._watcher
                if watcher is not None:
                    self._watcher = None
                    watcher.cancel()
                    # Shielded, as this scope may be the cancelled one; the wait is
                    # short, the watcher only ever waits in the cancellable receive().
                    with anyio.CancelScope(shield=True):
                        await watcher.wait()
        failure = self._watch_failure
        if failure is not None:
            self._watch_failure = None
            raise failure

    def _start_watching(self, scope: anyio.CancelScope) -> None:
        """Start reading the client while handle() streams.

        The dispatch pump that normally reads the client is busy running
        http_request() (handlers never overlap), so without this the
        ``http.disconnect`` would wait in the server's queue until handle()
        ended on its own, as it does in Channels.
        """
        receive = self._client_receive
        if receive is None:  # http_request() sets the scope only when there is a receive
            return

        async def watch_client() -> None:
            try:
                while True:
                    message = await receive()
                    # After the final http.request a client has nothing else to say;
                    # anything but a disconnect is ignored, as Channels would never
                    # dispatch it either (the consumer ends when handle() does).
                    if message.get("type") == "http.disconnect":
                        if not self._response_complete:
                            scope.cancel()
                        return
            except Exception as exc:
                # The client can no longer be heard: stop handle() and report why.
                self._watch_failure = exc
                scope.cancel()

        self._watcher = start_background_task(
            watch_client, name=f"{type(self).__qualname__} client watcher"
        )

    async def http_disconnect(self, message: Message) -> None:
        """The client went away before the response finished: clean up and end."""
        await self.disconnect()
        raise StopConsumer()


__all__ = ["AsyncHttpConsumer", "BytesLike", "HeaderValue", "HeadersArg", "encode_headers"]
