"""
The role machine of a node's cluster membership: what can happen to a node
(L{RoleInputs}) and, built with Automat, the role each input leads to.
Each state's data is the role (an L{IClusterRole} from L{srp.server.roles}),
built as the state is entered.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from automat import TypeMachineBuilder
from twisted.internet.defer import Deferred, succeed

from srp.server.roles.active import ActiveRole, ClusterPorts
from srp.server.roles.base import (
    NOTHING_HEARD,
    Address,
    ClusterView,
    CrashedRole,
    StoppedRole,
)
from srp.server.roles.handingover import HandingOverRole
from srp.server.roles.passive import PassiveRole
from srp.server.roles.seeking import BindingRole, ProbingRole, WaitingRole
from srp.server.roles.standalone import StandaloneRole

if TYPE_CHECKING:
    from srp.server.membership import Membership


class RoleInputs(Protocol):
    """What can happen to a node; the role machine decides what it means."""

    def start(self) -> None:
        "The node starts: look for an active."

    def activeFound(self, view: ClusterView) -> None:
        "An active answered a node looking for one; C{view} is what it said."

    def probeExpired(self, view: ClusterView) -> None:
        "Nobody answered the probe in time (or this node's turn to take over came)."

    def portBound(self, ports: ClusterPorts, view: ClusterView = NOTHING_HEARD) -> None:
        "This node now holds the cluster C{ports}."

    def portRefused(self, view: ClusterView, retryIn: float) -> None:
        "The cluster port could not be bound: someone else holds it; probe again later."

    def activeLost(self, view: ClusterView) -> None:
        "Enough KeepAlives went unanswered: the active is presumed dead."

    def activated(self, view: ClusterView, activatedBy: Address, handover: str) -> None:
        "The active handed over to this node (Activate), offering its sockets as C{handover}."

    def outranked(self, view: ClusterView) -> None:
        "Another active with a higher epoch (or id, at equal epochs) exists."

    def stop(self) -> Deferred[None]:
        "Stop gracefully: Leave as a passive, hand over as the active."

    def stopped(self) -> None:
        "The hand-over (or the lack of one) is complete."

    def halt(self) -> None:
        "Stop at once, telling nobody: what a crash does."

    def _handOver(self, active: ActiveRole) -> None:
        "The active is stopping: start handing over."



def _probing(inputs: RoleInputs, core: Membership, view: ClusterView = NOTHING_HEARD,
             retryIn: float = 0.0) -> ProbingRole:
    if core.socket is None:
        core.openSocket()
    role = ProbingRole(core, view)
    if retryIn:
        core.schedule(retryIn, role.probe)
    else:
        role.probe()
    return role


def _waiting(inputs: RoleInputs, core: Membership, view: ClusterView) -> WaitingRole:
    role = WaitingRole(core, view)
    role.wait()
    return role


def _binding(inputs: RoleInputs, core: Membership, view: ClusterView,
             activatedBy: Address | None = None, handover: str = "") -> BindingRole:
    role = BindingRole(core, view, activatedBy, handover)
    if activatedBy is None:
        role.bind()
    else:
        role.take()
    return role


def _passive(inputs: RoleInputs, core: Membership, view: ClusterView) -> PassiveRole:
    core.cancelTimer()  # the probe's expiry
    role = PassiveRole(core, view)
    role.begin()
    core.roleChanged(role.name)
    return role


def _active(inputs: RoleInputs, core: Membership, ports: ClusterPorts,
            view: ClusterView = NOTHING_HEARD) -> ActiveRole:
    if core.settings.standalone:
        role: ActiveRole = StandaloneRole(core, ports, view)
    else:
        if core.socket is None:
            core.openSocket()
        role = ActiveRole(core, ports, view)
    role.begin()
    core.roleChanged(role.name)
    return role


def _handingOver(inputs: RoleInputs, core: Membership, active: ActiveRole) -> HandingOverRole:
    role = HandingOverRole(core, active)
    role.begin()
    return role


def _stopped(inputs: RoleInputs, core: Membership) -> StoppedRole:
    return StoppedRole(core)


def _crashed(inputs: RoleInputs, core: Membership) -> CrashedRole:
    return CrashedRole(core)


def buildMachine(core: type[Membership]) -> Callable[[Membership], RoleInputs]:
    """
    The role machine's factory: given a membership core, the machine whose
    states' data are the roles (L{Membership} passes its own class, which
    imports this module).
    """
    builder = TypeMachineBuilder(RoleInputs, core)
    idle = builder.state("idle")
    probing = builder.state("probing", _probing)
    binding = builder.state("binding", _binding)
    passive = builder.state("passive", _passive)
    waiting = builder.state("waiting", _waiting)
    active = builder.state("active", _active)
    handingOver = builder.state("handingOver", _handingOver)
    stopped = builder.state("stopped", _stopped)
    crashed = builder.state("crashed", _crashed)

    idle.upon(RoleInputs.start).to(probing).returns(None)
    probing.upon(RoleInputs.activeFound).to(passive).returns(None)
    waiting.upon(RoleInputs.activeFound).to(passive).returns(None)
    probing.upon(RoleInputs.probeExpired).to(binding).returns(None)
    waiting.upon(RoleInputs.probeExpired).to(binding).returns(None)
    binding.upon(RoleInputs.portRefused).to(probing).returns(None)
    passive.upon(RoleInputs.activeLost).to(waiting).returns(None)
    passive.upon(RoleInputs.activated).to(binding).returns(None)
    idle.upon(RoleInputs.portBound).to(active).returns(None)

    @binding.upon(RoleInputs.portBound).to(active)
    def bound(inputs: RoleInputs, core: Membership, binding: BindingRole, ports: ClusterPorts,
              view: ClusterView = NOTHING_HEARD) -> None:
        binding.acknowledge()

    @active.upon(RoleInputs.outranked).to(probing)
    def outranked(inputs: RoleInputs, core: Membership, active: ActiveRole,
                  view: ClusterView) -> None:
        core.roleChanged("probing")

    @idle.upon(RoleInputs.stop).to(stopped)
    @probing.upon(RoleInputs.stop, nodata=True).to(stopped)
    @binding.upon(RoleInputs.stop, nodata=True).to(stopped)
    @waiting.upon(RoleInputs.stop, nodata=True).to(stopped)
    def stopQuietly(inputs: RoleInputs, core: Membership) -> Deferred[None]:
        done = core.stoppedDeferred()
        core.finish()
        return done

    @passive.upon(RoleInputs.stop).to(stopped)
    def stopPassive(inputs: RoleInputs, core: Membership, passive: PassiveRole
                    ) -> Deferred[None]:
        done = core.stoppedDeferred()
        passive.leave()
        core.finish()
        return done

    @active.upon(RoleInputs.stop).loop()
    def stopActive(inputs: RoleInputs, core: Membership, active: ActiveRole) -> Deferred[None]:
        # Runs once this input is done: the hand-over is a state of its own,
        # whose data starts from the active's.
        inputs._handOver(active)
        return core.stoppedDeferred()

    active.upon(RoleInputs._handOver).to(handingOver).returns(None)

    @handingOver.upon(RoleInputs.stop, nodata=True).loop()
    def stopAgain(inputs: RoleInputs, core: Membership) -> Deferred[None]:
        return core.stoppedDeferred()

    @stopped.upon(RoleInputs.stop, nodata=True).loop()
    @crashed.upon(RoleInputs.stop, nodata=True).loop()
    def alreadyStopped(inputs: RoleInputs, core: Membership) -> Deferred[None]:
        return succeed(None)

    @handingOver.upon(RoleInputs.stopped).to(stopped)
    def handedOver(inputs: RoleInputs, core: Membership, handingOver: HandingOverRole
                   ) -> None:
        core.roleChanged("stopped")
        handingOver.release()
        core.finish()

    @active.upon(RoleInputs.halt).to(crashed)
    def crashActive(inputs: RoleInputs, core: Membership, active: ActiveRole) -> None:
        active.ports.release()
        core.closeSocket()

    @handingOver.upon(RoleInputs.halt).to(crashed)
    def crashHandingOver(inputs: RoleInputs, core: Membership,
                         handingOver: HandingOverRole) -> None:
        handingOver.release()
        core.closeSocket()

    @idle.upon(RoleInputs.halt).to(crashed)
    @probing.upon(RoleInputs.halt, nodata=True).to(crashed)
    @binding.upon(RoleInputs.halt, nodata=True).to(crashed)
    @passive.upon(RoleInputs.halt, nodata=True).to(crashed)
    @waiting.upon(RoleInputs.halt, nodata=True).to(crashed)
    @stopped.upon(RoleInputs.halt, nodata=True).to(crashed)
    def crash(inputs: RoleInputs, core: Membership) -> None:
        core.closeSocket()

    crashed.upon(RoleInputs.halt, nodata=True).loop().returns(None)

    # A hand-over's sockets may arrive after the node stopped: let them go.
    @stopped.upon(RoleInputs.portBound, nodata=True).loop()
    @crashed.upon(RoleInputs.portBound, nodata=True).loop()
    def boundTooLate(inputs: RoleInputs, core: Membership, ports: ClusterPorts,
                     view: ClusterView = NOTHING_HEARD) -> None:
        ports.release()

    stopped.upon(RoleInputs.portRefused, nodata=True).loop().returns(None)
    crashed.upon(RoleInputs.portRefused, nodata=True).loop().returns(None)

    return builder.build()

