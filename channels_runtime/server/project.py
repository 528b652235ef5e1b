"""Finding the user's Django project: settings, the ASGI application, the channel layer.

Both ``channels-runtime serve`` and ``channels-runtime worker`` start from a
bare command line, so they must do what ``manage.py`` and a hand-written
``asgi.py`` normally do: put the project on ``sys.path``, pick the settings
module, set Django up and import the application. Each step that can fail has
its own message naming what was tried, because "No module named 'settings'"
from deep inside Django does not tell a newcomer what to set.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import sys
from dataclasses import dataclass
from typing import Any

from ..asgi import ASGIApp

__all__ = [
    "INMEMORY_BACKEND",
    "ProjectError",
    "Target",
    "describe_channel_layer",
    "ensure_default_channel_layer",
    "import_application",
    "prepare_django",
    "settings_hint_for",
    "split_target",
]

logger = logging.getLogger("channels_runtime.server")

#: The layer ``serve`` falls back to when the settings define no ``CHANNEL_LAYERS``.
INMEMORY_BACKEND = "channels_runtime.layers.InMemoryChannelLayer"


class ProjectError(Exception):
    """The project cannot be loaded: settings or application not found."""


@dataclass(frozen=True)
class Target:
    """``module:attr`` split into its parts."""

    module: str
    attr: str

    def __str__(self) -> str:
        return f"{self.module}:{self.attr}"


def split_target(text: str, *, default_attr: str = "application") -> Target:
    """Parse ``MODULE[:ATTR]`` (also the Channels-style ``package.module.attr`` form
    when ``default_attr`` is empty)."""
    module, sep, attr = text.partition(":")
    if not sep:
        if default_attr:
            attr = default_attr
        else:
            module, _, attr = text.rpartition(".")
    if not module or not attr or any(not part.isidentifier() for part in module.split(".")):
        raise ProjectError(f"{text!r} is not an application path of the form module.path:attribute")
    return Target(module, attr)


def _add_cwd_to_path() -> None:
    """Make the current directory importable, as ``manage.py`` and ``python -m`` do."""
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def prepare_django(hint_module: str | None, *, route: str = "channels-runtime") -> str | None:
    """Pick the settings module, install the alias and set Django up; returns the settings used.

    ``DJANGO_SETTINGS_MODULE`` wins. Otherwise the ``settings`` module next to
    ``hint_module`` is used if it exists (``myproject.asgi`` gives
    ``myproject.settings``). If neither applies, ``None`` is returned and
    Django is not set up yet: the application module may still choose its
    settings itself (``os.environ.setdefault`` in a standard ``asgi.py``);
    :func:`import_application` checks afterwards.

    Before anything of the project is imported, the ``channels`` alias
    (:mod:`channels_runtime.alias`) is installed, taking over from an installed
    Django Channels, unless the environment or the chosen settings turn it off
    (``route`` names the command in its log line). Django's app registry and
    the application module then see channels_runtime under Channels' names.
    """
    _add_cwd_to_path()
    chosen = os.environ.get("DJANGO_SETTINGS_MODULE")
    if not chosen and hint_module:
        candidate = settings_hint_for(hint_module)
        if _importable(candidate):
            chosen = candidate
            os.environ["DJANGO_SETTINGS_MODULE"] = candidate
    if chosen:
        _check_importable(chosen)
    _install_alias(route, read_settings=bool(chosen))
    if chosen:
        _setup_django(chosen)
    return chosen


def _install_alias(route: str, *, read_settings: bool) -> None:
    from django.core.exceptions import ImproperlyConfigured

    from .. import alias

    try:
        alias.install(
            route=route,
            read_settings=read_settings,
            too_late_hint="Something imported it before the application (the settings module?).",
        )
    except alias.AliasError as exc:
        raise ProjectError(str(exc)) from exc
    except ImproperlyConfigured as exc:  # from reading the settings
        settings_module = os.environ.get("DJANGO_SETTINGS_MODULE")
        raise ProjectError(f"Django settings {settings_module!r} are not usable: {exc}") from exc


def _check_importable(settings_module: str) -> None:
    if not _importable(settings_module):
        raise ProjectError(
            f"Cannot import the settings module {settings_module!r} "
            "(from DJANGO_SETTINGS_MODULE). Check the name, and run from the directory "
            "that contains the project package."
        )


def _setup_django(settings_module: str) -> None:
    import django
    from django.apps import apps
    from django.core.exceptions import ImproperlyConfigured

    if apps.ready:
        return
    _check_importable(settings_module)
    try:
        django.setup()
    except ImproperlyConfigured as exc:
        raise ProjectError(f"Django settings {settings_module!r} are not usable: {exc}") from exc


def import_application(target: Target, *, settings_hint: str | None) -> ASGIApp:
    """Import ``target`` (Django already set up if possible) and return the application."""
    from django.core.exceptions import ImproperlyConfigured

    try:
        module = importlib.import_module(target.module)
    except ImproperlyConfigured as exc:
        if os.environ.get("DJANGO_SETTINGS_MODULE"):
            raise
        raise ProjectError(_no_settings_message(settings_hint)) from exc
    except ModuleNotFoundError as exc:
        if exc.name and (target.module == exc.name or target.module.startswith(exc.name + ".")):
            raise ProjectError(
                f"Cannot import {target.module!r}: no module named {exc.name!r} "
                f"(current directory {os.getcwd()!r} is on sys.path)"
            ) from exc
        raise
    app: Any = module
    for part in target.attr.split("."):
        try:
            app = getattr(app, part)
        except AttributeError:
            raise ProjectError(
                f"Module {target.module!r} has no attribute {target.attr!r}"
            ) from None
    # A module that picked its own settings (``os.environ.setdefault``) still needs setup.
    settings_module = os.environ.get("DJANGO_SETTINGS_MODULE")
    if not settings_module:
        raise ProjectError(_no_settings_message(settings_hint))
    _setup_django(settings_module)
    if not callable(app):
        raise ProjectError(f"{target} is {type(app).__name__}, not an ASGI application")
    return app


def _no_settings_message(settings_hint: str | None) -> str:
    return (
        "Cannot find the Django settings: DJANGO_SETTINGS_MODULE is not set"
        + (f" and {settings_hint!r} is not importable" if settings_hint else "")
        + ". Set it, e.g. DJANGO_SETTINGS_MODULE=myproject.settings."
    )


def settings_hint_for(module: str) -> str:
    """The settings module :func:`prepare_django` would guess for ``module``."""
    package = module.rpartition(".")[0]
    return f"{package}.settings" if package else "settings"


def ensure_default_channel_layer() -> bool:
    """Give a project without ``CHANNEL_LAYERS`` the in-memory layer; True if it did.

    A fresh project then runs ``serve`` with working groups in one process. A
    project that sets ``CHANNEL_LAYERS = {}`` has chosen no layer and keeps it.
    """
    from django.conf import settings

    if getattr(settings, "CHANNEL_LAYERS", None) is not None:
        return False
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": INMEMORY_BACKEND}}
    return True


def describe_channel_layer(alias: str = "default") -> str:
    """The configured backend path of layer ``alias``, or ``"none"``."""
    from django.conf import settings

    layers = getattr(settings, "CHANNEL_LAYERS", None) or {}
    config = layers.get(alias) if isinstance(layers, dict) else None
    if not isinstance(config, dict):
        return "none"
    path = str(config.get("BACKEND", "none"))
    # Under the alias, channels_redis.core.RedisChannelLayer is channels_runtime's: say so.
    backend = sys.modules.get(path.rpartition(".")[0])
    cls = getattr(backend, path.rpartition(".")[2], None)
    module = str(getattr(cls, "__module__", ""))
    if module.startswith("channels_runtime.") and not path.startswith("channels_runtime."):
        return f"{path} (channels_runtime's {module}.{cls.__qualname__})"  # type: ignore[union-attr]
    return path
