"""The app config of ``"daphne"`` in ``INSTALLED_APPS`` while the alias is on.

Its management commands are channels_runtime's: ``runserver`` serves
``ASGI_APPLICATION`` with Hypercorn, as Daphne's served it with Daphne.
"""

from pathlib import Path

from django.apps import AppConfig

import channels_runtime


class DaphneConfig(AppConfig):
    name = "daphne"
    label = "daphne"
    verbose_name = "Daphne (channels_runtime's runserver)"
    #: channels_runtime's directory: Django looks for commands under ``path``.
    path = str(Path(channels_runtime.__file__).parent)

    def ready(self) -> None:
        # The check that runserver is ours, not staticfiles' (channels_runtime.E001).
        from channels_runtime import checks  # noqa: F401
