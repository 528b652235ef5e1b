"""The Redis channel layer through a real Sentinel failover, and over TLS with
client certificates, against private ``redis-server`` processes.

The Sentinel tests start a master, a replica and three sentinels (quorum 2) per
test (see :class:`redis_server.SentinelSetup`), kill or demote the master, and
poll until the sentinels name the new one rather than sleeping. The TLS tests
make a throw-away CA, server and client certificates with ``openssl``. Every
async test runs on asyncio, uvloop and trio; without ``redis-server`` (or
``openssl``) they are skipped, or fail under ``CI=true``.
"""

from __future__ import annotations

import logging
import ssl
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest
from redis_server import (
    RedisServer,
    SentinelSetup,
    free_port,
    info,
    redis_call,
    require_binary,
    sentinel_server,
)

from channels_runtime.layers.redis import RedisChannelLayer, RedisUnavailable
from channels_runtime.layers.redis.connections import Pool
from channels_runtime.layers.redis.hosts import ConfigurationError

LOGGER = "channels_runtime.layers.redis"


async def poll(condition: Callable[[], Any], what: str, seconds: float = 20) -> None:
    """Wait until ``condition()`` is true, checking every 50 ms."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {seconds}s waiting for {what}")
        await anyio.sleep(0.05)


def blocked_clients(port: int) -> int:
    """Clients waiting in a blocking command (our BLPOPs) on the server at ``port``."""
    return int(info(port, "clients")["blocked_clients"])


def role(port: int) -> str:
    return str(redis_call(port, "ROLE")[0])


async def receive_within(layer: RedisChannelLayer, channel: str, seconds: float = 15) -> Any:
    with anyio.fail_after(seconds):
        return await layer.receive(channel)


async def round_trip(layer: RedisChannelLayer, channel: str, message: dict[str, Any]) -> None:
    await layer.send(channel, message)
    assert await receive_within(layer, channel) == message


# -- Sentinel ------------------------------------------------------------------------


@pytest.fixture
def sentinels() -> Iterator[SentinelSetup]:
    with SentinelSetup(sentinels=3, quorum=2) as setup:
        yield setup


@pytest.mark.anyio
async def test_failover_after_the_master_is_killed(
    sentinels: SentinelSetup, caplog: pytest.LogCaptureFixture
) -> None:
    """SIGKILL the master under waiting receivers: once Sentinel has promoted
    the replica, the receivers carry on there, a send made during the outage
    lands there, and the old master, back and empty, is not written to."""
    old, new = sentinels.master, sentinels.replica
    layer = RedisChannelLayer(hosts=[sentinels.hosts_entry], retry_budget=30)
    specific = [await layer.new_channel() for _ in range(3)]
    everyone = [*specific, "plain-a", "plain-b"]
    got: dict[str, Any] = {}

    async def receiver(channel: str) -> None:
        got[channel] = await layer.receive(channel)

    try:
        for channel in everyone:
            await layer.group_add("room", channel)
        # Replication is asynchronous: let the memberships reach the replica first.
        await anyio.to_thread.run_sync(sentinels.wait_for_link, new.port)
        with caplog.at_level(logging.WARNING, LOGGER), anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for channel in everyone:
                    tg.start_soon(receiver, channel)
                # One BLPOP per normal channel, one for all the specific channels.
                await poll(lambda: blocked_clients(old.port) == 3, "receivers to block")
                old.kill()
                # Sent while there is no master: retried until there is one again.
                tg.start_soon(layer.send, "plain-during", {"sent": "during the outage"})
                await anyio.to_thread.run_sync(sentinels.wait_for_master, new.port)
                promoted = time.monotonic()
                for channel in everyone:
                    await layer.send(channel, {"to": channel})
            resumed_after = time.monotonic() - promoted
        assert got == {channel: {"to": channel} for channel in everyone}
        # Receivers back off at most 2 s between attempts.
        assert resumed_after < 15, resumed_after
        assert "unreachable" in caplog.text
        assert "reachable again" in caplog.text
        assert await receive_within(layer, "plain-during") == {"sent": "during the outage"}
        # Memberships made before the failover still count.
        await layer.group_send("room", {"to": "room"})
        for channel in everyone:
            assert await receive_within(layer, channel) == {"to": "room"}

        # The old master restarts as configured: a master, empty (no persistence),
        # until Sentinel turns it into a replica some seconds later. The layer
        # goes where the sentinels point, never to it.
        old.start()
        for n in range(3):
            await round_trip(layer, "plain-a", {"n": n})
            await round_trip(layer, await layer.new_channel(), {"n": n})
            await layer.group_send("room", {"n": n})
            for channel in everyone:
                assert await receive_within(layer, channel) == {"n": n}
        # The layer's commands (scripts, BLPOP) were never run there; replication,
        # had Sentinel made it a replica meanwhile, would show as other commands.
        ran = info(old.port, "commandstats")
        assert not {"cmdstat_evalsha", "cmdstat_eval", "cmdstat_blpop"} & set(ran), ran
        await anyio.to_thread.run_sync(sentinels.demote, old.port, new.port)
        await round_trip(layer, "plain-a", {"after": "rejoin"})
        assert role(old.port) == "slave"
        assert role(new.port) == "master"
    finally:
        await layer.close()


@pytest.mark.anyio
async def test_a_demoted_master_is_left_for_the_promoted_one(
    sentinels: SentinelSetup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A switchover (``SENTINEL FAILOVER``) promotes the replica; then the old
    master becomes a replica *without* its clients being disconnected (Sentinel
    itself demotes it only seconds later, and disconnects its clients; an
    operator's ``REPLICAOF`` does not). Pooled connections to it now get
    ``READONLY``, and waiting ``BLPOP``s ``UNBLOCKED``: both must send the layer
    back to the sentinels (not retry on the same server forever), and no error
    may reach the callers. (The pools' own check of the named master would
    usually get there first: it is turned off here, to test what is left when
    it does not; see test_layer_redis_switchover.py for it.)"""
    monkeypatch.setattr(Pool, "sentinel_check_interval", 3600.0)
    old, new = sentinels.master, sentinels.replica
    layer = RedisChannelLayer(hosts=[sentinels.hosts_entry], retry_budget=10)
    # Another process that only sends (a Django view, say): it meets the
    # demotion as READONLY on its pooled connections.
    sender = RedisChannelLayer(hosts=[sentinels.hosts_entry], retry_budget=10, prefix=layer.prefix)
    # And two whose one receiver each starts only after the demotion: its first
    # BLPOP (normal channel) or LPOP (specific ones) goes out on the one pooled
    # connection, to the demoted server.
    late_normal, late_specific = (
        RedisChannelLayer(hosts=[sentinels.hosts_entry], retry_budget=10, prefix=layer.prefix)
        for _ in range(2)
    )
    specific = [await layer.new_channel() for _ in range(2)]
    late = {"late-plain": late_normal, await late_specific.new_channel(): late_specific}
    late_channels = list(late)
    everyone = [*specific, "plain", *late_channels]
    got: dict[str, Any] = {}

    def owner(channel: str) -> RedisChannelLayer:
        return late.get(channel, layer)

    async def receiver(channel: str) -> None:
        got[channel] = await owner(channel).receive(channel)

    try:
        for channel in everyone:
            await layer.group_add("room", channel)
        await sender.group_send("room", {"warm": "pools"})
        for channel in everyone:
            assert await receive_within(owner(channel), channel) == {"warm": "pools"}
        await anyio.to_thread.run_sync(sentinels.wait_for_link, new.port)
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for channel in [*specific, "plain"]:
                    tg.start_soon(receiver, channel)
                await poll(lambda: blocked_clients(old.port) == 2, "receivers to block")
                await anyio.to_thread.run_sync(sentinels.switch_over)
                await anyio.to_thread.run_sync(sentinels.wait_for_master, new.port)
                await anyio.to_thread.run_sync(sentinels.demote, old.port, new.port)
                for channel in late_channels:
                    tg.start_soon(receiver, channel)
                for channel in everyone:
                    await sender.send(channel, {"to": channel})
        assert got == {channel: {"to": channel} for channel in everyone}
        await sender.group_send("room", {"to": "room"})
        for channel in everyone:
            assert await receive_within(owner(channel), channel) == {"to": "room"}
        assert role(old.port) == "slave"
        errors = info(old.port, "errorstats")
        assert "errorstat_READONLY" in errors, errors
        assert "errorstat_UNBLOCKED" in errors, errors
    finally:
        for each in (layer, sender, late_normal, late_specific):
            await each.close()


