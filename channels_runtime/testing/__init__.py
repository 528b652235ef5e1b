"""Test helpers with Django Channels 4.2's names, running on asyncio and trio alike.

See ``docs/testing.md``.
"""

from channels_runtime.testing.application import (
    ApplicationCommunicator,
    stop_background_communicators,
)
from channels_runtime.testing.http import HttpCommunicator
from channels_runtime.testing.websocket import WebsocketCommunicator

__all__ = [
    "ApplicationCommunicator",
    "ChannelsLiveServerTestCase",
    "HttpCommunicator",
    "WebsocketCommunicator",
    "stop_background_communicators",
]


def __getattr__(name: str) -> object:
    # Imported on first use: it pulls in django.test, which plain communicator
    # users (and every pytest run loading the plugin) should not pay for.
    if name == "ChannelsLiveServerTestCase":
        from channels_runtime.testing.live import ChannelsLiveServerTestCase

        return ChannelsLiveServerTestCase
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
