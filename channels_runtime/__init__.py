"""The Django Channels programming model on anyio.

A Channels 4.2 project ports by renaming ``channels`` to ``channels_runtime``
in its imports and settings; it then runs unchanged on asyncio or trio.
"""

from channels_runtime.compat.bridge_hooks import install_hooks as _install_bridge_hooks

__version__ = "0.1.0"

DEFAULT_CHANNEL_LAYER = "default"

__all__ = ["DEFAULT_CHANNEL_LAYER", "__version__"]

# asgiref and Django work on trio from their first call, whoever makes it: see
# channels_runtime.compat.bridge_hooks (costs nothing on asyncio-only processes).
_install_bridge_hooks()
