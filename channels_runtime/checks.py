"""System checks for projects using channels_runtime.

Django picks the ``runserver`` command of the *first* installed app that has
one. ``django.contrib.staticfiles`` ships its own (a WSGI server with static
files), so if it comes first, ``manage.py runserver`` quietly serves the
project over WSGI: no WebSockets, no ASGI application, and nothing on screen
says why. That is a configuration mistake worth stopping on, so this check
reports it as an error with the fix.

Any ASGI ``runserver`` above staticfiles will do: channels_runtime's, and with
the alias on (:mod:`channels_runtime.alias`) the ``"daphne"`` and
``"channels"`` entries, whose commands are channels_runtime's; with the alias
off, Daphne's own. So the check asks which app's ``runserver`` Django would run,
rather than where ``"channels_runtime"`` is listed.

The check is registered when this module is imported; the app config imports
it in ``ready()``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

from django.apps import AppConfig, apps
from django.core import checks
from django.core.management import find_commands

__all__ = ["E001", "check_installed_before_staticfiles"]

#: Error id: django.contrib.staticfiles' WSGI runserver would win over the ASGI one.
E001 = "channels_runtime.E001"

_THIS_APP = "channels_runtime"
_STATICFILES_APP = "django.contrib.staticfiles"


@checks.register(checks.Tags.staticfiles)
def check_installed_before_staticfiles(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """Error ``channels_runtime.E001`` if staticfiles' ``runserver`` is the one Django runs.

    That is when staticfiles is listed above channels_runtime and above every
    other app with an ASGI ``runserver`` (``"daphne"``, and ``"channels"`` with
    the alias on). The order of ``INSTALLED_APPS`` is a project-wide fact, so ``app_configs``
    (the apps a ``check`` run was limited to) is deliberately not consulted.
    """
    winner = _runserver_app(apps.get_app_configs())
    if winner is None or winner.name != _STATICFILES_APP:
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


def _runserver_app(configs: Iterable[AppConfig]) -> AppConfig | None:
    """The app whose ``runserver`` ``manage.py runserver`` runs: the first that has one."""
    for config in configs:
        if "runserver" in find_commands(os.path.join(config.path, "management")):
            return config
    return None
