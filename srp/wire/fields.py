"""
The fields cluster messages are built of: strings, lists, members and
registrations, and the reader that takes them out of a payload.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

from attrs import frozen

from srp.wire.errors import WireError
from srp.wire.instances import (
    Registration,
    checkPort,
    checkToken,
    decodeInstances,
    encodeInstance,
)

T = TypeVar("T")


class ClusterWireError(WireError):
    """
    A cluster message that must be rejected.

    C{reason} is one word for counters: C{truncated}, C{oversized},
    C{version}, C{tag}, C{cluster} or C{malformed}.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class Reader:
    """Reads payload fields, raising L{ClusterWireError} when they run out."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.offset = 0

    def unpack(self, fmt: str) -> tuple[int, ...]:
        size = struct.calcsize(fmt)
        if self.offset + size > len(self.data):
            raise ClusterWireError("malformed", "payload ends inside a field")
        values = struct.unpack_from(fmt, self.data, self.offset)
        self.offset += size
        return values

    def bytes(self) -> bytes:
        (length,) = self.unpack("<H")
        if self.offset + length > len(self.data):
            raise ClusterWireError("malformed", "payload ends inside a string")
        value = self.data[self.offset : self.offset + length]
        self.offset += length
        return value

    def text(self) -> str:
        try:
            return self.bytes().decode("ascii")
        except UnicodeDecodeError:
            raise ClusterWireError("malformed", "payload string is not ASCII") from None

    def end(self) -> None:
        if self.offset != len(self.data):
            raise ClusterWireError("malformed", f"{len(self.data) - self.offset} bytes "
                                   "follow the payload")


def short(value: bytes) -> bytes:
    """C{value} with its length before it (uint16)."""
    if len(value) > 0xFFFF:
        raise WireError("string of more than 65,535 bytes")
    return struct.pack("<H", len(value)) + value


@frozen
class Member:
    """A node as the active knows it: its id and the address of its cluster socket."""

    nodeId: int
    host: str
    port: int

    def __attrs_post_init__(self) -> None:
        checkToken("member host", self.host, 64)
        checkPort("member port", self.port)

    def encode(self) -> bytes:
        return struct.pack("<Q", self.nodeId) + short(self.host.encode("ascii")) + struct.pack(
            "<H", self.port)

    @classmethod
    def read(cls, reader: Reader) -> Member:
        (nodeId,) = reader.unpack("<Q")
        host = reader.text()
        (port,) = reader.unpack("<H")
        return cls(nodeId, host, port)


def registrationSize(registration: Registration) -> int:
    """The bytes C{registration} takes in a Join."""
    return len(encodeRegistration(registration))


def registrationsDigest(registrations: Iterable[Registration]) -> int:
    """
    A digest of a node's registrations, whatever their order: what a
    KeepAlive carries so that the active sees a Join it missed (a change of
    health keeps the count).  Never 0, which means "no digest".
    """
    total = sum(zlib.crc32(encodeRegistration(r)) for r in registrations)
    return total % 0xFFFFFFFF or 0xFFFFFFFF


def encodeRegistration(registration: Registration) -> bytes:
    """A registration as Joins, Activates and Registers carry it."""
    flags = ((1 if registration.hidden else 0) | (2 if registration.dacPort is not None else 0)
             | (4 if registration.down else 0) | (8 if registration.hideWhenDown else 0))
    return struct.pack(
        "<QHBH", registration.nodeId, registration.priority, flags, registration.dacPort or 0
    ) + short(encodeInstance(registration.info, limit=0xFFFF))


def readRegistration(reader: Reader) -> Registration:
    """Read one registration (L{encodeRegistration})."""
    nodeId, priority, flags, dacPort = reader.unpack("<QHBH")
    infos = decodeInstances(reader.bytes())
    if len(infos) != 1:
        raise ClusterWireError("malformed", f"registration describes {len(infos)} instances")
    return Registration(infos[0], hidden=bool(flags & 1),
                        dacPort=dacPort if flags & 2 else None, priority=priority, nodeId=nodeId,
                        down=bool(flags & 4), hideWhenDown=bool(flags & 8))


def encodeList(items: Sequence[T], encodeOne: Callable[[T], bytes]) -> bytes:
    """A count (uint16) and each of C{items}."""
    if len(items) > 0xFFFF:
        raise WireError(f"list of {len(items)} entries; at most 65,535")
    return struct.pack("<H", len(items)) + b"".join(encodeOne(i) for i in items)


def readMembers(reader: Reader) -> tuple[Member, ...]:
    """Read a list of members."""
    (count,) = reader.unpack("<H")
    return tuple(Member.read(reader) for _ in range(count))


def readRegistrations(reader: Reader) -> tuple[Registration, ...]:
    """Read a list of registrations."""
    (count,) = reader.unpack("<H")
    return tuple(readRegistration(reader) for _ in range(count))
