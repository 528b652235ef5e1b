"""Redis Cluster support for the Redis layers: slots, the slot map, redirects,
per-node pools and a router that runs commands on the right master.

See the "Redis Cluster" section of ``docs/scaling-out.md`` for the settings
and the guarantees.
"""

from .client import ClusterRouter, ClusterUnavailable, Command, Target, slot_of
from .redirects import Redirect, parse_redirect
from .settings import ClusterSpec, decode_cluster, find_cluster, is_cluster_entry
from .sharded import ShardedPush, channels_by_node, parse_sharded_push
from .slots import SLOT_COUNT, crc16, group_by_slot, hash_tag, key_slot, slot_tag
from .topology import NodeAddress, Shard, Topology, TopologyError, fetch_topology, node_slots

__all__ = [
    "SLOT_COUNT",
    "ClusterRouter",
    "ClusterSpec",
    "ClusterUnavailable",
    "Command",
    "NodeAddress",
    "Redirect",
    "Shard",
    "ShardedPush",
    "Target",
    "Topology",
    "TopologyError",
    "channels_by_node",
    "crc16",
    "decode_cluster",
    "fetch_topology",
    "find_cluster",
    "group_by_slot",
    "hash_tag",
    "is_cluster_entry",
    "key_slot",
    "node_slots",
    "parse_redirect",
    "parse_sharded_push",
    "slot_of",
    "slot_tag",
]
