"""
Subscriptions: a client asks a node to push the changes of an instance's
answer (L{Subscribe}), the node pushes them (L{Notify}) until the client
acknowledges each (L{NotifyAck}).

The three share the cluster opcode C{0xAF}; the first payload byte (the
kind) tells them apart.  They travel in an L{Envelope
<srp.wire.cluster.Envelope>} like every cluster message; the byte layout is
specified in C{docs/protocol.md}.
"""

from __future__ import annotations

import struct

from attrs import field, frozen

from srp.wire.errors import WireError
from srp.wire.fields import (
    ClusterWireError,
    Reader,
    encodeList,
    encodeRegistration,
    readRegistrations,
    short,
)
from srp.wire.instances import Registration, checkInstanceName


def _name(_: object, __: object, value: str) -> None:
    checkInstanceName(value)


@frozen
class Subscribe:
    """
    Push the changes of C{instanceName}'s answer to the sender for C{ttl}
    milliseconds (renewed by sending it again; 0: end the subscription).
    The node answers with a L{Notify} of the current answer at once.
    """

    opcode = 0xAF
    kind = 1
    instanceName: str = field(validator=_name)
    ttl: int

    def payload(self) -> bytes:
        return (bytes([self.kind]) + short(self.instanceName.encode("ascii"))
                + struct.pack("<I", self.ttl))


@frozen
class Notify:
    """
    The answer to a L{Subscribe}, and each change of it: every live
    registration of C{instanceName} with its node's address, as a
    L{ResolveReply} lists them.  It shares L{Subscribe}'s opcode.

    C{change} counts the node's changes of the answer (the subscriber acks
    it with a L{NotifyAck}, and the node repeats it until then); C{ttl}
    is what is left of the subscription in milliseconds, 0 when there is
    none (refused, or ended by a node that stops: subscribe again).
    """

    opcode = 0xAF
    kind = 2
    instanceName: str = field(validator=_name)
    change: int
    ttl: int
    registrations: tuple[Registration, ...]
    hosts: tuple[str, ...]

    def __attrs_post_init__(self) -> None:
        if len(self.hosts) != len(self.registrations):
            raise WireError(f"Notify has {len(self.hosts)} hosts for "
                            f"{len(self.registrations)} registrations")

    def payload(self) -> bytes:
        return (bytes([self.kind]) + short(self.instanceName.encode("ascii"))
                + struct.pack("<II", self.change, self.ttl)
                + encodeList(self.registrations, encodeRegistration)
                + b"".join(short(host.encode("ascii")) for host in self.hosts))


@frozen
class NotifyAck:
    """The subscriber received the L{Notify} of C{instanceName} numbered C{change}."""

    opcode = 0xAF
    kind = 3
    instanceName: str = field(validator=_name)
    change: int

    def payload(self) -> bytes:
        return (bytes([self.kind]) + short(self.instanceName.encode("ascii"))
                + struct.pack("<I", self.change))


def readSubscription(reader: Reader) -> Subscribe | Notify | NotifyAck:
    """Read a L{Subscribe}, L{Notify} or L{NotifyAck} (by the kind byte that starts it)."""
    (kind,) = reader.unpack("<B")
    if kind == Subscribe.kind:
        name = reader.text()
        return Subscribe(name, reader.unpack("<I")[0])
    if kind == Notify.kind:
        name = reader.text()
        change, ttl = reader.unpack("<II")
        registrations = readRegistrations(reader)
        return Notify(name, change, ttl, registrations,
                      tuple(reader.text() for _ in registrations))
    if kind == NotifyAck.kind:
        name = reader.text()
        return NotifyAck(name, reader.unpack("<I")[0])
    raise ClusterWireError("malformed", f"unknown subscription message kind {kind}")
