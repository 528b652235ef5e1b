"""Django application config, so ``"channels_runtime"`` can go in ``INSTALLED_APPS``.

Listing the app also installs the ``channels`` alias (:mod:`channels_runtime.alias`):
while Django imports ``INSTALLED_APPS`` in order, the entries after this one
(``"channels"``, ``"daphne"``) and every later ``import channels`` resolve to
channels_runtime. That has to happen when this module is imported, not in
``ready()``, which runs only after every entry was imported.
"""

from django.apps import AppConfig, apps

from . import alias


class ChannelsRuntimeConfig(AppConfig):
    name = "channels_runtime"
    verbose_name = "Channels Runtime"

    def ready(self) -> None:
        # Registers the system check that channels_runtime comes before staticfiles.
        from . import checks  # noqa: F401


def _install_alias() -> None:
    """Take over ``channels``/``daphne``/``channels_redis`` while the registry loads the apps.

    Only then: importing this module at any other time (a parity test, the
    docs build) must not change what ``import channels`` means.
    """
    if apps.loading and not apps.apps_ready:
        alias.install(
            route="'channels_runtime' in INSTALLED_APPS",
            too_late_hint=(
                "Move 'channels_runtime' above 'daphne' and 'channels' in INSTALLED_APPS "
                "(first is simplest). Under a server other than channels-runtime serve, where "
                "asgi.py imports channels before Django is set up (as the Channels tutorial's "
                "does), make 'import channels_runtime.alias.enable' the first import of asgi.py."
            ),
        )


_install_alias()
