"""Which of Redis Cluster's 16384 hash slots a key belongs to.

A cluster node serves whole slots, and a command or Lua script may only touch
keys of one slot. The slot is ``CRC16(key) mod 16384`` (CRC-16/XMODEM, as in the
Redis Cluster specification), computed over the key's *hash tag* when it has
one: the text between the first ``{`` and the first ``}`` after it, if that is
not empty. Keys that share a tag share a slot, which is how a layer keeps the
keys one script touches together.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["SLOT_COUNT", "crc16", "group_by_slot", "hash_tag", "key_slot"]

SLOT_COUNT = 16384


def _table() -> tuple[int, ...]:
    # CRC-16/XMODEM: polynomial 0x1021, no reflection, initial value 0.
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return tuple(table)


_TABLE = _table()


def crc16(data: bytes) -> int:
    """CRC-16/XMODEM of ``data`` (``crc16(b"123456789") == 0x31C3``)."""
    crc = 0
    table = _TABLE
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ table[((crc >> 8) ^ byte) & 0xFF]
    return crc


def _as_bytes(key: str | bytes) -> bytes:
    return key.encode() if isinstance(key, str) else bytes(key)


def hash_tag(key: str | bytes) -> bytes:
    """The part of ``key`` that decides its slot: the hash tag if it has a
    non-empty one, else the whole key."""
    data = _as_bytes(key)
    start = data.find(b"{")
    if start >= 0:
        end = data.find(b"}", start + 1)
        if end > start + 1:
            return data[start + 1 : end]
    return data


def key_slot(key: str | bytes) -> int:
    """The slot of ``key``, as ``CLUSTER KEYSLOT`` would answer."""
    return crc16(hash_tag(key)) & (SLOT_COUNT - 1)


def group_by_slot(keys: Iterable[str | bytes]) -> dict[int, list[str | bytes]]:
    """``keys`` by slot, each list in the order given: a caller builds one
    command or script per slot from it (a script may not span slots)."""
    groups: dict[int, list[str | bytes]] = {}
    for key in keys:
        groups.setdefault(key_slot(key), []).append(key)
    return groups


_TAGS: dict[int, str] = {}


def slot_tag(slot: int) -> str:
    """A short string whose slot is ``slot``: put in a key as ``{tag}``, it
    places the key on whichever node serves ``slot`` (the layer keeps one such
    key per node). Found by trying ``"0"``, ``"1"``, ... (about 16,000 tries
    for a slot, a few milliseconds), and remembered."""
    tag = _TAGS.get(slot)
    if tag is None:
        if not 0 <= slot < SLOT_COUNT:
            raise ValueError(f"slot {slot} is out of range 0-{SLOT_COUNT - 1}")
        n = 0
        while crc16(b"%d" % n) & (SLOT_COUNT - 1) != slot:
            n += 1
        tag = _TAGS[slot] = str(n)
    return tag
