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
    "HttpCommunicator",
    "WebsocketCommunicator",
    "stop_background_communicators",
]
