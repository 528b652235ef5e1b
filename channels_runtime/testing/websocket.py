"""A communicator that speaks the ASGI WebSocket protocol for the test."""

# The ``timeout`` parameters are Channels' public API, kept for compatibility.
# ruff: noqa: ASYNC109

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import unquote, urlparse

from channels_runtime.testing.application import ApplicationCommunicator, describe_message

__all__ = ["WebsocketCommunicator"]


def _noted(message: str, note: str) -> AssertionError:
    """An ``AssertionError`` worded as Channels words it, with our detail as a note.

    Tests written for Channels compare ``str(error)``, which notes are not part
    of; the traceback still shows the note, so nothing is lost for the reader.
    """
    error = AssertionError(message)
    error.add_note(note)
    return error


class WebsocketCommunicator(ApplicationCommunicator):
    """Plays the WebSocket client (and the server in between) against an ASGI application.

    Builds the ``websocket`` scope from ``path`` the way Channels 4.2 does, and sends
    frames in the shape Hypercorn sends them (``text`` and ``bytes`` keys both present,
    one of them ``None``), so the application sees what it will see in production.

    Each method asserts that the application answered with the expected kind of
    message. Where Channels' communicator words the :exc:`AssertionError`, the
    message is Channels' word for word, so tests comparing it keep passing; the
    message that arrived is attached as a note (shown in the traceback).
    """

    def __init__(
        self,
        application: Callable[..., Any],
        path: str,
        headers: Iterable[tuple[bytes, bytes]] | None = None,
        subprotocols: Iterable[str] | None = None,
        spec_version: str | None = None,
    ) -> None:
        if not isinstance(path, str):
            raise TypeError(f"Expected str, got {type(path)}")
        parsed = urlparse(path)
        scope: dict[str, Any] = {
            "type": "websocket",
            "path": unquote(parsed.path),
            # What the client put on the request line, before percent-decoding.
            "raw_path": parsed.path.encode("utf-8"),
            "query_string": parsed.query.encode("utf-8"),
            "headers": list(headers) if headers is not None else [],
            "subprotocols": list(subprotocols) if subprotocols is not None else [],
        }
        if spec_version is not None:
            scope["spec_version"] = spec_version
        super().__init__(application, scope)
        #: The ``headers`` of the ``websocket.accept`` message, once connected.
        self.response_headers: list[tuple[bytes, bytes]] | None = None

    async def connect(self, timeout: float | None = 1) -> tuple[bool, int | str | None]:
        """Open the connection.

        Returns ``(True, subprotocol)`` if the application accepts it, or
        ``(False, close_code)`` if it closes it instead.
        """
        await self.send_input({"type": "websocket.connect"})
        response = await self.receive_output(timeout)
        kind = response.get("type")
        if kind == "websocket.close":
            return (False, response.get("code", 1000))
        if kind == "websocket.accept":
            self.response_headers = list(response.get("headers") or [])
            return (True, response.get("subprotocol"))
        raise AssertionError(
            "Expected a websocket.accept or websocket.close message, "
            f"got {describe_message(response)}"
        )

    async def send_to(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Send one frame to the application: text or binary, exactly one of them.

        Empty frames are allowed (unlike Channels, which mistook them for "no data").
        """
        if (text_data is None) == (bytes_data is None):
            raise AssertionError("You must supply exactly one of text_data or bytes_data")
        if text_data is not None:
            if not isinstance(text_data, str):
                raise _noted("The text_data argument must be a str", f"it is {type(text_data)}")
            await self.send_input({"type": "websocket.receive", "text": text_data, "bytes": None})
        else:
            if not isinstance(bytes_data, bytes):
                raise _noted("The bytes_data argument must be bytes", f"it is {type(bytes_data)}")
            await self.send_input({"type": "websocket.receive", "bytes": bytes_data, "text": None})

    async def send_json_to(self, data: Any) -> None:
        """Send ``data`` encoded as JSON in a text frame."""
        await self.send_to(text_data=json.dumps(data))

    async def receive_from(self, timeout: float | None = 1) -> str | bytes:
        """Return the payload of the next frame the application sends: ``str`` or ``bytes``.

        Fails if the application sends anything else, such as a ``websocket.close``.
        """
        response = await self.receive_output(timeout)
        if response.get("type") != "websocket.send":
            raise _noted(
                f"Expected type 'websocket.send', but was '{response.get('type')}'",
                f"The message was {describe_message(response)}",
            )
        # ASGI allows both keys with one of them None, or just the one that is used.
        text = response.get("text")
        data = response.get("bytes")
        if (text is None) == (data is None):
            raise _noted(
                "The response needs exactly one of 'text' or 'bytes'",
                f"The message was {describe_message(response)}",
            )
        if text is not None:
            if not isinstance(text, str):
                raise AssertionError(f"Text frame payload is not str, it is {type(text)}")
            return text
        if not isinstance(data, bytes):
            raise AssertionError(f"Binary frame payload is not bytes, it is {type(data)}")
        return data

    async def receive_json_from(self, timeout: float | None = 1) -> Any:
        """Return the decoded JSON of the next frame, which must be a text frame."""
        payload = await self.receive_from(timeout)
        if not isinstance(payload, str):
            raise _noted(
                f"JSON data is not a text frame, it is {type(payload)}",
                f"The frame was {describe_message(payload)}",
            )
        try:
            return json.loads(payload)
        except ValueError as exc:
            raise AssertionError(
                f"Expected a text frame with JSON, got {describe_message(payload)} ({exc})"
            ) from exc

    async def disconnect(self, code: int = 1000, timeout: float | None = 1) -> None:
        """Tell the application the client went away, and wait for it to finish.

        An application still running after ``timeout`` seconds is cancelled; either way
        it is no longer running when this returns.
        """
        await self.send_input({"type": "websocket.disconnect", "code": code})
        await self.wait(timeout)
