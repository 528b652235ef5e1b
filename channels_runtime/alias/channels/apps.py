"""The app config of ``"channels"`` in ``INSTALLED_APPS`` while the alias is on.

A no-op alias of channels_runtime's app: it has no models, and its management
commands (``runserver``, ``runworker``) are channels_runtime's, so a project
that lists ``"channels"`` above ``django.contrib.staticfiles`` gets the ASGI
``runserver``.
"""

from pathlib import Path

from django.apps import AppConfig

import channels_runtime


class ChannelsConfig(AppConfig):
    name = "channels"
    label = "channels"
    verbose_name = "Channels (channels_runtime)"
    #: channels_runtime's directory: Django looks for commands under ``path``.
    path = str(Path(channels_runtime.__file__).parent)

    def ready(self) -> None:
        # The check that runserver is ours, not staticfiles' (channels_runtime.E001).
        from channels_runtime import checks  # noqa: F401
