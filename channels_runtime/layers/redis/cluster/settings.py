"""The ``hosts`` forms that name a Redis Cluster, turned into a :class:`ClusterSpec`.

A cluster is one entry of ``hosts`` (the only one: a layer talks to one
cluster, which does its own sharding), in any of these forms:

* ``"redis+cluster://[user:password@]host[:port][,host[:port]...][?options]"``,
  or ``"rediss+cluster://..."`` for TLS: seed nodes, comma-separated;
* ``{"cluster": True, "address": "redis://host:port", ...options}``;
* ``{"cluster": True, "nodes": ["redis://h1:p1", ("h2", p2)], ...options}``.

Options are those of a single host (``username``, ``password``, ``ssl_*``,
``socket_connect_timeout``, ``socket_timeout``, ``max_connections``,
``client_name``) and apply to every node, seeds and discovered nodes alike.
A cluster has only database 0, and Sentinel does not apply: both are refused.
Each seed is checked by :func:`~..hosts.decode_hosts`, so its options mean
exactly what they mean for a single host.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ..hosts import ConfigurationError, HostSpec, decode_hosts

__all__ = ["ClusterSpec", "decode_cluster", "find_cluster", "is_cluster_entry"]

_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}


@dataclass(frozen=True)
class ClusterSpec:
    """Seed nodes, and how to connect to any node of the cluster."""

    seeds: tuple[HostSpec, ...]

    @property
    def template(self) -> HostSpec:
        return self.seeds[0]

    @property
    def tls(self) -> bool:
        return self.template.ssl_context is not None

    @property
    def max_connections(self) -> int | None:
        return self.template.max_connections

    def node_spec(self, host: str, port: int) -> HostSpec:
        """How to connect to the node at ``host:port``: the seeds' settings
        (credentials, TLS), with that address, and the address's host as the
        name its TLS certificate must carry."""
        for seed in self.seeds:
            if (seed.host, seed.port) == (host, port):
                return seed
        return replace(self.template, host=host, port=port, tls_hostname=host)

    def describe(self) -> str:
        """Where the seeds are, for messages (never includes the password)."""
        scheme = "rediss+cluster" if self.tls else "redis+cluster"
        return f"{scheme}://" + ",".join(f"{s.host}:{s.port}" for s in self.seeds)


def is_cluster_entry(entry: Any) -> bool:
    """Whether one ``hosts`` entry names a cluster."""
    if isinstance(entry, str):
        return urlsplit(entry).scheme in _SCHEMES
    if isinstance(entry, Mapping):
        address = entry.get("address")
        return bool(entry.get("cluster")) or (
            isinstance(address, str) and urlsplit(address).scheme in _SCHEMES
        )
    return False


def _split_cluster_url(url: str, where: str) -> list[str]:
    """One single-host URL per seed of a ``redis+cluster://`` URL, each keeping
    the credentials, path and query."""
    parts = urlsplit(url)
    userinfo, at, hostlist = parts.netloc.rpartition("@")
    hosts = [h for h in hostlist.split(",") if h]
    if not hosts:
        raise ConfigurationError(f"the Redis Cluster URL in {where} names no node: {url!r}")
    scheme = _SCHEMES[parts.scheme]
    return [
        urlunsplit((scheme, f"{userinfo}{at}{host}", parts.path, parts.query, "")) for host in hosts
    ]


def _check(spec: HostSpec, where: str) -> HostSpec:
    if spec.db != 0:
        raise ConfigurationError(f"{where}: a Redis Cluster has only database 0, not {spec.db}")
    if spec.sentinels:
        raise ConfigurationError(f"{where}: a Redis Cluster entry cannot use Sentinel")
    if spec.unix_path is not None:
        raise ConfigurationError(f"{where}: Redis Cluster nodes are reached over TCP")
    return spec


def decode_cluster(entry: str | Mapping[str, Any], where: str = "hosts[0]") -> ClusterSpec:
    """The :class:`ClusterSpec` of one ``hosts`` entry that names a cluster."""
    if isinstance(entry, str):
        urls: list[Any] = _split_cluster_url(entry, where)
        options: dict[str, Any] = {}
    elif isinstance(entry, Mapping):
        options = {k: v for k, v in entry.items() if k not in ("cluster", "nodes", "address")}
        address, nodes = entry.get("address"), entry.get("nodes")
        if (address is None) == (nodes is None):
            raise ConfigurationError(
                f"{where}: a Redis Cluster entry needs either 'address' or 'nodes' (seed nodes)"
            )
        if nodes is not None:
            if isinstance(nodes, (str, bytes)) or not isinstance(nodes, Sequence) or not nodes:
                raise ConfigurationError(
                    f"{where}: 'nodes' must be a non-empty list of URLs or (host, port) pairs"
                )
            urls = list(nodes)
        elif isinstance(address, str) and urlsplit(address).scheme in _SCHEMES:
            urls = _split_cluster_url(address, where)
        else:
            urls = [address]
    else:
        raise ConfigurationError(f"{where} must be a URL or a dict, got {entry!r}")
    seeds = []
    for index, url in enumerate(urls):
        if isinstance(url, str):
            seed: dict[str, Any] = {**options, "address": url}
        elif isinstance(url, (tuple, list)) and len(url) == 2:
            seed = {**options, "host": url[0], "port": url[1]}
        else:
            raise ConfigurationError(
                f"{where}: seed node {index} must be a URL or a (host, port) pair, got {url!r}"
            )
        seeds.append(_check(decode_hosts([seed])[0], f"{where}, seed node {index}"))
    return ClusterSpec(tuple(seeds))


def find_cluster(hosts: Sequence[Any] | None) -> ClusterSpec | None:
    """The cluster the ``hosts`` setting names, or ``None`` if it names
    standalone servers. A cluster must be the only entry."""
    if not hosts or isinstance(hosts, (str, bytes, Mapping)):
        return None
    flags = [is_cluster_entry(entry) for entry in hosts]
    if not any(flags):
        return None
    if len(hosts) != 1:
        raise ConfigurationError(
            "a Redis Cluster must be the only entry of hosts (list further seed nodes "
            "in it: 'redis+cluster://h1:p1,h2:p2' or {'cluster': True, 'nodes': [...]})"
        )
    return decode_cluster(hosts[0], "hosts[0]")
