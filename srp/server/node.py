"""The node service: the cluster role, the [MC-SQLR] responder and the registry together."""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.error import CannotListenError
from twisted.internet.utils import getProcessValue
from twisted.logger import Logger

from srp.server.config import ClusterConfig, NodeConfig
from srp.server.limits import ReplyLimiter
from srp.server.membership import ClusterSettings, Membership
from srp.server.registry import Registry
from srp.server.responder import ResponderStats


class NodeStartError(Exception):
    """A node could not start; the message says why and what to do."""


class NodeService(Service):
    """
    An srp node.

    A standalone node (no C{[cluster]} in its configuration) binds its port
    when it starts and answers for its own instances.  A clustered node
    probes its cluster, becomes passive (Join, KeepAlive) or active
    (answers for every registration), takes over when the active dies, and
    hands over with Activate when it stops.

    Use it from C{twistd -n srp}, C{srp serve}, or add it to the service
    hierarchy of any Twisted program.
    """

    log = Logger()

    def __init__(self, config: NodeConfig, reactor: Any = None,
                 nodeId: int | None = None) -> None:
        if reactor is None:
            from twisted.internet import reactor as _reactor

            reactor = _reactor
        self.config = config
        self.reactor = reactor
        self.registry = Registry()
        self.stats = ResponderStats()
        cluster = config.cluster or ClusterConfig()
        settings = ClusterSettings(
            listen=config.listen, addresses=cluster.addresses or config.listen,
            port=config.port, name=cluster.name, interval=cluster.interval,
            misses=cluster.misses, key=cluster.key, extensions=config.extensions,
        )
        self.limiter = ReplyLimiter(reactor, config.perSource, config.overall, config.reserve)
        self.membership = Membership(reactor, settings, self.registry, config.instances,
                                     self.stats, nodeId, onRole=self._roleChanged,
                                     access=config.access, limiter=self.limiter,
                                     bounds=config.bounds)

    @property
    def role(self) -> str:
        """The role this node plays now: probing, passive, active, ..."""
        return self.membership.role

    def privilegedStartService(self) -> None:
        """
        A standalone node binds its port now (a clustered one when it becomes active).

        @raise NodeStartError: if the port is in use or cannot be bound.
        """
        super().privilegedStartService()
        if self.config.cluster is not None:
            return
        try:
            self.membership.listen()
        except CannotListenError as e:
            reason = e.socketError.strerror if e.socketError else str(e)
            hint = ""
            if "in use" in str(reason):
                hint = " (is another srp node or SQL Server Browser running there?)"
            raise NodeStartError(
                f"cannot listen on {e.interface or '*'}:{e.port}/udp: {reason}{hint}"
            ) from None

    def startService(self) -> None:
        """Start playing the node's role."""
        super().startService()
        cluster = self.config.cluster
        if cluster is None:
            if not self.membership.clusterPorts:
                self.privilegedStartService()
            self.membership.machine.portBound()
        else:
            if not cluster.key:
                self.log.warn("Cluster {cluster} has no key: its messages are not "
                              "authenticated and are accepted from loopback sources only",
                              cluster=cluster.name)
            self.membership.machine.start()
        self.log.info(
            "srp node {node:016x} started ({mode}) on {addresses} port {port} "
            "with {count} instances",
            node=self.membership.nodeId, addresses=", ".join(self.config.listen),
            port=self.config.port, count=len(self.config.instances),
            mode="standalone" if cluster is None else f"cluster {cluster.name}",
        )

    def stopService(self) -> Deferred[None]:
        """Leave (as a passive) or hand over (as the active), then release everything."""
        super().stopService()
        return self.membership.machine.stop()

    def _roleChanged(self, role: str, epoch: int) -> None:
        cluster = self.config.cluster
        command = None if cluster is None else (
            cluster.onActive if role == "active" else cluster.onPassive)
        if command is None:
            return
        environment = {"SRP_ROLE": role, "SRP_EPOCH": str(epoch),
                       "SRP_NODE": f"{self.membership.nodeId:016x}",
                       "SRP_CLUSTER": cluster.name if cluster else "",
                       "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
        done = getProcessValue("/bin/sh", ("-c", command), env=environment,
                               reactor=self.reactor)

        def report(code: int) -> None:
            log = self.log.info if code == 0 else self.log.warn
            log("Role command for {role} exited with {code}: {command}",
                role=role, code=code, command=command)

        done.addCallback(report)
