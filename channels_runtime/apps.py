"""Django application config, so ``"channels_runtime"`` can go in ``INSTALLED_APPS``."""

from django.apps import AppConfig


class ChannelsRuntimeConfig(AppConfig):
    name = "channels_runtime"
    verbose_name = "Channels Runtime"

    def ready(self) -> None:
        # Registers the system check that channels_runtime comes before staticfiles.
        from . import checks  # noqa: F401
