"""Channel layers: the contract, the settings-driven manager, the in-memory backend.

``CHANNEL_LAYERS = {"default": {"BACKEND": "channels_runtime.layers.InMemoryChannelLayer"}}``
"""

from .base import BaseChannelLayer, compile_capacities
from .inmemory import InMemoryChannelLayer
from .manager import ChannelLayerManager, channel_layers, get_channel_layer

__all__ = [
    "BaseChannelLayer",
    "ChannelLayerManager",
    "InMemoryChannelLayer",
    "channel_layers",
    "compile_capacities",
    "get_channel_layer",
]
