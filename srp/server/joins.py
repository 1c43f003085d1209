"""
A passive's Join whatever its size: split into parts by the passive,
assembled by the active.

A Join that fits in one datagram goes whole, as version 1 nodes send it.
A larger one goes in parts of one generation, each in one Ethernet frame.
The passive sends the first L{WINDOW} parts; the active, each time the
parts it expects have all come, asks for the next ones with a ReJoin that
names them, so that no more than a window of parts is ever in flight (a
burst of a whole large Join would overflow the active's receive buffer and
crowd out client requests).  A lost part stalls the window; the passive's
next KeepAlive then finds the active's count short and the active asks
again for the parts it lacks.  The active applies a generation only once
every part of it has come, in one go, so that no request sees half of it.
"""

from __future__ import annotations

from collections.abc import Sequence

from attrs import define, field, frozen

from srp.records import Registration
from srp.server.limits import StateBounds
from srp.wire.cluster import (
    HEADER_SIZE,
    MAX_PAYLOAD,
    PART_OVERHEAD,
    TAG_SIZE,
    Join,
    ReJoin,
    registrationsDigest,
    registrationSize,
)
from srp.wire.errors import WireError

#: The largest datagram of a Join part: one Ethernet frame (1,500 bytes of
#: MTU, less the IPv4 or IPv6 and UDP headers, with room for a tunnel), so
#: that losing a frame loses one part and no IP fragment is reassembled.
PART_DATAGRAM = 1400
#: How many parts of a Join are in flight at once: about 45 KB, a fifth of
#: Linux's default UDP receive buffer.
WINDOW = 32
#: The largest generation; the next one after it is 1 again.
MAX_GENERATION = 0xFFFFFFFF


def joinParts(registrations: Sequence[Registration], generation: int) -> tuple[Join, ...]:
    """
    The Joins that carry C{registrations}: one whole Join when it fits in a
    datagram, or else parts of C{generation}, each in at most
    L{PART_DATAGRAM} bytes (a registration bigger than that goes alone).

    @raise WireError: if a registration does not fit in a datagram, or it
        takes more than 65,535 parts.
    """
    sizes = [registrationSize(r) for r in registrations]
    if 2 + sum(sizes) <= MAX_PAYLOAD:
        return (Join(tuple(registrations)),)
    budget = PART_DATAGRAM - HEADER_SIZE - TAG_SIZE - PART_OVERHEAD
    bounds, size = [0], 0
    for n, length in enumerate(sizes):
        if length > MAX_PAYLOAD - PART_OVERHEAD:
            raise WireError(f"a registration of {length} bytes does not fit in a datagram")
        if n > bounds[-1] and size + length > budget:
            bounds.append(n)
            size = 0
        size += length
    if len(bounds) > 0xFFFF:
        raise WireError(f"{len(registrations)} registrations take {len(bounds)} parts; "
                        "at most 65,535")
    ends = [*bounds[1:], len(registrations)]
    return tuple(Join(tuple(registrations[start:end]), generation, n, len(bounds))
                 for n, (start, end) in enumerate(zip(bounds, ends, strict=True)))


class JoinParts:
    """
    What a node sends to join: its registrations as the Joins that carry
    them, and the generation they have.  A new set of registrations is a
    new generation.
    """

    def __init__(self) -> None:
        self.generation = 0
        self._registrations: tuple[Registration, ...] = ()
        self._parts: tuple[Join, ...] | None = None
        self._digest: int | None = None

    def update(self, registrations: Sequence[Registration]) -> None:
        """The node now registers C{registrations}: a new generation."""
        self.generation = self.generation % MAX_GENERATION + 1
        self._registrations = tuple(registrations)
        self._parts = None
        self._digest = None

    @property
    def digest(self) -> int:
        """The L{registrationsDigest} of the registrations, for KeepAlive."""
        if self._digest is None:
            self._digest = registrationsDigest(self._registrations)
        return self._digest

    @property
    def parts(self) -> tuple[Join, ...]:
        """Every Join of this generation (split when first needed)."""
        if self._parts is None:
            self._parts = joinParts(self._registrations, self.generation)
        return self._parts

    def first(self) -> tuple[Join, ...]:
        """What a Join starts with: the whole Join, or the first window of parts."""
        return self.parts[:WINDOW]

    def asked(self, rejoin: ReJoin) -> tuple[Join, ...]:
        """
        What to send for C{rejoin}: the parts it names, when it names parts
        of this generation; otherwise the start of this generation's Join.
        """
        parts = self.parts
        if rejoin.generation != self.generation or parts[0].generation != self.generation:
            return self.first()
        return tuple(parts[n] for n in dict.fromkeys(rejoin.parts) if n < len(parts))


@frozen
class Assembled:
    """
    A node's Join, complete: the registrations to apply, and how many the
    Join carried (more than were kept when it passed the node's bound).
    """

    registrations: tuple[Registration, ...]
    carried: int


