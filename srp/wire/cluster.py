"""
The cluster (extension) messages nodes exchange, and srp's extended resolve.

They use opcodes C{0xA0}-C{0xAF}, which [MC-SQLR] does not: a plain SQL
Server Browser ignores them.  Every message is an L{Envelope}: a fixed
header (opcode, version, cluster id, sender node id, epoch, sequence), a
length-checked payload and an HMAC-SHA256 tag over both with the cluster
key.  The byte layout is specified in C{docs/protocol.md}.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
import zlib
from collections.abc import Callable, Sequence
from typing import TypeVar

from attrs import Factory, field, frozen

from srp.wire.errors import WireError
from srp.wire.instances import (
    Registration,
    checkInstanceName,
    checkPort,
    checkToken,
    decodeInstances,
    encodeInstance,
)

T = TypeVar("T")

#: The highest version of the message layouts this node speaks.  Every
#: message is sent at the lowest version whose layout carries it: a Join in
#: parts, a ReJoin naming parts and a StatusQuery for a later page need
#: version 2, every other message is version 1, as version 1 nodes send it.
VERSION = 2
#: The largest epoch the header can carry.
MAX_EPOCH = 0xFFFFFFFF
#: The largest registration count a KeepAlive carries: larger ones are sent as this.
MAX_COUNT = 0xFFFF
#: The passive-list version meaning "no list yet" (an active never uses it).
NO_LIST_VERSION = 0xFFFFFFFF
FIRST_OPCODE = 0xA0
LAST_OPCODE = 0xAF
TAG_SIZE = 32
#: The largest datagram a node sends or accepts.
MAX_MESSAGE = 65507

_HEADER = struct.Struct("<BBHIQIQH")
HEADER_SIZE = _HEADER.size
MAX_PAYLOAD = MAX_MESSAGE - HEADER_SIZE - TAG_SIZE
_PART_FIELDS = struct.Struct("<IHH")
#: The payload bytes of a Join in parts besides its registrations.
PART_OVERHEAD = _PART_FIELDS.size + 2


class ClusterWireError(WireError):
    """
    A cluster message that must be rejected.

    C{reason} is one word for counters: C{truncated}, C{oversized},
    C{version}, C{tag}, C{cluster} or C{malformed}.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def clusterId(name: str) -> int:
    """The 32-bit id of a cluster name, carried in every header."""
    return zlib.crc32(name.encode("utf-8"))


def isClusterMessage(datagram: bytes) -> bool:
    """Whether C{datagram} claims to be a cluster message (by its first byte)."""
    return bool(datagram) and FIRST_OPCODE <= datagram[0] <= LAST_OPCODE


class _Reader:
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


def _short(value: bytes) -> bytes:
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
        return struct.pack("<Q", self.nodeId) + _short(self.host.encode("ascii")) + struct.pack(
            "<H", self.port)

    @classmethod
    def read(cls, reader: _Reader) -> Member:
        (nodeId,) = reader.unpack("<Q")
        host = reader.text()
        (port,) = reader.unpack("<H")
        return cls(nodeId, host, port)


def registrationSize(registration: Registration) -> int:
    """The bytes C{registration} takes in a Join."""
    return len(_encodeRegistration(registration))


def _encodeRegistration(registration: Registration) -> bytes:
    flags = ((1 if registration.hidden else 0) | (2 if registration.dacPort is not None else 0)
             | (4 if registration.down else 0) | (8 if registration.hideWhenDown else 0))
    return struct.pack(
        "<QHBH", registration.nodeId, registration.priority, flags, registration.dacPort or 0
    ) + _short(encodeInstance(registration.info, limit=0xFFFF))


def _readRegistration(reader: _Reader) -> Registration:
    nodeId, priority, flags, dacPort = reader.unpack("<QHBH")
    infos = decodeInstances(reader.bytes())
    if len(infos) != 1:
        raise ClusterWireError("malformed", f"registration describes {len(infos)} instances")
    return Registration(infos[0], hidden=bool(flags & 1),
                        dacPort=dacPort if flags & 2 else None, priority=priority, nodeId=nodeId,
                        down=bool(flags & 4), hideWhenDown=bool(flags & 8))


def _encodeList(items: Sequence[T], encodeOne: Callable[[T], bytes]) -> bytes:
    if len(items) > 0xFFFF:
        raise WireError(f"list of {len(items)} entries; at most 65,535")
    return struct.pack("<H", len(items)) + b"".join(encodeOne(i) for i in items)