@pytest.mark.anyio
async def test_sentinels_naming_a_dead_or_demoted_master_are_passed_over() -> None:
    """A sentinel that names a server which is down (one that lost its state,
    or cut off from the others) or not a master must not stop the layer from
    using the master the next sentinel names."""
    with SentinelSetup(sentinels=1) as setup:
        # Monitors a server that does not run; stays stale, as it hears from no one.
        gone = sentinel_server(free_port())
        # Names the replica as master (and waits 10 min before suspecting it).
        confused = sentinel_server(
            setup.replica.port, config=["sentinel down-after-milliseconds mymaster 600000"]
        )
        with gone, confused:
            order = [gone, confused, *setup.sentinels]
            hosts = [
                {"sentinels": [("127.0.0.1", s.port) for s in order], "master_name": "mymaster"}
            ]
            layer = RedisChannelLayer(hosts=hosts, retry_budget=5)
            try:
                with anyio.fail_after(20):
                    await round_trip(layer, "plain", {"via": "the third sentinel"})
                    await round_trip(layer, await layer.new_channel(), {"specific": True})
            finally:
                await layer.close()


@pytest.mark.anyio
async def test_unknown_master_name_is_a_clear_error(
    sentinels: SentinelSetup, caplog: pytest.LogCaptureFixture
) -> None:
    hosts = [{**sentinels.hosts_entry, "master_name": "no-such-master"}]
    layer = RedisChannelLayer(hosts=hosts, retry_budget=0.5)
    try:
        with anyio.fail_after(15), pytest.raises(RedisUnavailable) as raised:
            await layer.send("x", {})
        message = str(raised.value)
        assert "does not know master 'no-such-master'" in message
        for sentinel in sentinels.sentinels:
            assert f"127.0.0.1:{sentinel.port}" in message
        # A receive does not fail: it waits for the setting (or Sentinel) to be
        # fixed, and says why in its warning.
        with caplog.at_level(logging.WARNING, LOGGER), anyio.move_on_after(0.5):
            await layer.receive("x")
        assert "does not know master 'no-such-master'" in caplog.text
    finally:
        await layer.close()


