"""Turning the ``hosts`` setting into connection specs, opening connections, and
spreading names over shards.

``hosts`` takes the forms channels_redis accepts, so settings carry over:

* ``"redis://[[user]:password@]host[:port][/db]"``, ``"rediss://..."`` (TLS) or
  ``"unix:///path/to/redis.sock?db=0"``;
* ``(host, port)`` tuples;
* dicts: ``{"address": url, ...}`` or ``{"host": ..., "port": ..., ...}``, with the
  options below; a dict with ``"sentinels"`` and ``"master_name"`` finds the
  master through Redis Sentinel.
"""

from __future__ import annotations

import hashlib
import logging
import ssl
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import anyio

from .protocol import CONNECTION_ERRORS, Connection, ReplyError, open_stream

__all__ = ["HostSpec", "decode_hosts", "named_master", "open_connection", "shard_index"]

logger = logging.getLogger("channels_runtime.layers.redis")

DEFAULT_HOST = ("localhost", 6379)

_SSL_OPTIONS = frozenset(
    {"ssl", "ssl_context", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_password",
     "ssl_cert_reqs", "ssl_check_hostname"}
)  # fmt: skip
_HOST_OPTIONS = frozenset(
    {"address", "host", "port", "db", "username", "password", "client_name", "unix_socket_path",
     "socket_connect_timeout", "socket_timeout", "max_connections", "sentinels", "master_name",
     "sentinel_kwargs"}
) | _SSL_OPTIONS  # fmt: skip


class ConfigurationError(TypeError):
    """A ``hosts`` entry the layer cannot use. A ``TypeError`` so that the layer
    manager reports it as an invalid ``CONFIG``."""


@dataclass(frozen=True)
class HostSpec:
    """Everything needed to open a connection to one shard."""

    host: str | None = DEFAULT_HOST[0]
    port: int = DEFAULT_HOST[1]
    unix_path: str | None = None
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ssl_context: ssl.SSLContext | None = field(default=None, repr=False)
    tls_hostname: str | None = None
    client_name: str | None = None
    connect_timeout: float | None = None
    socket_timeout: float | None = None
    max_connections: int | None = None
    #: Sentinel mode: where the sentinels are, which master to ask them for, and
    #: how to talk to the sentinels themselves.
    sentinels: tuple[tuple[str, int], ...] = ()
    master_name: str | None = None
    sentinel_spec: HostSpec | None = None

    def describe(self) -> str:
        """Where this spec points, for messages (never includes the password)."""
        if self.sentinels:
            where = ",".join(f"{h}:{p}" for h, p in self.sentinels)
            return f"sentinel://{where}/{self.master_name}"
        scheme = "rediss" if self.ssl_context is not None else "redis"
        if self.unix_path is not None:
            return f"unix://{self.unix_path}?db={self.db}"
        return f"{scheme}://{self.host}:{self.port}/{self.db}"


def _make_ssl_context(options: Mapping[str, Any], where: str) -> ssl.SSLContext | None:
    """Build the TLS context from the redis-py style ``ssl_*`` options, or
    return ``None`` when TLS is not asked for.

    Files are read here, at configuration time, so that a wrong path or a key
    that does not match its certificate is a :class:`ConfigurationError` naming
    the option, not a connection failure retried forever.
    """
    context = options.get("ssl_context")
    if context is not None:
        if not isinstance(context, ssl.SSLContext):
            raise ConfigurationError(f"ssl_context must be an ssl.SSLContext, got {context!r}")
        return context
    if not options.get("ssl") and not any(k in options for k in _SSL_OPTIONS - {"ssl"}):
        return None
    try:
        context = ssl.create_default_context(cafile=options.get("ssl_ca_certs"))
    except (OSError, ValueError) as exc:
        raise ConfigurationError(
            f"ssl_ca_certs {options.get('ssl_ca_certs')!r} in {where} cannot be loaded: {exc}"
        ) from exc
    reqs = options.get("ssl_cert_reqs", "required")
    levels = {
        "none": ssl.CERT_NONE,
        "optional": ssl.CERT_OPTIONAL,
        "required": ssl.CERT_REQUIRED,
    }
    if isinstance(reqs, str):
        if reqs.lower() not in levels:
            raise ConfigurationError(
                f"ssl_cert_reqs must be 'none', 'optional' or 'required', got {reqs!r}"
            )
        reqs = levels[reqs.lower()]
    check_hostname = options.get("ssl_check_hostname")
    if isinstance(check_hostname, str):
        check_hostname = check_hostname.lower() in ("1", "true", "yes", "on")
    if check_hostname is None:
        check_hostname = reqs != ssl.CERT_NONE
    # check_hostname must be turned off before verification can be.
    context.check_hostname = bool(check_hostname)
    context.verify_mode = reqs
    certfile, keyfile = options.get("ssl_certfile"), options.get("ssl_keyfile")
    if certfile:
        _load_client_certificate(context, certfile, keyfile, options.get("ssl_password"), where)
    elif keyfile:
        raise ConfigurationError(
            f"ssl_keyfile in {where} without ssl_certfile: a client certificate needs both "
            "(or ssl_certfile alone, holding the certificate and its key)"
        )
    return context


