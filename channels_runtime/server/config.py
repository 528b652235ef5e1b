"""Loading and checking Hypercorn settings from ``hypercorn.toml`` and command-line flags.

Hypercorn's own ``Config.from_mapping`` accepts anything: a misspelt key becomes
a stray attribute that nothing reads, and a wrong type or an unknown worker
class only fails later, deep inside ``run()``, or never. A server that silently
ignores ``workerz = 4`` is worse than one that refuses to start, so every key
and value is checked here against a table of Hypercorn's settings first. The
error names the source (file or flag), the key and the offending value; the
command line turns it into exit status 2, the conventional "usage error".

The file format stays Hypercorn's own, so one ``hypercorn.toml`` serves both
``channels-runtime serve`` and plain ``hypercorn --config``.
"""

from __future__ import annotations

import difflib
import importlib.util
import math
import ssl
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from hypercorn.config import Config

__all__ = [
    "DEFAULT_CONFIG_FILE",
    "LOG_LEVELS",
    "SERVE_DEFAULTS",
    "SETTINGS",
    "WORKER_CLASSES",
    "ConfigError",
    "build_config",
    "check_combination",
    "check_setting",
    "load_toml",
]

#: The file ``channels-runtime serve`` reads when ``--config`` is not given.
DEFAULT_CONFIG_FILE = "hypercorn.toml"

#: Worker classes and the module each one needs.
WORKER_CLASSES: dict[str, str | None] = {"asyncio": None, "uvloop": "uvloop", "trio": "trio"}

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


class ConfigError(Exception):
    """A server setting is unknown or has a value Hypercorn cannot use.

    ``key`` and ``value`` name the culprit so callers (and tests) need not
    parse the message.
    """

    def __init__(self, message: str, *, key: str | None = None, value: object = None) -> None:
        super().__init__(message)
        self.key = key
        self.value = value


Checker = Callable[[Any], Any]


class _Invalid(Exception):
    """Raised by a checker: the value is wrong, the text says what was expected."""


def _type_name(value: object) -> str:
    return type(value).__name__


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise _Invalid(f"expected a string, got {_type_name(value)}")
    return value


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Invalid(f"expected true or false, got {_type_name(value)}")
    return value


def _integer(minimum: int | None = None, maximum: int | None = None) -> Checker:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Invalid(f"expected an integer, got {_type_name(value)}")
        if minimum is not None and value < minimum:
            raise _Invalid(f"must be >= {minimum}")
        if maximum is not None and value > maximum:
            raise _Invalid(f"must be <= {maximum}")
        return value

    return check


def _seconds(*, positive: bool = False) -> Checker:
    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _Invalid(f"expected a number of seconds, got {_type_name(value)}")
        if not math.isfinite(value):
            raise _Invalid("must be a finite number of seconds")
        if positive and value <= 0:
            raise _Invalid("must be > 0")
        if value < 0:
            raise _Invalid("must be >= 0")
        return float(value)

    return check


def _ping_interval(value: Any) -> float | None:
    """Seconds between pings; 0 turns pings off (Hypercorn's ``None``, which TOML cannot say)."""
    seconds = _seconds()(value)
    return seconds or None