def _readMembers(reader: _Reader) -> tuple[Member, ...]:
    (count,) = reader.unpack("<H")
    return tuple(Member.read(reader) for _ in range(count))


def _readRegistrations(reader: _Reader) -> tuple[Registration, ...]:
    (count,) = reader.unpack("<H")
    return tuple(_readRegistration(reader) for _ in range(count))


@frozen
class Probe:
    """Is there an active here?  Answered by the active with a L{KeepAliveAck}."""

    opcode = 0xA0

    def payload(self) -> bytes:
        return b""


@frozen
class Join:
    """
    A passive joins: these are the instances it registers.

    A whole Join (C{generation} 0) carries them all, in version 1.  A Join
    in parts carries part C{part} of C{parts} of the registrations of join
    C{generation} (counted from 1 by the passive), in version 2.
    """

    opcode = 0xA1
    registrations: tuple[Registration, ...]
    generation: int = 0
    part: int = 0
    parts: int = 1

    def __attrs_post_init__(self) -> None:
        if not 0 <= self.part < self.parts:
            raise WireError(f"Join part {self.part} of {self.parts}")
        if not self.generation and self.parts != 1:
            raise WireError("a Join in parts has a generation")

    @property
    def version(self) -> int:
        """1 for a whole Join, 2 for a Join in parts."""
        return 2 if self.generation else 1

    def payload(self) -> bytes:
        registrations = _encodeList(self.registrations, _encodeRegistration)
        if not self.generation:
            return registrations
        return _PART_FIELDS.pack(self.generation, self.part, self.parts) + registrations


@frozen
class Leave:
    """A passive leaves gracefully: forget it and its registrations."""

    opcode = 0xA2

    def payload(self) -> bytes:
        return b""


@frozen
class KeepAlive:
    """
    A passive is alive, holds C{registrations} registrations, and knows the
    passive list at C{listVersion}.
    """

    opcode = 0xA3
    registrations: int
    listVersion: int = 0

    def payload(self) -> bytes:
        return struct.pack("<HI", self.registrations, self.listVersion)


@frozen
class KeepAliveAck:
    """
    The active answers: its epoch (in the header), the version of its passive
    list and the passives in join order.  The list is left out (empty) when
    the KeepAlive showed the passive already knows this version, so that a
    KeepAlive costs the same however large the cluster.
    """

    opcode = 0xA4
    passives: tuple[Member, ...]
    listVersion: int = 0

    def payload(self) -> bytes:
        return struct.pack("<I", self.listVersion) + _encodeList(self.passives, Member.encode)


@frozen
class ReJoin:
    """
    The active does not know the sender (or not all its registrations):
    Join again (version 1); or, assembling the sender's Join in parts, it
    asks for C{parts}, by number, of join C{generation} (version 2).
    """

    opcode = 0xA5
    generation: int = 0
    parts: tuple[int, ...] = ()

    def __attrs_post_init__(self) -> None:
        if bool(self.generation) != bool(self.parts):
            raise WireError("a ReJoin names parts of a generation, or neither")

    @property
    def version(self) -> int:
        """1 for a whole ReJoin, 2 for one naming parts."""
        return 2 if self.generation else 1

    def payload(self) -> bytes:
        if not self.generation:
            return b""
        return struct.pack("<I", self.generation) + _encodeList(
            self.parts, lambda part: struct.pack("<H", part))


@frozen
class Activate:
    """
    The active hands over: become active, with these passives and this registry.

    C{ages} gives, for each passive, the milliseconds since its last
    KeepAlive, so that the new active expires dead passives on time.
    C{handover} names an abstract UNIX socket on which the old active passes
    its bound cluster sockets, when the new one is on the same host (empty
    otherwise).
    """

    opcode = 0xA6
    passives: tuple[Member, ...]
    registrations: tuple[Registration, ...]
    ages: tuple[int, ...] = ()
    handover: str = ""

    def __attrs_post_init__(self) -> None:
        if len(self.ages) != len(self.passives):
            raise WireError(f"Activate has {len(self.ages)} ages for "
                            f"{len(self.passives)} passives")

    def payload(self) -> bytes:
        return (_encodeList(self.passives, Member.encode)
                + b"".join(struct.pack("<I", min(age, 0xFFFFFFFF)) for age in self.ages)
                + _encodeList(self.registrations, _encodeRegistration)
                + _short(self.handover.encode("ascii")))


@frozen
class ActivateAck:
    """The new active took over: the old one may stop."""

    opcode = 0xA7

    def payload(self) -> bytes:
        return b""


def _name(_: object, __: object, value: str) -> None:
    checkInstanceName(value)