@define
class _Assembly:
    """The parts of one generation of one node's Join received so far."""

    generation: int
    parts: int
    touched: float
    #: One byte per part: 1 once received.
    present: bytearray
    #: The parts asked for (the first window, then each ReJoin's) not yet received.
    expected: set[int]
    received: int = 0
    #: The registrations kept, by part: at most the node's bound in all.
    kept: dict[int, tuple[Registration, ...]] = field(factory=dict)
    keptCount: int = 0
    carried: int = 0

    @classmethod
    def start(cls, join: Join, now: float) -> _Assembly:
        return cls(join.generation, join.parts, now, bytearray(join.parts),
                   set(range(min(WINDOW, join.parts))))

    def take(self, join: Join, registrations: tuple[Registration, ...], limit: int) -> None:
        """Keep part C{join}, whose own registrations are C{registrations}."""
        self.expected.discard(join.part)
        if self.present[join.part]:
            return
        self.present[join.part] = 1
        self.received += 1
        self.carried += len(registrations)
        kept = registrations[:max(0, limit - self.keptCount)]
        if kept:
            self.kept[join.part] = kept
            self.keptCount += len(kept)

    def wanted(self) -> tuple[int, ...]:
        """The next window of missing parts."""
        wanted: list[int] = []
        n = self.present.find(0)
        while n >= 0 and len(wanted) < WINDOW:
            wanted.append(n)
            n = self.present.find(0, n + 1)
        return tuple(wanted)


class PartDropped(Exception):
    """
    A Join part the active drops; C{reason} is one word for counters:
    C{stale} (of an older generation, or of one applied already),
    C{inconsistent} (its part count is not its generation's) or C{full}
    (too many Joins are being assembled).
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class JoinAssembler:
    """
    The active's side: the Joins in parts it is assembling, one generation
    per node, bounded by the node's L{StateBounds}: as many at once as
    passives, and as many registrations kept of each as one node may have.
    """

    def __init__(self) -> None:
        self._assemblies: dict[int, _Assembly] = {}
        self._applied: dict[int, int] = {}

    def add(self, nodeId: int, join: Join, now: float,
            bounds: StateBounds) -> Assembled | ReJoin | None:
        """
        Take a Join (whole, or a part) from node C{nodeId}.

        @return: the node's registrations once C{join} completes its
            generation; a ReJoin asking for the next parts once every part
            asked for so far has come; otherwise L{None}.
        @raise PartDropped: if the part is dropped.
        """
        limit = bounds.maxRegistrationsPerNode
        mine = tuple(r for r in join.registrations if r.nodeId == nodeId)
        if not join.generation:
            self.forget(nodeId)
            return Assembled(mine[:limit], len(mine))
        assembly = self._assemblies.get(nodeId)
        if join.generation <= self._applied.get(nodeId, 0) or (
                assembly is not None and join.generation < assembly.generation):
            raise PartDropped("stale")
        if assembly is None or join.generation > assembly.generation:
            if assembly is None and len(self._assemblies) >= bounds.maxPassives:
                raise PartDropped("full")
            assembly = self._assemblies[nodeId] = _Assembly.start(join, now)
        if join.parts != assembly.parts:
            raise PartDropped("inconsistent")
        assembly.touched = now
        assembly.take(join, mine, limit)
        if assembly.received == assembly.parts:
            del self._assemblies[nodeId]
            self._applied[nodeId] = assembly.generation
            return Assembled(tuple(r for n in sorted(assembly.kept) for r in assembly.kept[n]),
                             assembly.carried)
        if not assembly.expected:
            return self._ask(assembly)
        return None

    def assembling(self, nodeId: int) -> bool:
        """Whether a Join of C{nodeId} is being assembled."""
        return nodeId in self._assemblies

    def askAgain(self, nodeId: int, now: float, after: float) -> ReJoin | None:
        """
        A ReJoin for the parts node C{nodeId} still owes, if its Join has
        received nothing for C{after} seconds (a part or a ReJoin was lost).
        """
        assembly = self._assemblies.get(nodeId)
        if assembly is None or now - assembly.touched < after:
            return None
        assembly.touched = now
        return self._ask(assembly)

    def expire(self, before: float) -> None:
        """Drop the Joins that received nothing since C{before}."""
        for nodeId, assembly in list(self._assemblies.items()):
            if assembly.touched < before:
                del self._assemblies[nodeId]

    def forget(self, nodeId: int) -> None:
        """Forget node C{nodeId}: what it is joining and what it joined."""
        self._assemblies.pop(nodeId, None)
        self._applied.pop(nodeId, None)

    def _ask(self, assembly: _Assembly) -> ReJoin:
        wanted = assembly.wanted()
        assembly.expected = set(wanted)
        return ReJoin(assembly.generation, wanted)
