"""Exceptions with the names and meanings of Django Channels 4.2's.

Code that catches ``channels.exceptions.X`` catches ``channels_runtime.exceptions.X``
after the rename.
"""


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
