"""A communicator that makes one HTTP request to an ASGI application."""

# The ``timeout`` parameters are Channels' public API, kept for compatibility.
# ruff: noqa: ASYNC109

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import unquote, urlparse

from channels_runtime.testing.application import ApplicationCommunicator, describe_message

__all__ = ["HttpCommunicator"]


class HttpCommunicator(ApplicationCommunicator):
    """Sends one HTTP request (body in a single message) and collects the response.

    The scope is built as Channels 4.2 builds it. For a request body in several
    chunks, or to observe the response message by message, use
    :class:`~channels_runtime.testing.ApplicationCommunicator` directly.
    """

    def __init__(
        self,
        application: Callable[..., Any],
        method: str,
        path: str,
        body: bytes = b"",
        headers: Iterable[tuple[bytes, bytes]] | None = None,
    ) -> None:
        if not isinstance(body, bytes):
            raise TypeError(f"The body must be bytes, got {type(body)}")
        parsed = urlparse(path)
        scope: dict[str, Any] = {
            "type": "http",
            "http_version": "1.1",
            "method": method.upper(),
            "path": unquote(parsed.path),
            "raw_path": parsed.path.encode("utf-8"),
            "query_string": parsed.query.encode("utf-8"),
            "headers": list(headers) if headers is not None else [],
        }
        super().__init__(application, scope)
        self.body = body
        self.sent_request = False

    async def get_response(self, timeout: float | None = 1) -> dict[str, Any]:
        """Send the request (once) and return the response.

        The result has ``status``, ``headers`` and ``body`` — the chunks of a streamed
        (``more_body``) response joined — plus any other keys of the
        ``http.response.start`` message. ``timeout`` applies to each message.

        Once the response is complete, the application is given the chance to finish
        (it is let run until it returns or asks for another message), so that an
        exception it raises after responding is raised here. It is then left as it
        is: like Channels' communicator, this one sends no ``http.disconnect``, so
        an ``AsyncConsumer`` without an ``http_disconnect`` handler passes, and a
        test can still send one itself and ``wait()``.
        """
        if not self.sent_request:
            self.sent_request = True
            await self.send_input({"type": "http.request", "body": self.body, "more_body": False})
        start = await self.receive_output(timeout)
        if start.get("type") != "http.response.start":
            raise AssertionError(
                f"Expected an http.response.start message, got {describe_message(start)}"
            )
        chunks: list[bytes] = []
        while True:
            message = await self.receive_output(timeout)
            if message.get("type") != "http.response.body":
                raise AssertionError(
                    "Expected an http.response.body message after http.response.start, "
                    f"got {describe_message(message)}"
                )
            chunk = message.get("body", b"")
            if not isinstance(chunk, bytes):
                raise AssertionError(
                    f"http.response.body 'body' must be bytes, it is {type(chunk)}"
                )
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        response = {key: value for key, value in start.items() if key != "type"}
        response.setdefault("headers", [])
        response["body"] = b"".join(chunks)
        await self._settle(timeout)
        return response