def _load_client_certificate(
    context: ssl.SSLContext, certfile: str, keyfile: str | None, password: Any, where: str
) -> None:
    """Load the client certificate a server with ``tls-auth-clients`` asks for.

    Without ``ssl_password``, an encrypted key is an error here: left to itself,
    OpenSSL would prompt for the passphrase on the terminal and block the
    process, a hang that is hard to trace in a server.
    """

    def no_password() -> str:
        raise ConfigurationError(
            f"the private key for ssl_certfile {certfile!r} in {where} is encrypted: "
            "give its passphrase as ssl_password"
        )

    try:
        context.load_cert_chain(certfile, keyfile, password if password else no_password)
    except ConfigurationError:
        raise
    except (OSError, ValueError) as exc:
        key = f" and ssl_keyfile {keyfile!r}" if keyfile else ""
        hint = ""
        if isinstance(exc, ssl.SSLError):  # read, but not understood
            if password:
                hint = " (wrong ssl_password?)"
            elif not keyfile:
                hint = " (without ssl_keyfile, it must hold the private key too)"
        raise ConfigurationError(
            f"ssl_certfile {certfile!r}{key} in {where} cannot be loaded{hint}: {exc}"
        ) from exc


def _positive(name: str, value: Any, kind: type = float) -> Any:
    if value is None:
        return None
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise ConfigurationError(f"{name} must be a positive number, got {value!r}") from None
    if number <= 0:
        raise ConfigurationError(f"{name} must be a positive number, got {value!r}")
    return number


def _from_url(url: str) -> dict[str, Any]:
    """The options a URL carries, as a dict in the ``hosts`` dict vocabulary."""
    parts = urlsplit(url)
    options: dict[str, Any] = {}
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    if parts.scheme == "unix":
        options["unix_socket_path"] = unquote(parts.path)
    elif parts.scheme in ("redis", "rediss"):
        options["host"] = unquote(parts.hostname or DEFAULT_HOST[0])
        try:
            options["port"] = parts.port or DEFAULT_HOST[1]
        except ValueError:
            raise ConfigurationError(f"invalid port in Redis URL {url!r}") from None
        path = parts.path.strip("/")
        if path:
            try:
                options["db"] = int(path)
            except ValueError:
                raise ConfigurationError(
                    f"the path of Redis URL {url!r} must be a database number"
                ) from None
        if parts.scheme == "rediss":
            options["ssl"] = True
    else:
        raise ConfigurationError(
            f"Redis URL {url!r} must start with redis://, rediss:// or unix://"
        )
    if parts.username:
        options["username"] = unquote(parts.username)
    if parts.password:
        options["password"] = unquote(parts.password)
    for key, value in query.items():
        if key in ("db", "max_connections"):
            options[key] = int(value)
        elif key in ("socket_timeout", "socket_connect_timeout"):
            options[key] = float(value)
        elif key in _HOST_OPTIONS:
            options[key] = value
        else:
            raise ConfigurationError(f"unknown option {key!r} in Redis URL {url!r}")
    return options


