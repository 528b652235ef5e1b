"""System checks for projects using channels_runtime.

Django picks the ``runserver`` command of the *first* installed app that has
one. ``django.contrib.staticfiles`` ships its own (a WSGI server with static
files), so if it comes first, ``manage.py runserver`` quietly serves the
project over WSGI: no WebSockets, no ASGI application, and nothing on screen
says why. That is a configuration mistake worth stopping on, so this check
reports it as an error with the fix.

The check is registered when this module is imported; the app config imports
it in ``ready()``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig, apps
from django.core import checks

__all__ = ["E001", "check_installed_before_staticfiles"]

#: Error id: channels_runtime comes after django.contrib.staticfiles in INSTALLED_APPS.
E001 = "channels_runtime.E001"

_THIS_APP = "channels_runtime"
_STATICFILES_APP = "django.contrib.staticfiles"


@checks.register(checks.Tags.staticfiles)
def check_installed_before_staticfiles(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """Error ``channels_runtime.E001`` if staticfiles is listed before channels_runtime.

    The order of ``INSTALLED_APPS`` is a project-wide fact, so ``app_configs``
    (the apps a ``check`` run was limited to) is deliberately not consulted.
    """
    names = [config.name for config in apps.get_app_configs()]
    if _STATICFILES_APP not in names or _THIS_APP not in names:
        return []
    if names.index(_THIS_APP) < names.index(_STATICFILES_APP):
        return []
    return [
        checks.Error(
            f"{_THIS_APP!r} is listed after {_STATICFILES_APP!r} in INSTALLED_APPS, so "
            "'manage.py runserver' would run staticfiles' WSGI server instead of the "
            "ASGI application.",
            hint=(
                f"Move {_THIS_APP!r} above {_STATICFILES_APP!r} in INSTALLED_APPS "
                "(putting it first is simplest)."
            ),
            id=E001,
        )
    ]