def _string_list(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise _Invalid("expected a string or a list of strings")
    return list(value)


def _check_bind(bind: str) -> str:
    """Hypercorn's address forms: ``host[:port]``, ``[v6]:port``, ``unix:PATH``, ``fd://N``."""
    if bind.startswith("unix:"):
        if not bind[5:]:
            raise _Invalid(f"{bind!r}: unix: needs a socket path")
        return bind
    if bind.startswith("fd://"):
        if not bind[5:].isdigit():
            raise _Invalid(f"{bind!r}: fd:// needs a file descriptor number")
        return bind
    host, sep, port_text = bind.replace("[", "").replace("]", "").rpartition(":")
    if not sep or not port_text.isdigit():
        # Hypercorn reads a bare host (or anything it cannot split) as port 8000.
        host, port_text = bind, "8000"
    if not host:
        raise _Invalid(f"{bind!r}: missing host (use e.g. 127.0.0.1:{port_text} or 0.0.0.0)")
    if not 0 <= int(port_text) <= 65535:
        raise _Invalid(f"{bind!r}: port must be between 0 and 65535")
    return bind


def _metrics_bind(value: Any) -> str:
    """The metrics bind: one TCP ``host:port`` or ``[v6]:port`` (port 0 picks a free one)."""
    from ..metrics.exposition import parse_bind

    bind = _string(value)
    try:
        parse_bind(bind)
    except ValueError as exc:
        raise _Invalid(str(exc)) from None
    return bind


def _http_path(value: Any) -> str:
    """A path answered on the main bind: ``/something``, or ``""`` for none."""
    path = _string(value)
    if path and (not path.startswith("/") or any(c.isspace() or c in "?#" for c in path)):
        raise _Invalid("expected a URL path such as '/readyz' (or '' to turn it off)")
    return path


def _binds(value: Any) -> list[str]:
    binds = _string_list(value)
    for bind in binds:
        _check_bind(bind)
    return binds


def _choice(*choices: str) -> Checker:
    def check(value: Any) -> str:
        if not isinstance(value, str) or value.lower() not in choices:
            raise _Invalid(f"expected one of {', '.join(choices)}")
        return value.lower()

    return check


def _worker_class(value: Any) -> str:
    name = _choice(*WORKER_CLASSES)(value)
    needed = WORKER_CLASSES[name]
    if needed is not None and importlib.util.find_spec(needed) is None:
        raise _Invalid(
            f"worker class {name!r} needs the {needed!r} package, which is not installed"
        )
    return name


def _log_level(value: Any) -> str:
    return _choice(*LOG_LEVELS)(value).upper()


def _mapping(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Invalid(f"expected a table, got {_type_name(value)}")
    return value


def _verify_mode(value: Any) -> ssl.VerifyMode:
    try:
        if isinstance(value, str):
            return ssl.VerifyMode[value]
        if isinstance(value, int) and not isinstance(value, bool):
            return ssl.VerifyMode(value)
    except (KeyError, ValueError):
        pass
    raise _Invalid(f"expected one of {', '.join(mode.name for mode in ssl.VerifyMode)}")


def _verify_flags(value: Any) -> ssl.VerifyFlags:
    try:
        if isinstance(value, str):
            return ssl.VerifyFlags[value]
        if isinstance(value, int) and not isinstance(value, bool):
            return ssl.VerifyFlags(value)
    except (KeyError, ValueError):
        pass
    raise _Invalid("expected an ssl.VerifyFlags name such as VERIFY_X509_STRICT")


_PORT_OR_ID = _integer(0)

#: Every setting of Hypercorn 0.18's ``Config``, with the check for its value.
SETTINGS: dict[str, Checker] = {
    "access_log_format": _string,
    "accesslog": _string,
    "alpn_protocols": _string_list,
    "alt_svc_headers": _string_list,
    "application_path": _string,
    "backlog": _integer(1),
    "bind": _binds,
    "ca_certs": _string,
    "cert_reqs": _integer(0, 2),
    "certfile": _string,
    "ciphers": _string,
    "daemon": _boolean,
    "debug": _boolean,
    "dogstatsd_tags": _string,
    "errorlog": _string,
    "graceful_timeout": _seconds(),
    "group": _PORT_OR_ID,
    "h11_max_incomplete_size": _integer(1),
    "h11_pass_raw_headers": _boolean,
    "h2_max_concurrent_streams": _integer(1),
    "h2_max_header_list_size": _integer(1),
    "h2_max_inbound_frame_size": _integer(2**14, 2**24 - 1),
    "include_date_header": _boolean,
    "include_server_header": _boolean,
    "insecure_bind": _binds,
    "keep_alive_max_requests": _integer(1),
    "keep_alive_timeout": _seconds(),
    "keyfile": _string,
    "keyfile_password": _string,
    "logconfig": _string,
    "logconfig_dict": _mapping,
    "loglevel": _log_level,
    "max_app_queue_size": _integer(1),
    "max_requests": _integer(1),
    "max_requests_jitter": _integer(0),
    "pid_path": _string,
    "quic_bind": _binds,
    "read_timeout": _integer(1),
    "root_path": _string,
    "server_names": _string_list,
    "shutdown_timeout": _seconds(positive=True),
    "ssl_handshake_timeout": _seconds(positive=True),
    "startup_timeout": _seconds(positive=True),
    "statsd_host": _string,
    "statsd_prefix": _string,
    "umask": _integer(0, 0o777),
    "use_reloader": _boolean,
    "user": _PORT_OR_ID,
    "verify_flags": _verify_flags,
    "verify_mode": _verify_mode,
    "websocket_max_message_size": _integer(1),
    "websocket_ping_interval": _ping_interval,
    "worker_class": _worker_class,
    # 0 is Hypercorn's "serve in this process"; channels-runtime does that for 1 too.
    "workers": _integer(0),
    "wsgi_max_body_size": _integer(1),
    # channels-runtime's own settings (channels_runtime.compat.hypercorn_fixes.options);
    # plain Hypercorn keeps them as attributes of its Config, where the fixes read them.
    "metrics_bind": _metrics_bind,
    "websocket_ping_timeout": _seconds(),
    "websocket_permessage_deflate": _boolean,
    "write_timeout": _seconds(),
    # Health, readiness and draining (channels_runtime.server.health): plain Hypercorn
    # stores them and nothing reads them; serve and serve() do.
    "drain_seconds": _seconds(),
    "healthz_path": _http_path,
    "readyz_path": _http_path,
    "readiness_timeout": _seconds(positive=True),
    "readiness_database": _boolean,
}

#: What ``channels-runtime serve`` uses where neither the file nor a flag says
#: otherwise: limits a public server should have (Hypercorn's own defaults
#: allow 16 MiB messages and never ping). ``docs/serving.md`` gives the memory
#: each one bounds.
SERVE_DEFAULTS: dict[str, Any] = {
    "websocket_max_message_size": 1024 * 1024,
    "max_app_queue_size": 10,
    "websocket_ping_interval": 20.0,
    "websocket_ping_timeout": 30.0,
    "write_timeout": 30.0,
    "websocket_permessage_deflate": False,
}


def check_setting(key: str, value: Any, *, source: str) -> Any:
    """Return ``value`` checked (and normalised) for setting ``key``, or raise ConfigError.

    ``source`` says where the value came from ("hypercorn.toml", "--workers")
    and starts the message, so the user knows what to edit.
    """
    checker = SETTINGS.get(key)
    if checker is None:
        close = difflib.get_close_matches(key, SETTINGS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(
            f"{source}: unknown setting {key!r}{hint}: not a Hypercorn setting",
            key=key,
            value=value,
        )
    try:
        return checker(value)
    except _Invalid as exc:
        raise ConfigError(
            f"{source}: invalid value {value!r} for {key!r}: {exc}", key=key, value=value
        ) from None


def check_combination(settings: Mapping[str, Any]) -> None:
    """Refuse settings that are fine one by one but not together (raises ConfigError)."""
    healthz, readyz = settings.get("healthz_path"), settings.get("readyz_path")
    if healthz and healthz == readyz:
        raise ConfigError(
            f"healthz_path and readyz_path are both {healthz!r}: give them different paths",
            key="readyz_path",
            value=readyz,
        )


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a Hypercorn TOML file and check every key and value in it."""
    path = Path(path)
    try:
        with path.open("rb") as file:
            data = tomllib.load(file)
    except FileNotFoundError:
        raise ConfigError(f"{path}: configuration file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read configuration file: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return {key: check_setting(key, value, source=str(path)) for key, value in data.items()}


def build_config(*layers: Mapping[str, Any]) -> Config:
    """A Hypercorn ``Config`` from already-checked mappings; later ones win.

    Only keys present in a mapping are set, so Hypercorn's defaults stay in
    force for everything else.
    """
    merged: dict[str, Any] = {}
    for layer in layers:
        merged.update(layer)
    return Config.from_mapping(merged)
