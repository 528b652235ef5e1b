"""The Django Channels programming model on anyio.

A Channels 4.2 project runs unmodified: with ``"channels_runtime"`` added to
``INSTALLED_APPS`` and ``channels-runtime serve`` as the command, ``import
channels`` (and ``channels_redis``) give channels_runtime's own modules (see
:mod:`channels_runtime.alias`), on asyncio, uvloop or trio. Renaming the
imports to ``channels_runtime`` works too.
"""

from channels_runtime.compat.bridge_hooks import install_hooks as _install_bridge_hooks

__version__ = "0.1.0"

DEFAULT_CHANNEL_LAYER = "default"

__all__ = ["DEFAULT_CHANNEL_LAYER", "__version__"]

# asgiref and Django work on trio from their first call, whoever makes it: see
# channels_runtime.compat.bridge_hooks (costs nothing on asyncio-only processes).
_install_bridge_hooks()
