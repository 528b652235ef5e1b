"""The error replies by which a cluster node says "not here" or "not now".

* ``MOVED <slot> <host>:<port>``: the slot is served by another master for
  good (after a failover or a finished migration). The client updates its slot
  map, retries there, and should refresh its whole view of the cluster.
* ``ASK <slot> <host>:<port>``: the slot is being migrated and this key is
  already on the target. Only this one command goes there, preceded by
  ``ASKING``; the slot map does not change.
* ``TRYAGAIN`` (a multi-key command whose keys are split by a migration in
  progress), ``CLUSTERDOWN`` (slots not covered, e.g. while a failed master is
  replaced), ``LOADING``, ``MASTERDOWN`` and ``READONLY`` (a master demoted
  under us): the command did not run and may be retried after a pause.

A redirect's host may be empty (``MOVED 3999 :6381``): the node does not know
its own address as clients see it, and means "the host you reached me at".
"""

from __future__ import annotations

from dataclasses import dataclass

from ..protocol import ReplyError
from .topology import NodeAddress

__all__ = ["REFRESH_CODES", "RETRY_CODES", "Redirect", "parse_redirect"]

#: Error codes that mean the command was not run and can be retried later.
RETRY_CODES = frozenset({"TRYAGAIN", "CLUSTERDOWN", "LOADING", "MASTERDOWN", "READONLY"})
#: Of those, the ones that suggest the slot map is out of date.
REFRESH_CODES = frozenset({"CLUSTERDOWN", "MASTERDOWN", "READONLY"})


@dataclass(frozen=True)
class Redirect:
    """A ``MOVED`` (``ask`` false) or ``ASK`` (``ask`` true) redirect."""

    ask: bool
    slot: int
    address: NodeAddress


def parse_redirect(
    error: ReplyError | str, replied_by: NodeAddress | None = None
) -> Redirect | None:
    """The redirect an error reply stands for, or ``None`` if it is another
    error. ``replied_by`` supplies the host when the reply leaves it empty."""
    text = str(error.args[0] if isinstance(error, ReplyError) and error.args else error)
    parts = text.split(" ")
    if len(parts) != 3 or parts[0] not in ("MOVED", "ASK"):
        return None
    host, sep, port = parts[2].rpartition(":")
    try:
        slot, number = int(parts[1]), int(port)
    except ValueError:
        return None
    if not sep:
        return None
    if not host:
        if replied_by is None:
            return None
        host = replied_by.host
    # An IPv6 address may come bracketed or not; store it bare.
    host = host.strip("[]")
    return Redirect(ask=parts[0] == "ASK", slot=slot, address=NodeAddress(host, number))