# -- TLS client certificates -----------------------------------------------------------


def _openssl(directory: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=directory)


def _make_pki(directory: Path) -> dict[str, str]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate it
    signed; a client certificate from another CA; the client key encrypted."""
    require_binary("openssl")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for ca in ("ca", "other-ca"):
        _openssl(directory, "req", "-x509", *ec, "-days", "2", "-subj", f"/CN={ca}",
                 "-keyout", f"{ca}.key", "-out", f"{ca}.crt")  # fmt: skip
    (directory / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    (directory / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for name, ca in (("server", "ca"), ("client", "ca"), ("stranger", "other-ca")):
        kind = "server" if name == "server" else "client"
        _openssl(directory, "req", *ec, "-subj", f"/CN={name}",
                 "-keyout", f"{name}.key", "-out", f"{name}.csr")  # fmt: skip
        _openssl(directory, "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt",
                 "-CAkey", f"{ca}.key", "-CAcreateserial", "-days", "2",
                 "-extfile", f"{kind}.ext", "-out", f"{name}.crt")  # fmt: skip
    _openssl(directory, "pkey", "-in", "client.key", "-aes256", "-passout", "pass:sesame",
             "-out", "client-encrypted.key")  # fmt: skip
    (directory / "client.pem").write_bytes(
        (directory / "client.crt").read_bytes() + (directory / "client.key").read_bytes()
    )
    files = {
        "ca": "ca.crt",
        "server_cert": "server.crt",
        "server_key": "server.key",
        "cert": "client.crt",
        "key": "client.key",
        "encrypted": "client-encrypted.key",
        "pem": "client.pem",
        "stranger_cert": "stranger.crt",
        "stranger_key": "stranger.key",
    }
    return {name: str(directory / file) for name, file in files.items()}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return _make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def mtls_server(pki: dict[str, str]) -> Iterator[RedisServer]:
    """A TLS-only server that requires a client certificate signed by its CA."""
    server = RedisServer(
        "--tls-cert-file", pki["server_cert"],
        "--tls-key-file", pki["server_key"],
        "--tls-ca-cert-file", pki["ca"],
        "--tls-auth-clients", "yes",
        tls=True,
    )  # fmt: skip
    with server:
        yield server


@pytest.mark.anyio
async def test_tls_client_certificate(mtls_server: RedisServer, pki: dict[str, str]) -> None:
    url = mtls_server.url
    context = ssl.create_default_context(cafile=pki["ca"])
    context.load_cert_chain(pki["cert"], pki["key"])
    forms: list[Any] = [
        {"address": url, "ssl_ca_certs": pki["ca"], "ssl_certfile": pki["cert"],
         "ssl_keyfile": pki["key"]},
        # The key in the certificate file, as ssl.SSLContext.load_cert_chain allows.
        {"address": url, "ssl_ca_certs": pki["ca"], "ssl_certfile": pki["pem"]},
        {"address": url, "ssl_ca_certs": pki["ca"], "ssl_certfile": pki["cert"],
         "ssl_keyfile": pki["encrypted"], "ssl_password": "sesame"},
        f"{url}?ssl_ca_certs={pki['ca']}&ssl_certfile={pki['cert']}"
        f"&ssl_keyfile={pki['key']}",
        {"address": url, "ssl_context": context},
    ]  # fmt: skip
    prefix = "mtls" + uuid.uuid4().hex[:8]
    for form in forms:
        layer = RedisChannelLayer(hosts=[form], prefix=prefix)
        try:
            with anyio.fail_after(15):
                channel = await layer.new_channel()
                await layer.group_add("g", channel)
                await layer.group_add("g", "plain")
                await layer.group_send("g", {"over": "mtls"})
                assert await layer.receive(channel) == {"over": "mtls"}
                assert await layer.receive("plain") == {"over": "mtls"}
                await layer.flush()
        finally:
            await layer.close()


@pytest.mark.anyio
async def test_tls_without_a_valid_client_certificate_is_refused_clearly(
    mtls_server: RedisServer, pki: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    where = f"rediss://127.0.0.1:{mtls_server.port}/0"
    without = {"address": mtls_server.url, "ssl_ca_certs": pki["ca"]}
    stranger = {**without, "ssl_certfile": pki["stranger_cert"],
                "ssl_keyfile": pki["stranger_key"]}  # fmt: skip
    for form in (without, stranger):
        layer = RedisChannelLayer(hosts=[form], retry_budget=0.5)
        try:
            started = time.monotonic()
            with anyio.fail_after(15), pytest.raises(RedisUnavailable) as info:
                await layer.send("x", {})
            assert time.monotonic() - started < 10
            message = str(info.value)
            assert where in message
            assert f"TLS connection to {where} failed" in message
            assert "certificate" in message
            caplog.clear()
            with caplog.at_level(logging.WARNING, LOGGER), anyio.move_on_after(0.5):
                await layer.receive("x")
            assert f"TLS connection to {where} failed" in caplog.text
        finally:
            await layer.close()


def test_client_certificate_settings_are_checked(pki: dict[str, str]) -> None:
    base = {"address": "rediss://127.0.0.1:6390", "ssl_ca_certs": pki["ca"]}
    with pytest.raises(ConfigurationError, match=r"ssl_keyfile .* without ssl_certfile"):
        RedisChannelLayer(hosts=[{**base, "ssl_keyfile": pki["key"]}])
    with pytest.raises(ConfigurationError, match=r"ssl_certfile .*no-such\.crt.* in hosts\[0\]"):
        RedisChannelLayer(hosts=[{**base, "ssl_certfile": "/no-such.crt"}])
    with pytest.raises(ConfigurationError, match="ssl_certfile"):
        # A key that does not belong to the certificate.
        RedisChannelLayer(
            hosts=[{**base, "ssl_certfile": pki["cert"], "ssl_keyfile": pki["stranger_key"]}]
        )
    # An encrypted key needs ssl_password: no passphrase prompt on the terminal.
    encrypted = {**base, "ssl_certfile": pki["cert"], "ssl_keyfile": pki["encrypted"]}
    with pytest.raises(ConfigurationError, match="ssl_password"):
        RedisChannelLayer(hosts=[encrypted])
    with pytest.raises(ConfigurationError, match="ssl_password"):
        RedisChannelLayer(hosts=[{**encrypted, "ssl_password": "wrong"}])
    RedisChannelLayer(hosts=[{**encrypted, "ssl_password": "sesame"}])
