"""What ``import channels`` gives while the alias is on (:mod:`channels_runtime.alias`).

A package of its own rather than :mod:`channels_runtime` itself: Django finds
the app config of the ``"channels"`` entry in ``INSTALLED_APPS`` as
``channels.apps``, which must not be channels_runtime's own ``apps`` module
(two app configs with one label). Every submodule, ``channels.routing`` and
the rest, is the runtime's module itself.
"""

from channels_runtime import DEFAULT_CHANNEL_LAYER
from channels_runtime.alias import CHANNELS_API_VERSION, submodule_attribute

#: The Channels release whose API channels_runtime provides (``channels_runtime.__version__``
#: is the runtime's own version).
__version__ = CHANNELS_API_VERSION

__all__ = ["DEFAULT_CHANNEL_LAYER"]


def __getattr__(name: str) -> object:
    return submodule_attribute("channels", name)
