"""The Django Channels programming model on anyio.

A Channels 4.2 project ports by renaming ``channels`` to ``channels_runtime``
in its imports and settings; it then runs unchanged on asyncio or trio.
"""

__version__ = "0.1.0"

DEFAULT_CHANNEL_LAYER = "default"

__all__ = ["DEFAULT_CHANNEL_LAYER", "__version__"]
