"""
What every role shares: the L{Role} base class, the L{ClusterView} one role
hands to the next, and the roles that do nothing at all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from attrs import evolve, field, frozen
from twisted.internet.protocol import DatagramProtocol
from zope.interface import implementer

from srp.interfaces import IClusterRole
from srp.records import Registration
from srp.wire.cluster import NO_LIST_VERSION, Activate, Envelope, KeepAliveAck, Member

if TYPE_CHECKING:
    from srp.server.membership import Membership

Address = tuple[str, int]


@frozen
class ClusterView:
    """
    What a node last heard of its cluster, carried from one role to the next.

    @ivar active: the active that last answered (or that a Redirect named).
    @ivar passives: the passive list in join order, as the active last sent it.
    @ivar listVersion: the version that list came with.
    @ivar ages: seconds since each passive's last KeepAlive, by node id, as
        the Activate that made this node the next active told them.
    """

    active: Member | None = None
    passives: tuple[Member, ...] = ()
    listVersion: int = NO_LIST_VERSION
    ages: Mapping[int, float] = field(factory=dict, hash=False)

    @property
    def activeNode(self) -> int:
        """The active's node id, or 0 when no active is known."""
        return 0 if self.active is None else self.active.nodeId

    def heard(self, ack: KeepAliveAck, sender: int, source: Address) -> ClusterView:
        """
        What an active's KeepAliveAck tells: who the active is, and the
        passive list when the ack carries one.  A list version is kept only
        while the active stays the same.
        """
        version = self.listVersion if sender == self.activeNode else NO_LIST_VERSION
        passives = self.passives
        if ack.passives:
            passives, version = ack.passives, ack.listVersion
        return evolve(self, active=Member(sender, source[0], source[1]), passives=passives,
                      listVersion=version)


#: A node that has heard nothing of its cluster yet.
NOTHING_HEARD = ClusterView()


@implementer(IClusterRole)
class Role:
    """
    A role: the core it works through, and the defaults of a role that
    handles nothing (an Activate it does not take is counted as refused).
    """

    name = "idle"

    def __init__(self, core: Membership) -> None:
        self.core = core

    @property
    def active(self) -> Member | None:
        """The active this role knows of: none."""
        return None

    @property
    def passives(self) -> Sequence[Member]:
        """The passive list this role knows: none."""
        return ()

    def received(self, envelope: Envelope, source: Address,
                 replyFrom: DatagramProtocol) -> None:
        """Ignore the message; count an Activate as refused."""
        if isinstance(envelope.message, Activate):
            self.core.counters["activate_refused"] += 1

    def tick(self) -> None:
        """Nothing to do periodically."""

    def paused(self, gap: float) -> bool:
        """Nothing to check after a pause, and no answers to hold back."""
        return False

    def ownChanged(self) -> None:
        """Nothing to tell: the role that comes next reads the node's own registrations."""

    def registrations(self) -> Sequence[Registration]:
        """The node's own registrations."""
        return self.core.own


class IdleRole(Role):
    """A node that has not started."""

    name = "idle"


class StoppedRole(Role):
    """A node that stopped: it left (or handed over) and released everything."""

    name = "stopped"


class CrashedRole(Role):
    """A node that stopped at once, telling nobody, as a crash does (simulations)."""

    name = "crashed"
