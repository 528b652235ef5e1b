"""``import channels`` (and ``channels_redis``, ``daphne``) resolved to channels_runtime.

A Channels project imports ``channels`` in more places than its authors can
rename: the libraries it depends on import it too, its settings name
``channels_redis`` backends, and ``INSTALLED_APPS`` lists ``"channels"`` and
``"daphne"``. This module puts one finder at the front of ``sys.meta_path``
that answers for those names with channels_runtime's own module objects:
``sys.modules["channels.routing"] is channels_runtime.routing``, so a class
imported under either name is the same class and ``isinstance`` and
subclassing hold both ways. Nothing is copied and nothing is patched.

Which names
    :data:`MODULES` maps each module of Django Channels 4.2/4.3, the two layer
    modules of channels_redis and Daphne's Django app to the module that stands
    in for it. A name under ``channels``, ``channels_redis`` or ``daphne`` that
    is not in the table raises ``ModuleNotFoundError`` naming channels_runtime
    and what to use instead (Channels 4 has no ``channels.http`` either, so
    code that tries it and falls back keeps working). The top-level
    ``channels`` and ``daphne`` are small packages of ours
    (:mod:`channels_runtime.alias.channels`, :mod:`channels_runtime.alias.daphne`)
    because Django's app registry needs an app config labelled ``channels`` /
    ``daphne`` for those ``INSTALLED_APPS`` entries; their submodules are the
    runtime's modules themselves.

Two ways of answering
    *Taking over*: ``channels`` is channels_runtime even when Django Channels
    is installed too (an explicit choice: ``channels-runtime serve``,
    ``"channels_runtime"`` in ``INSTALLED_APPS``, ``--channels-alias`` for
    pytest, ``import channels_runtime.alias.enable``). The first time a name is
    answered while the real distribution is installed, one warning says which
    versions are shadowed. *Fallback* (the pytest plugin's default): the finder
    answers only when no other finder can find the package, where ``import
    channels`` would otherwise fail anyway.

The switch
    ``CHANNELS_RUNTIME_ALIAS=0`` in the environment, or
    ``CHANNELS_RUNTIME_ALIAS = False`` in the settings, turns the alias off
    wherever it is installed; ``1``/``True`` makes every route take over. The
    environment wins over the settings.

Too late is an error
    Taking over after the real package was imported would leave two copies of
    Channels in one process, whose classes differ: :func:`install` raises
    :class:`AliasError` instead of aliasing half of it.

See ``docs/running-unmodified-channels-projects.md``.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.metadata
import logging
import os
import sys
import threading
from collections.abc import Sequence
from types import ModuleType
from typing import Any

from django.core.exceptions import ImproperlyConfigured

__all__ = [
    "CHANNELS_API_VERSION",
    "DISTRIBUTIONS",
    "ENV_VAR",
    "MODULES",
    "SETTING",
    "AliasError",
    "install",
    "is_stand_in",
    "submodule_attribute",
    "switch",
    "takes_over",
    "uninstall",
]

logger = logging.getLogger("channels_runtime.alias")

#: Environment variable that turns the alias off (``0``) or on everywhere (``1``).
ENV_VAR = "CHANNELS_RUNTIME_ALIAS"
#: Django setting with the same meaning (``False`` / ``True``); the environment wins.
SETTING = "CHANNELS_RUNTIME_ALIAS"

#: The Channels release whose API the ``channels`` stand-in reports as ``__version__``,
#: so version checks in libraries take their Channels 4 branch.
CHANNELS_API_VERSION = "4.2"

_HERE = __name__
_ON = frozenset({"1", "true", "on", "yes"})
_OFF = frozenset({"0", "false", "off", "no"})

#: Top-level package -> the distribution that normally provides it.
DISTRIBUTIONS = {"channels": "channels", "channels_redis": "channels-redis", "daphne": "daphne"}

_CHANNELS_MODULES = (
    "auth",
    "consumer",
    "db",
    "exceptions",
    "generic",
    "generic.http",
    "generic.websocket",
    "layers",
    "management",
    "management.commands",
    "management.commands.runworker",
    # Not in Channels 4 (Daphne has it), but the "channels" app's commands are
    # channels_runtime's, and Django imports each one under the app's name.
    "management.commands.runserver",
    "middleware",
    "routing",
    "security",
    "security.websocket",
    "sessions",
    "testing",
    "testing.application",
    "testing.http",
    "testing.live",
    "testing.websocket",
    "worker",
)

#: Every name the alias answers for -> the module that is imported in its place.
MODULES: dict[str, str] = {
    "channels": f"{_HERE}.channels",
    "channels.apps": f"{_HERE}.channels.apps",
    **{f"channels.{name}": f"channels_runtime.{name}" for name in _CHANNELS_MODULES},
    "channels_redis": "channels_runtime.layers.redis",
    "channels_redis.core": "channels_runtime.layers.redis.core",
    "channels_redis.pubsub": "channels_runtime.layers.redis.pubsub",
    "daphne": f"{_HERE}.daphne",
    "daphne.apps": f"{_HERE}.daphne.apps",
    "daphne.management": "channels_runtime.management",
    "daphne.management.commands": "channels_runtime.management.commands",
    "daphne.management.commands.runserver": "channels_runtime.management.commands.runserver",
    "daphne.management.commands.runworker": "channels_runtime.management.commands.runworker",
}

#: What to say about names that are not in :data:`MODULES`.
_MISSING = {
    "channels.http": (
        "Channels 3's AsgiHandler, removed in Channels 4. Use "
        "django.core.asgi.get_asgi_application() (ProtocolTypeRouter serves it with "
        "channels_runtime.http) or channels_runtime.http.get_asgi_application()"
    ),
    "channels.utils": (
        "Channels' internal helpers (name_that_thing, await_many_dispatch); channels_runtime "
        "has no such module: consumers dispatch through channels_runtime.dispatch"
    ),
    "channels_redis": (
        "channels_runtime stands in for channels_redis.core.RedisChannelLayer and "
        "channels_redis.pubsub.RedisPubSubChannelLayer only (channels_runtime.layers.redis)"
    ),
    "daphne": (
        "Daphne's own server, which channels_runtime replaces with Hypercorn "
        "(channels-runtime serve); only Daphne's Django app (INSTALLED_APPS, runserver) "
        "is stood in for"
    ),
}

_OFF_HINT = (
    f"or turn the alias off ({ENV_VAR}=0 in the environment, or {SETTING} = False in "
    "settings) to run the installed package itself"
)


class AliasError(ImproperlyConfigured):
    """The alias cannot be put in place as configured (already too late, or a bad switch)."""


def _missing_message(name: str) -> str:
    reason = _MISSING.get(name) or _MISSING.get(name.partition(".")[0])
    if reason is None:
        reason = (
            "not a module of Django Channels 4.2/4.3; channels_runtime's own modules "
            "are imported as channels_runtime.*"
        )
    return (
        f"No module named {name!r} ({name.partition('.')[0]} is channels_runtime here, "
        f"through its alias): {reason}. See docs/running-unmodified-channels-projects.md, "
        f"{_OFF_HINT}."
    )


def _parse_switch(value: object, where: str) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        if not text:
            return None
        if text in _ON:
            return True
        if text in _OFF:
            return False
    raise AliasError(f"{where} must be on or off (1 or 0, True or False), got {value!r}")


def switch(*, read_settings: bool = False) -> bool | None:
    """The user's choice: ``False`` (off), ``True`` (take over everywhere) or ``None``.

    The environment variable wins; the setting is consulted only once Django's
    settings are loaded, unless ``read_settings`` asks to load them (from
    ``DJANGO_SETTINGS_MODULE``) now.
    """
    chosen = _parse_switch(os.environ.get(ENV_VAR), f"The environment variable {ENV_VAR}")
    if chosen is not None:
        return chosen
    conf = sys.modules.get("django.conf")
    if conf is None and read_settings and os.environ.get("DJANGO_SETTINGS_MODULE"):
        conf = importlib.import_module("django.conf")
    if conf is None:
        return None
    settings = conf.settings
    if not (settings.configured or (read_settings and os.environ.get("DJANGO_SETTINGS_MODULE"))):
        return None
    return _parse_switch(getattr(settings, SETTING, None), f"settings.{SETTING}")


def is_stand_in(root: str, module: object | None = None) -> bool:
    """Whether ``module`` (default: the loaded ``root`` package) is the alias's stand-in."""
    if module is None:
        module = sys.modules.get(root)
    return module is not None and getattr(module, "__name__", None) == MODULES.get(root)