def _spec_from_options(options: Mapping[str, Any], where: str) -> HostSpec:
    unknown = set(options) - _HOST_OPTIONS
    if unknown:
        raise ConfigurationError(
            f"unknown option(s) {sorted(unknown)} in {where}; supported: {sorted(_HOST_OPTIONS)}"
        )
    options = dict(options)
    if "address" in options:
        address = options.pop("address")
        if not isinstance(address, str):
            raise ConfigurationError(f"address in {where} must be a URL string, got {address!r}")
        # Explicit keys in the dict win over what the URL says.
        options = {**_from_url(address), **options}
    ssl_context = _make_ssl_context(options, where)
    sentinels: tuple[tuple[str, int], ...] = ()
    sentinel_spec = None
    master_name = options.get("master_name")
    if options.get("sentinels") is not None:
        raw = options["sentinels"]
        if not master_name:
            raise ConfigurationError(f"{where} lists sentinels but no master_name")
        try:
            sentinels = tuple((str(h), int(p)) for h, p in raw)
        except (TypeError, ValueError):
            raise ConfigurationError(
                f"sentinels in {where} must be a list of (host, port) pairs, got {raw!r}"
            ) from None
        if not sentinels:
            raise ConfigurationError(f"sentinels in {where} is empty")
        sentinel_options = dict(options.get("sentinel_kwargs") or {})
        sentinel_spec = _spec_from_options(sentinel_options, f"sentinel_kwargs of {where}")
    elif master_name:
        raise ConfigurationError(f"{where} has a master_name but no sentinels")
    db = options.get("db", 0)
    if not isinstance(db, int) or db < 0:
        raise ConfigurationError(f"db in {where} must be a non-negative integer, got {db!r}")
    port = options.get("port", DEFAULT_HOST[1])
    try:
        port = int(port)
    except (TypeError, ValueError):
        raise ConfigurationError(f"port in {where} must be an integer, got {port!r}") from None
    return HostSpec(
        host=options.get("host", DEFAULT_HOST[0]),
        port=port,
        unix_path=options.get("unix_socket_path"),
        db=db,
        username=options.get("username"),
        password=options.get("password"),
        ssl_context=ssl_context,
        tls_hostname=options.get("host"),
        client_name=options.get("client_name"),
        connect_timeout=_positive("socket_connect_timeout", options.get("socket_connect_timeout")),
        socket_timeout=_positive("socket_timeout", options.get("socket_timeout")),
        max_connections=_positive("max_connections", options.get("max_connections"), int),
        sentinels=sentinels,
        master_name=master_name,
        sentinel_spec=sentinel_spec,
    )


def decode_hosts(hosts: Sequence[Any] | None) -> list[HostSpec]:
    """Turn the ``hosts`` setting into one :class:`HostSpec` per shard."""
    if not hosts:
        return [HostSpec()]
    if isinstance(hosts, (str, bytes, dict)):
        raise ConfigurationError(
            f"hosts must be a list of Redis hosts, even when there is only one: hosts=[{hosts!r}]"
        )
    specs = []
    for index, entry in enumerate(hosts):
        where = f"hosts[{index}]"
        if isinstance(entry, str):
            specs.append(_spec_from_options(_from_url(entry), where))
        elif isinstance(entry, Mapping):
            specs.append(_spec_from_options(entry, where))
        elif isinstance(entry, (tuple, list)) and len(entry) == 2:
            specs.append(_spec_from_options({"host": entry[0], "port": entry[1]}, where))
        else:
            raise ConfigurationError(
                f"{where} must be a URL, a (host, port) pair or a dict, got {entry!r}"
            )
    return specs


# -- sharding ------------------------------------------------------------------


def _jump_hash(key: int, buckets: int) -> int:
    """Lamping and Veach's jump consistent hash: adding a bucket at the end moves
    only ``1/buckets`` of the keys, all of them to the new bucket."""
    b, j = -1, 0
    while j < buckets:
        b = j
        key = (key * 2862933555777941757 + 1) & 0xFFFFFFFFFFFFFFFF
        j = int((b + 1) * ((1 << 31) / ((key >> 33) + 1)))
    return b


def shard_index(name: str, shards: int) -> int:
    """The shard that stores ``name``: the same in every process, and stable for
    existing names when a host is appended to ``hosts``."""
    if shards == 1:
        return 0
    digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
    return _jump_hash(int.from_bytes(digest, "little"), shards)


# -- opening connections ---------------------------------------------------------


