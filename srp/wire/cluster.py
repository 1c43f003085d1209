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

from attrs import Factory, field, frozen

from srp.wire.errors import WireError
from srp.wire.fields import ClusterWireError, Member, registrationsDigest, registrationSize
from srp.wire.fields import Reader as _Reader
from srp.wire.fields import encodeList as _encodeList
from srp.wire.fields import encodeRegistration as _encodeRegistration
from srp.wire.fields import readMembers as _readMembers
from srp.wire.fields import readRegistration as _readRegistration
from srp.wire.fields import readRegistrations as _readRegistrations
from srp.wire.fields import short as _short
from srp.wire.instances import Registration, checkInstanceName
from srp.wire.subscriptions import Notify, NotifyAck, Subscribe, readSubscription

#: The highest version of the message layouts this node speaks.  Every
#: message is sent at the lowest version whose layout carries it: a Join in
#: parts, a ReJoin naming parts and a StatusQuery for a later page need
#: version 2, as does a KeepAlive carrying a digest of the passive's
#: registrations; every other message is version 1, as version 1 nodes send it.
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


#: The cluster id of a Resolve or StatusQuery asked of whichever cluster the
#: node is in (the asker named none); the reply carries the node's real one.
#: No cluster may have a name with this id.
ANY_CLUSTER = 0


def clusterId(name: str | None) -> int:
    """The 32-bit id of a cluster name, carried in every header; L{ANY_CLUSTER} for none."""
    return ANY_CLUSTER if name is None else zlib.crc32(name.encode("utf-8"))


def isClusterMessage(datagram: bytes) -> bool:
    """Whether C{datagram} claims to be a cluster message (by its first byte)."""
    return bool(datagram) and FIRST_OPCODE <= datagram[0] <= LAST_OPCODE


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
    A passive is alive, holds C{registrations} registrations whose
    L{registrationsDigest} is C{digest} (version 2; 0 in version 1: none),
    and knows the passive list at C{listVersion}.
    """

    opcode = 0xA3
    registrations: int
    listVersion: int = 0
    digest: int = 0

    @property
    def version(self) -> int:
        """1 without a digest, 2 with one."""
        return 2 if self.digest else 1

    def payload(self) -> bytes:
        if not self.digest:
            return struct.pack("<HI", self.registrations, self.listVersion)
        return struct.pack("<HII", self.registrations, self.listVersion, self.digest)


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


@frozen
class Register:
    """
    Register C{registration} for C{ttl} milliseconds (0: until unregistered),
    or renew it: a registration by command (C{srp register}).

    The active answers with a L{RegisterAck} and forwards the lease to every
    passive, with the milliseconds it has left as C{ttl} and the address its
    ports are at as C{host} (a registrant leaves it empty: the address it
    sends from, or the cluster address when that is a loopback one).
    """

    opcode = 0xAD
    action = 1
    registration: Registration
    ttl: int
    host: str = ""

    def payload(self) -> bytes:
        return (bytes([self.action]) + _encodeRegistration(self.registration)
                + struct.pack("<I", self.ttl) + _short(self.host.encode("ascii")))


@frozen
class Unregister:
    """
    End the registration by command of C{instanceName} at C{priority}.  It
    shares L{Register}'s opcode; the first payload byte tells them apart.
    """

    opcode = 0xAD
    action = 2
    instanceName: str = field(validator=_name)
    priority: int = 0

    def payload(self) -> bytes:
        return (bytes([self.action]) + _short(self.instanceName.encode("ascii"))
                + struct.pack("<H", self.priority))


#: The result codes of a L{RegisterAck}.
REGISTERED, UNKNOWN, FULL, REFUSED = 0, 1, 2, 3


@frozen
class RegisterAck:
    """
    The active's answer to a L{Register} or L{Unregister}: a result code
    (C{REGISTERED}, C{UNKNOWN} registration, C{FULL} lease table, other
    C{REFUSED}), the milliseconds the lease lasts (0: until unregistered),
    and the reason, in words, when it is not C{REGISTERED}.
    """

    opcode = 0xAE
    result: int
    ttl: int = 0
    reason: str = ""

    def payload(self) -> bytes:
        return struct.pack("<BI", self.result, self.ttl) + _short(self.reason.encode("utf-8"))


ClusterMessage = (Probe | Join | Leave | KeepAlive | KeepAliveAck | ReJoin | Activate
                  | ActivateAck | Resolve | ResolveReply | Redirect | StatusQuery
                  | StatusReply | Register | Unregister | RegisterAck | Subscribe | Notify
                  | NotifyAck)

#: The messages that have a version 2 layout.
_VERSIONED = (Join, KeepAlive, ReJoin, StatusQuery)


#: The messages a node takes when they name no cluster (L{ANY_CLUSTER}): the
#: queries, registrations by command and subscriptions (whose sender holds
#: the key, or asks over loopback, and need not know the name).
_ANY_CLUSTER_OPCODES = frozenset({Resolve.opcode, StatusQuery.opcode, Register.opcode,
                                  Subscribe.opcode})


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


def _readLease(reader: _Reader) -> Register | Unregister:
    (action,) = reader.unpack("<B")
    if action == Register.action:
        registration = _readRegistration(reader)
        (ttl,) = reader.unpack("<I")
        return Register(registration, ttl, reader.text())
    if action == Unregister.action:
        name = reader.text()
        return Unregister(name, reader.unpack("<H")[0])
    raise ClusterWireError("malformed", f"unknown lease action {action}")


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
        if version == 2:
            count, listVersion, digest = reader.unpack("<HII")
            if not digest:
                raise ClusterWireError("malformed", "a version 2 KeepAlive carries a digest")
            message = KeepAlive(count, listVersion, digest)
        else:
            count, listVersion = reader.unpack("<HI")
            message = KeepAlive(count, listVersion)
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
    elif opcode == Register.opcode:
        message = _readLease(reader)
    elif opcode == Subscribe.opcode:
        message = readSubscription(reader)
    elif opcode == RegisterAck.opcode:
        result, ttl = reader.unpack("<BI")
        try:
            message = RegisterAck(result, ttl, reader.bytes().decode("utf-8"))
        except UnicodeDecodeError:
            raise ClusterWireError("malformed", "RegisterAck reason is not UTF-8") from None
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
    @param cluster: the id of the cluster this node belongs to: a Resolve or
        StatusQuery for L{ANY_CLUSTER} is accepted too; a client that asked
        L{ANY_CLUSTER} accepts any cluster's reply.
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
    if clusterValue != cluster and cluster != ANY_CLUSTER and not (
            clusterValue == ANY_CLUSTER and opcode in _ANY_CLUSTER_OPCODES):
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
    "ANY_CLUSTER", "FULL", "REFUSED", "REGISTERED", "UNKNOWN", "Activate", "ActivateAck",
    "ClusterMessage", "ClusterWireError", "Envelope", "Join", "KeepAlive", "KeepAliveAck",
    "Leave", "Member", "Notify", "NotifyAck", "Probe", "ReJoin", "Redirect", "Register",
    "RegisterAck", "Resolve", "ResolveReply", "StatusQuery", "StatusReply", "Subscribe",
    "Unregister", "clusterId", "decodeEnvelope", "isClusterMessage", "layoutVersion",
    "registrationSize", "registrationsDigest",
]