@frozen
class Resolve:
    """srp's extended resolve: every live registration of an instance."""

    opcode = 0xA8
    instanceName: str = field(validator=_name)

    def payload(self) -> bytes:
        return _short(self.instanceName.encode("ascii"))


@frozen
class ResolveReply:
    """
    Every live registration of C{instanceName}, best first (primary, then standbys).

    C{hosts} gives, for each registration, the address of the node that
    registered it, where its ports are; an empty one means the address the
    query was sent to (the active's own registrations).
    """

    opcode = 0xA9
    instanceName: str = field(validator=_name)
    registrations: tuple[Registration, ...]
    hosts: tuple[str, ...]

    def __attrs_post_init__(self) -> None:
        if len(self.hosts) != len(self.registrations):
            raise WireError(f"ResolveReply has {len(self.hosts)} hosts for "
                            f"{len(self.registrations)} registrations")

    def payload(self) -> bytes:
        return (_short(self.instanceName.encode("ascii"))
                + _encodeList(self.registrations, _encodeRegistration)
                + b"".join(_short(host.encode("ascii")) for host in self.hosts))


@frozen
class Redirect:
    """An active stepping down tells its passives where the active that outranks it is."""

    opcode = 0xAA
    active: Member

    def payload(self) -> bytes:
        return self.active.encode()


@frozen
class StatusQuery:
    """
    Ask a node for a page of its status: the one whose passive and
    registration lists start at these offsets (version 2; the first page,
    at offsets 0, is version 1).
    """

    opcode = 0xAB
    passives: int = 0
    registrations: int = 0

    @property
    def version(self) -> int:
        """1 for the first page, 2 for the others."""
        return 2 if self.passives or self.registrations else 1

    def payload(self) -> bytes:
        if self.version == 1:
            return b""
        return struct.pack("<II", self.passives, self.registrations)


@frozen
class StatusReply:
    """A node's status, or a page of it, as a JSON document (UTF-8)."""

    opcode = 0xAC
    document: str

    def payload(self) -> bytes:
        return self.document.encode("utf-8")


ClusterMessage = (Probe | Join | Leave | KeepAlive | KeepAliveAck | ReJoin | Activate
                  | ActivateAck | Resolve | ResolveReply | Redirect | StatusQuery
                  | StatusReply)

#: The messages that have a version 2 layout.
_VERSIONED = (Join, ReJoin, StatusQuery)


def layoutVersion(message: ClusterMessage) -> int:
    """The lowest version whose layout carries C{message}."""
    return message.version if isinstance(message, _VERSIONED) else 1


def _readPart(reader: _Reader) -> Join:
    generation, part, parts = reader.unpack(_PART_FIELDS.format)
    if not generation:
        raise ClusterWireError("malformed", "a Join in parts has generation 0")
    registrations = _readRegistrations(reader)
    if not registrations:
        raise ClusterWireError("malformed", "a Join part carries no registration")
    return Join(registrations, generation, part, parts)


def _readReJoin(reader: _Reader) -> ReJoin:
    (generation,) = reader.unpack("<I")
    (count,) = reader.unpack("<H")
    parts = tuple(reader.unpack("<H")[0] for _ in range(count))
    if not generation or not parts:
        raise ClusterWireError("malformed", "a version 2 ReJoin names parts of a generation")
    return ReJoin(generation, parts)


def _readStatusQuery(reader: _Reader) -> StatusQuery:
    query = StatusQuery(*reader.unpack("<II"))
    if query.version == 1:
        raise ClusterWireError("malformed", "a version 2 StatusQuery asks for a later page")
    return query