class ServerTime:
    """How far the server's clock is ahead of ours, in milliseconds.

    Message deadlines are written in server time, so that the expiry of a
    message does not depend on how well the sending and receiving hosts' clocks
    agree, only on each knowing its offset from the shard's (measured with
    ``TIME`` each time a connection opens, to within half a round trip).
    """

    __slots__ = ("offset_ms",)

    def __init__(self) -> None:
        self.offset_ms = 0.0

    def now_ms(self) -> float:
        return time.time() * 1000.0 + self.offset_ms


async def _handshake(conn: Connection, spec: HostSpec, clock: ServerTime | None) -> None:
    """Authenticate, select the database, name the client, learn its id and the
    server clock, all in one round trip. Without ``clock`` (a Sentinel, which
    knows neither ``TIME`` nor ``CLIENT ID``) only authenticate."""
    commands: list[tuple[Any, ...]] = []
    if spec.password is not None:
        if spec.username:
            commands.append(("AUTH", spec.username, spec.password))
        else:
            commands.append(("AUTH", spec.password))
    if clock is not None:
        if spec.db:
            commands.append(("SELECT", spec.db))
        if spec.client_name:
            commands.append(("CLIENT", "SETNAME", spec.client_name))
        commands.append(("CLIENT", "ID"))
        commands.append(("TIME",))
    if not commands:
        return
    sent_at = time.time()
    replies = await conn.pipeline(commands)
    received_at = time.time()
    for reply in replies:
        if isinstance(reply, ReplyError):
            raise reply
    if clock is not None:
        conn.client_id = replies[-2]
        seconds, micros = replies[-1]
        server_ms = int(seconds) * 1000.0 + int(micros) / 1000.0
        clock.offset_ms = server_ms - (sent_at + received_at) * 500.0


class TLSConnectionError(ConnectionError):
    """A TLS connection could not be set up. A ``ConnectionError``, so it is
    retried like an unreachable server (the server's certificates may be in
    the middle of a change), but its message says that TLS failed and where."""


#: How a TLS handshake, or a TLS connection the server refused right after it,
#: fails (plain TCP failures, such as a refused connection, are other OSErrors).
_TLS_BREAKS: tuple[type[BaseException], ...] = (
    ssl.SSLError,
    anyio.BrokenResourceError,
    anyio.EndOfStream,
)


def _tls_error(spec: HostSpec, exc: BaseException, stage: str) -> TLSConnectionError:
    """The error for a TLS connection to ``spec`` that broke at ``stage``. The
    underlying error alone can be a bare ``BrokenResourceError`` (the server
    reset the connection before its alert was read), which says nothing of TLS
    or of where. No double quotes: it is shown inside other messages' repr()."""
    return TLSConnectionError(
        f"TLS connection to {spec.describe()} failed {stage}: {type(exc).__name__}"
        f"{': ' + str(exc) if str(exc) else ''}; check the certificates (the server's "
        "against ssl_ca_certs, and ssl_certfile/ssl_keyfile if the server requires "
        "client certificates, tls-auth-clients)"
    )


async def _open_plain(
    spec: HostSpec, generation: int, clock: ServerTime | None, default_timeout: float
) -> Connection:
    with anyio.fail_after(spec.connect_timeout or default_timeout):
        try:
            stream = await open_stream(
                host=spec.host,
                port=spec.port,
                unix_path=spec.unix_path,
                ssl_context=spec.ssl_context,
                tls_hostname=spec.tls_hostname,
            )
        except _TLS_BREAKS as exc:
            if spec.ssl_context is None:
                raise
            raise _tls_error(spec, exc, "in the handshake") from exc
        conn = Connection(stream, generation)
        try:
            await _handshake(conn, spec, clock)
        except _TLS_BREAKS as exc:
            await conn.aclose()
            if spec.ssl_context is None:
                raise
            # With TLS 1.3 a server checks our certificate only after our side of
            # the handshake is done: a refusal shows at the first reply.
            raise _tls_error(spec, exc, "before its first reply") from exc
        except BaseException:
            await conn.aclose()
            raise
    return conn


class SentinelError(ConnectionError):
    """No sentinel could name a reachable master."""


_SENTINEL_FAILURES: tuple[type[BaseException], ...] = (*CONNECTION_ERRORS, ReplyError)


def _why(exc: BaseException) -> str:
    """An exception for a message that lists several (without double quotes,
    which would make repr() of the whole escape every quote in it)."""
    if isinstance(exc, (SentinelError, TLSConnectionError)):
        return str(exc)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


