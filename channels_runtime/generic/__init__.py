"""Generic consumers: WebSocket (plain and JSON) and HTTP, with Channels 4.2's API.

Import them from the submodules as in Channels
(``from channels_runtime.generic.websocket import AsyncWebsocketConsumer``)
or from this package directly.
"""

from .http import AsyncHttpConsumer
from .websocket import (
    AsyncJsonWebsocketConsumer,
    AsyncWebsocketConsumer,
    JsonWebsocketConsumer,
    WebsocketConsumer,
)

__all__ = [
    "AsyncHttpConsumer",
    "AsyncJsonWebsocketConsumer",
    "AsyncWebsocketConsumer",
    "JsonWebsocketConsumer",
    "WebsocketConsumer",
]
