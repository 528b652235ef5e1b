"""Builds channel layers from the ``CHANNEL_LAYERS`` setting and keeps one per alias."""

from __future__ import annotations

import importlib
import threading
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.utils.module_loading import import_string

from .. import DEFAULT_CHANNEL_LAYER
from ..exceptions import InvalidChannelLayerError
from ..metrics import layers as layer_metrics
from .base import BaseChannelLayer


def _import_backend(path: str, alias: str) -> type[BaseChannelLayer]:
    """Import ``path``; a missing module or attribute is a configuration error,
    but an ImportError raised *inside* the backend's own module is not hidden."""
    module_path, _, class_name = path.rpartition(".")
    if not module_path:
        raise InvalidChannelLayerError(
            f"BACKEND {path!r} for channel layer {alias!r} is not a dotted path to a class"
        )
    try:
        importlib.import_module(module_path)
    except ModuleNotFoundError as exc:
        # Only a configuration error if the missing module is the backend's own path.
        missing = exc.name
        if missing is not None and (
            module_path == missing or module_path.startswith(missing + ".")
        ):
            raise InvalidChannelLayerError(
                f"Cannot import BACKEND {path!r} specified for channel layer {alias!r}: "
                f"no module named {missing!r}"
            ) from exc
        raise
    try:
        backend: type[BaseChannelLayer] = import_string(path)
    except ImportError as exc:
        raise InvalidChannelLayerError(
            f"Cannot import BACKEND {path!r} specified for channel layer {alias!r}: "
            f"module {module_path!r} has no attribute {class_name!r}"
        ) from exc
    return backend


class ChannelLayerManager:
    """Lazily instantiates one layer per alias of ``settings.CHANNEL_LAYERS``.

    Layers are cached until the setting changes (``override_settings`` in tests
    resets them). Every layer made is remembered so that :meth:`close_all` can
    close it at server shutdown.
    """

    def __init__(self) -> None:
        self.backends: dict[str, Any] = {}
        self._lock = threading.Lock()
        setting_changed.connect(self._reset_backends)

    def _reset_backends(self, setting: str, **kwargs: Any) -> None:
        if setting == "CHANNEL_LAYERS":
            with self._lock:
                self.backends = {}

    @property
    def configs(self) -> dict[str, Any]:
        configs = getattr(settings, "CHANNEL_LAYERS", {})
        if not isinstance(configs, dict):
            raise InvalidChannelLayerError(
                f"CHANNEL_LAYERS must be a dict of alias -> config, got {configs!r}"
            )
        return configs

    def _config(self, name: str) -> dict[str, Any]:
        config = self.configs[name]
        if not isinstance(config, dict):
            raise InvalidChannelLayerError(
                f"CHANNEL_LAYERS[{name!r}] must be a dict with a BACKEND key, got {config!r}"
            )
        return config

    def make_backend(self, name: str) -> Any:
        """Instantiate the layer for alias ``name`` from its ``CONFIG``."""
        return self._make_backend(name, self._config(name).get("CONFIG", {}))

    def make_test_backend(self, name: str) -> Any:
        """Instantiate the layer for alias ``name`` from its ``TEST_CONFIG``."""
        try:
            config = self._config(name)["TEST_CONFIG"]
        except KeyError:
            raise InvalidChannelLayerError(f"No TEST_CONFIG specified for {name}") from None
        return self._make_backend(name, config)

    def _make_backend(self, name: str, config: dict[str, Any]) -> Any:
        layer_config = self._config(name)
        if "ROUTING" in layer_config:
            raise InvalidChannelLayerError(
                f"ROUTING key found for {name} - this is no longer needed in Channels 2."
            )
        try:
            path = layer_config["BACKEND"]
        except KeyError:
            raise InvalidChannelLayerError(f"No BACKEND specified for {name}") from None
        backend_class = _import_backend(path, name)
        if not isinstance(config, dict):
            raise InvalidChannelLayerError(
                f"CONFIG for channel layer {name!r} must be a dict, got {config!r}"
            )
        try:
            layer = backend_class(**config)
        except TypeError as exc:
            raise InvalidChannelLayerError(
                f"Invalid CONFIG for channel layer {name!r} ({path}): {exc}"
            ) from exc
        layer_metrics.track(layer, name)  # labelled by alias; nothing is counted when off
        return layer

    def __getitem__(self, key: str) -> Any:
        try:
            return self.backends[key]
        except KeyError:
            pass
        with self._lock:
            if key not in self.backends:
                self.backends[key] = self.make_backend(key)
            return self.backends[key]

    def __contains__(self, key: str) -> bool:
        return key in self.configs

    def set(self, key: str, layer: Any) -> Any:
        """Point ``key`` at ``layer`` and return the layer it replaced (or ``None``).

        Handy in tests for swapping a backend in and out.
        """
        with self._lock:
            old = self.backends.get(key)
            self.backends[key] = layer
        return old

    async def close_all(self) -> None:
        """Close every layer made so far and forget them (server shutdown)."""
        with self._lock:
            layers = list(self.backends.values())
            self.backends = {}
        seen: set[int] = set()
        for layer in layers:
            if id(layer) in seen:
                continue
            seen.add(id(layer))
            close = getattr(layer, "close", None)
            if close is not None:
                await close()


#: The process-wide manager, as ``channels.layers.channel_layers``.
channel_layers = ChannelLayerManager()


def get_channel_layer(alias: str = DEFAULT_CHANNEL_LAYER) -> Any:
    """The layer configured under ``alias``, or ``None`` when there is no such alias."""
    layer = channel_layers.backends.get(alias)
    if layer is not None:
        return layer
    if alias not in channel_layers:
        return None
    return channel_layers[alias]