async def _ask_sentinel(
    spec: HostSpec, host: str, port: int, default_timeout: float
) -> tuple[str, int]:
    """Ask the sentinel at ``host:port`` where ``spec``'s master is."""
    assert spec.sentinel_spec is not None
    sentinel = replace(spec.sentinel_spec, host=host, port=port, tls_hostname=host)
    conn = await _open_plain(sentinel, 0, None, default_timeout)
    try:
        with anyio.fail_after(spec.socket_timeout or default_timeout):
            reply = await conn.request("SENTINEL", "GET-MASTER-ADDR-BY-NAME", spec.master_name)
    except _TLS_BREAKS as exc:
        if sentinel.ssl_context is None:
            raise
        # Without a password there was no handshake round trip: as in _open_plain.
        raise _tls_error(sentinel, exc, "before its first reply") from exc
    finally:
        await conn.aclose()
    if isinstance(reply, list) and len(reply) == 2:
        return reply[0].decode(), int(reply[1])
    if isinstance(reply, ReplyError):
        raise reply
    raise SentinelError(f"does not know master {spec.master_name!r}")


async def _open_master(
    spec: HostSpec,
    address: tuple[str, int],
    generation: int,
    clock: ServerTime | None,
    default_timeout: float,
) -> Connection:
    """Connect to the server a sentinel named, and check that it is a master."""
    host, port = address
    master = replace(spec, host=host, port=port, sentinels=(), sentinel_spec=None)
    conn = await _open_plain(master, generation, clock, default_timeout)
    try:
        with anyio.fail_after(spec.socket_timeout or default_timeout):
            role = await conn.request("ROLE")
    except BaseException:
        await conn.aclose()
        raise
    if not (isinstance(role, list) and role and role[0] == b"master"):
        await conn.aclose()
        said = role[0].decode() if isinstance(role, list) and role else repr(role)
        raise SentinelError(f"it is not a master (ROLE: {said})")
    conn.address = address
    return conn


async def named_master(spec: HostSpec, default_timeout: float) -> tuple[str, int]:
    """The master the first sentinel that answers names for ``spec`` now."""
    problems: list[str] = []
    for host, port in spec.sentinels:
        try:
            return await _ask_sentinel(spec, host, port, default_timeout)
        except _SENTINEL_FAILURES as exc:
            problems.append(f"sentinel {host}:{port}: {_why(exc)}")
    raise SentinelError(f"no sentinel named master {spec.master_name!r}: " + "; ".join(problems))


async def open_connection(
    spec: HostSpec, generation: int, clock: ServerTime | None, default_timeout: float
) -> Connection:
    """Open and set up a connection to the server ``spec`` describes, within
    the spec's ``socket_connect_timeout`` (else ``default_timeout``) per step.

    In sentinel mode the master's address is asked for afresh on every new
    connection (connections are only opened at start-up and after a failure,
    which is exactly when the master may have moved), and the server is checked
    to really be a master before it is used. The sentinels are asked in turn
    until one names a master that can be reached and says it is one: a sentinel
    that is behind (it has not heard of a failover yet, or was restarted from
    an old configuration and is cut off from the others) names a server that
    is down or demoted, and must not keep the layer from the master the others
    know. In the usual case, the first sentinel answers and that is one round
    trip, as before.
    """
    if not spec.sentinels:
        return await _open_plain(spec, generation, clock, default_timeout)
    problems: list[str] = []
    tried: set[tuple[str, int]] = set()
    for host, port in spec.sentinels:
        try:
            address = await _ask_sentinel(spec, host, port, default_timeout)
        except _SENTINEL_FAILURES as exc:
            problems.append(f"sentinel {host}:{port}: {_why(exc)}")
            continue
        if address in tried:
            continue
        tried.add(address)
        try:
            return await _open_master(spec, address, generation, clock, default_timeout)
        except CONNECTION_ERRORS as exc:  # SentinelError included: not a master
            problems.append(
                f"master {address[0]}:{address[1]} named by sentinel {host}:{port}: {_why(exc)}"
            )
    raise SentinelError(
        f"no sentinel named a reachable master {spec.master_name!r}: " + "; ".join(problems)
    )


def describe_all(specs: Iterable[HostSpec]) -> str:
    return ", ".join(spec.describe() for spec in specs)