def _decodePayload(opcode: int, version: int, payload: bytes) -> ClusterMessage:
    reader = _Reader(payload)
    message: ClusterMessage
    if version != 1 and opcode not in {kind.opcode for kind in _VERSIONED}:
        raise ClusterWireError("version", f"opcode 0x{opcode:02X} has no version {version}")
    if opcode == Probe.opcode:
        message = Probe()
    elif opcode == Join.opcode:
        message = _readPart(reader) if version == 2 else Join(_readRegistrations(reader))
    elif opcode == Leave.opcode:
        message = Leave()
    elif opcode == KeepAlive.opcode:
        count, version = reader.unpack("<HI")
        message = KeepAlive(count, version)
    elif opcode == KeepAliveAck.opcode:
        (version,) = reader.unpack("<I")
        message = KeepAliveAck(_readMembers(reader), version)
    elif opcode == ReJoin.opcode:
        message = _readReJoin(reader) if version == 2 else ReJoin()
    elif opcode == Activate.opcode:
        passives = _readMembers(reader)
        ages = tuple(reader.unpack("<I")[0] for _ in passives)
        message = Activate(passives, _readRegistrations(reader), ages, reader.text())
    elif opcode == ActivateAck.opcode:
        message = ActivateAck()
    elif opcode == Resolve.opcode:
        message = Resolve(reader.text())
    elif opcode == ResolveReply.opcode:
        name, registrations = reader.text(), _readRegistrations(reader)
        message = ResolveReply(name, registrations, tuple(reader.text() for _ in registrations))
    elif opcode == Redirect.opcode:
        message = Redirect(Member.read(reader))
    elif opcode == StatusQuery.opcode:
        message = _readStatusQuery(reader) if version == 2 else StatusQuery()
    elif opcode == StatusReply.opcode:
        try:
            message = StatusReply(payload.decode("utf-8"))
        except UnicodeDecodeError:
            raise ClusterWireError("malformed", "status document is not UTF-8") from None
        return message
    else:
        raise ClusterWireError("malformed", f"unknown cluster opcode 0x{opcode:02X}")
    reader.end()
    return message


@frozen
class Envelope:
    """A cluster message with its header fields."""

    message: ClusterMessage
    cluster: int
    sender: int
    epoch: int
    sequence: int
    version: int = field(default=Factory(lambda self: layoutVersion(self.message),
                                         takes_self=True))

    def encode(self, key: bytes) -> bytes:
        """
        The datagram, tagged with HMAC-SHA256 under C{key}.

        @raise WireError: if the payload does not fit in one datagram.
        """
        try:
            payload = self.message.payload()
        except struct.error as e:
            raise WireError(f"{type(self.message).__name__} field out of range: {e}") from None
        if len(payload) > MAX_PAYLOAD:
            raise WireError(f"{type(self.message).__name__} payload of {len(payload)} bytes "
                            f"exceeds {MAX_PAYLOAD}")
        try:
            body = _HEADER.pack(self.message.opcode, self.version, 0, self.cluster,
                                self.sender, self.epoch, self.sequence, len(payload)) + payload
        except struct.error as e:
            raise WireError(f"header field out of range: {e}") from None
        return body + hmac.digest(key, body, hashlib.sha256)


def decodeEnvelope(datagram: bytes, key: bytes, cluster: int) -> Envelope:
    """
    Check and parse a cluster message.

    @param key: the cluster key (empty when the cluster has none).
    @param cluster: the id of the cluster this node belongs to.
    @raise ClusterWireError: naming the reason to reject it.
    """
    if len(datagram) > MAX_MESSAGE:
        raise ClusterWireError("oversized", f"message of {len(datagram)} bytes")
    if len(datagram) < HEADER_SIZE + TAG_SIZE:
        raise ClusterWireError("truncated", f"message of {len(datagram)} bytes is shorter "
                               "than header and tag")
    opcode, version, _, clusterValue, sender, epoch, sequence, length = _HEADER.unpack_from(
        datagram)
    if not 1 <= version <= VERSION:
        raise ClusterWireError("version", f"version {version}; this node speaks 1-{VERSION}")
    if HEADER_SIZE + length + TAG_SIZE != len(datagram):
        raise ClusterWireError("truncated", f"payload length {length} does not match a "
                               f"message of {len(datagram)} bytes")
    body, tag = datagram[:-TAG_SIZE], datagram[-TAG_SIZE:]
    if not hmac.compare_digest(hmac.digest(key, body, hashlib.sha256), tag):
        raise ClusterWireError("tag", "authentication tag does not match the cluster key")
    if clusterValue != cluster:
        raise ClusterWireError("cluster", f"message for cluster id {clusterValue:08x}, "
                               f"not {cluster:08x}")
    try:
        message = _decodePayload(opcode, version, body[HEADER_SIZE:])
    except ClusterWireError:
        raise
    except WireError as e:
        raise ClusterWireError("malformed", str(e)) from None
    return Envelope(message, clusterValue, sender, epoch, sequence, version)


__all__ = [
    "Activate", "ActivateAck", "ClusterMessage", "ClusterWireError", "Envelope",
    "Join", "KeepAlive", "KeepAliveAck", "Leave", "Member", "Probe", "ReJoin", "Redirect",
    "Resolve", "ResolveReply", "StatusQuery", "StatusReply", "clusterId", "decodeEnvelope",
    "isClusterMessage", "layoutVersion", "registrationSize",
]