def _elsewhere(root: str, skip: object) -> bool:
    """Whether another finder on ``sys.meta_path`` finds the real ``root`` package.

    A namespace package (a bare directory of that name on ``sys.path``) does not
    count: an installed Channels is a regular package.
    """
    for finder in list(sys.meta_path):
        if finder is skip:
            continue
        find_spec = getattr(finder, "find_spec", None)
        if find_spec is None:
            continue
        try:
            spec = find_spec(root, None)
        except ImportError:
            continue
        if spec is not None and not (spec.origin is None and spec.submodule_search_locations):
            return True
    return False


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "(version unknown)"


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Answers for the names in :data:`MODULES` with the modules that stand in for them.

    The loader hands the import system the target module itself. The import
    system then sets ``__spec__`` on it to the alias's spec (it always does,
    even for an existing module), so :meth:`exec_module` puts the module's own
    spec back: ``importlib.reload`` and tools that read ``__spec__`` still see
    ``channels_runtime.routing``.
    """

    def __init__(self) -> None:
        self.take_over = False
        self.route = ""
        self._announced = False
        self._lock = threading.Lock()

    # -- finding ----------------------------------------------------------------

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None = None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        root, _, rest = fullname.partition(".")
        if root not in DISTRIBUTIONS:
            return None
        if rest:
            # The package was imported first; its submodules are ours if it is.
            if not is_stand_in(root):
                return None
        elif not self._answers_for(root):
            return None
        if fullname not in MODULES:
            raise ModuleNotFoundError(_missing_message(fullname), name=fullname)
        # Not a package spec: the import system would give a module without
        # ``__path__`` an empty one. Packages keep their own ``__path__``.
        return importlib.machinery.ModuleSpec(fullname, self)

    def _answers_for(self, root: str) -> bool:
        chosen = switch()
        if chosen is False:
            return False
        if self.take_over or chosen is True:
            return True
        return not _elsewhere(root, self)

    def _announce(self) -> None:
        """Log, once per process, which installed distributions the alias shadows.

        Called when the first stand-in package is loaded, not while finding it:
        ``find_spec`` runs under the interpreter's global import lock, where a
        logging handler that imports something could deadlock with another thread.
        """
        with self._lock:
            if self._announced:
                return
            self._announced = True
        taking_over = self.take_over or switch() is True
        # Falling back, the alias only answers where nothing else would: it shadows nothing.
        shadowed = [
            f"{distribution} {_version(distribution)}"
            for root, distribution in DISTRIBUTIONS.items()
            if taking_over and _elsewhere(root, self)
        ]
        route = self.route or f"{ENV_VAR}=1"
        if shadowed:
            logger.warning(
                "channels_runtime stands in for channels, channels_redis and daphne (alias "
                "installed by %s): the installed %s %s not used in this process. Uninstall "
                "%s, or set %s=0 to use %s instead.",
                route,
                ", ".join(shadowed),
                "is" if len(shadowed) == 1 else "are",
                "it" if len(shadowed) == 1 else "them",
                ENV_VAR,
                "it" if len(shadowed) == 1 else "them",
            )
        else:
            logger.debug("channels_runtime stands in for channels (alias installed by %s)", route)

    # -- loading ----------------------------------------------------------------

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        if spec.name in DISTRIBUTIONS:
            self._announce()
        target_name = MODULES[spec.name]
        try:
            target = importlib.import_module(target_name)
        except ImportError as exc:
            exc.add_note(f"(importing {target_name}, which stands in for {spec.name})")
            raise
        spec.loader_state = target.__spec__
        return target

    def exec_module(self, module: ModuleType) -> None:
        spec = module.__spec__
        if spec is not None and spec.loader is self:
            module.__spec__ = spec.loader_state


_finder: _Finder | None = None
_install_lock = threading.Lock()


def _already_imported() -> list[tuple[str, ModuleType]]:
    """The real packages (not our stand-ins) already in ``sys.modules``."""
    found = []
    for root in DISTRIBUTIONS:
        module = sys.modules.get(root)
        if module is not None and not is_stand_in(root, module):
            found.append((root, module))
    return found


def install(
    *,
    route: str,
    take_over: bool = True,
    read_settings: bool = False,
    too_late_hint: str = "",
) -> bool:
    """Put the finder at the front of ``sys.meta_path``; returns whether the alias is on.

    ``route`` names who installs it (for the log line). With ``take_over`` the
    names resolve to channels_runtime even when the real packages are
    installed; without it only where they are not. The switch (:func:`switch`)
    can turn either off, or make a fallback take over. Taking over after the
    real package was imported raises :class:`AliasError`, with
    ``too_late_hint`` saying how this route avoids it. Calling it again only
    ever strengthens the mode.
    """
    global _finder
    chosen = switch(read_settings=read_settings)
    if chosen is False:
        return False
    take_over = take_over or chosen is True
    with _install_lock:
        if take_over:
            imported = _already_imported()
            if imported:
                raise AliasError(_too_late_message(route, imported, too_late_hint))
        if _finder is None:
            _finder = _Finder()
        if _finder not in sys.meta_path:
            sys.meta_path.insert(0, _finder)
        if take_over and not _finder.take_over:
            _finder.take_over = True
            _finder.route = route
    return True


def _too_late_message(route: str, imported: list[tuple[str, ModuleType]], hint: str) -> str:
    described = ", ".join(
        f"{root} {_version(DISTRIBUTIONS[root])} (from {getattr(module, '__file__', '?')})"
        for root, module in imported
    )
    return (
        f"{route} cannot make channels_runtime stand in for {described}: "
        f"{'it was' if len(imported) == 1 else 'they were'} already imported, so this process "
        "would hold two copies whose classes differ (isinstance checks and layers would not "
        f"match). {hint + ' ' if hint else ''}Install the alias before anything imports them, "
        f"{_OFF_HINT}."
    )


def uninstall() -> None:
    """Remove the finder. Modules already imported through it stay imported."""
    global _finder
    with _install_lock:
        if _finder is not None and _finder in sys.meta_path:
            sys.meta_path.remove(_finder)
        _finder = None


def takes_over() -> bool:
    """Whether the installed alias takes over from installed packages (not only fallback)."""
    return _finder is not None and _finder in sys.meta_path and _finder.take_over


def submodule_attribute(root: str, name: str) -> Any:
    """A stand-in package's attribute ``name``: the submodule, if it has been imported.

    A package's submodules become its attributes when they are imported, under
    whichever name. ``import channels.testing`` imports the runtime's routing
    module too (as Channels' testing imports ``channels.routing``), so
    ``channels.routing`` must then work even though nothing imported it by
    that name.
    """
    full = f"{root}.{name}"
    target = MODULES.get(full)
    if target is None or target not in sys.modules:
        raise AttributeError(f"module {root!r} has no attribute {name!r}")
    return importlib.import_module(full)
