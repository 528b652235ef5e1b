"""Test helpers with Django Channels 4.2's names, running on asyncio and trio alike.

See ``docs/testing.md``.
"""

# As in Channels, whose testing package imports ``channels.routing``: code written
# for it reads ``channels.routing.ProtocolTypeRouter`` after ``import channels.testing``
# alone (django-channels-graphql-ws's conftest does), which works only if the routing
# module was imported (see channels_runtime.alias.submodule_attribute). In a Django
# test run this costs about 30 ms; the URL machinery it needs is mostly loaded already.
import channels_runtime.routing  # noqa: F401
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
