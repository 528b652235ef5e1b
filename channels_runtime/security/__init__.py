"""Protection for Channels applications; see :mod:`channels_runtime.security.websocket`.

Kept free of imports, as Channels' package is, so that importing a submodule
never drags in Django settings access earlier than the submodule itself needs.
"""
