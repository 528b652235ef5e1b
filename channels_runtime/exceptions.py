"""Exceptions with the names and meanings of Django Channels 4.2's.

Code that catches ``channels.exceptions.X`` catches ``channels_runtime.exceptions.X``
after the rename.
"""

from typing import ClassVar


class RequestAborted(Exception):
    """The client went away (or stopped sending) part way through a request body."""


class RequestTimeout(RequestAborted):
    """The request body did not arrive in time."""


class InvalidChannelLayerError(ValueError):
    """A ``CHANNEL_LAYERS`` entry is missing or wrong."""


class AcceptConnection(Exception):
    """Raise in a connect handler to accept the connection."""


class DenyConnection(Exception):
    """Raise in a connect handler to refuse the connection."""


class ChannelFull(Exception):
    """The channel is at capacity; the message was not sent."""


class MessageTooLarge(Exception):
    """The message is larger than the channel layer accepts."""


class StopConsumer(Exception):
    """Raise in a handler to end the consumer's application instance cleanly."""


class ClientInputRefused(ValueError):
    """A consumer refused what its client sent, and ends by raising this.

    Raised after the consumer has closed the connection with a close code
    saying why and logged one warning line: the client has its answer and the
    log its record. It is a ``ValueError`` because Channels' consumers fail
    with one on the same input, so tests and code written for Channels see
    what they expect (``communicator.wait()`` raises it).

    :class:`~channels_runtime.routing.ProtocolTypeRouter`, the application a
    server calls, ends the connection quietly on it: the server's traceback
    ("Error in ASGI Framework") would only repeat the warning, once per bad
    client.
    """

    #: The WebSocket close code the connection was closed with.
    close_code: ClassVar[int]


class UnexpectedBinaryFrame(ClientInputRefused):
    """A binary WebSocket frame reached a consumer that takes JSON in text frames.

    The connection was closed with 1003 ("unsupported data"). The message is
    Channels': ``No text section for incoming WebSocket frame!``.
    """

    close_code = 1003

    def __init__(self, message: str = "No text section for incoming WebSocket frame!") -> None:
        super().__init__(message)


class InvalidJsonFrame(ClientInputRefused):
    """A WebSocket text frame could not be decoded as JSON.

    The connection was closed with 1007 ("invalid frame payload data"). The
    message is the decoder's, and the decoder's own exception (for
    ``json.loads``, a ``json.JSONDecodeError``) is the ``__cause__``: Channels
    raises that exception itself.
    """

    close_code = 1007
