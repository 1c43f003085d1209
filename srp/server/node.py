"""The node service: the cluster role, the [MC-SQLR] responder and the registry together."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

from attrs import evolve
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IProtocolFactory
from twisted.internet.utils import getProcessValue
from twisted.logger import Logger

from srp.interfaces import NodeListening
from srp.records import InstanceInfo, instanceKey
from srp.server.checks import checkNamed
from srp.server.config import ClusterConfig, NodeConfig
from srp.server.health import Health, HealthMonitor, HealthSettings
from srp.server.hello import HelloFactory
from srp.server.limits import ReplyLimiter
from srp.server.membership import ClusterSettings, Membership
from srp.server.registry import Registry
from srp.server.responder import ResponderStats
from srp.server.roles.active import ClusterPorts
from srp.transports import DEFAULT_PREFERENCE, transportNamed
from srp.transports.splice import relayFactory


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
        self._served: dict[str, tuple[IProtocolFactory, tuple[str, ...]]] = {}
        self._listeners: list[IListeningPort] = []
        self._monitors: dict[str, HealthMonitor] = {}
        #: A standalone node's port, bound before it starts.
        self._bound: ClusterPorts | None = None
        for name, ((backendHost, backendPort), transports) in config.relays.items():
            backend = HostnameEndpoint(reactor, backendHost, backendPort)
            self.serve(name, relayFactory(backend, f"relay of {name}"), transports)
        self.membership = Membership(reactor, settings, self.registry, config.instances,
                                     self.stats, nodeId, onRole=self._roleChanged,
                                     access=config.access, limiter=self.limiter,
                                     bounds=config.bounds)

    def serve(self, instance: str, factory: IProtocolFactory,
              transports: Sequence[str] = DEFAULT_PREFERENCE) -> None:
        """
        Serve C{instance}'s connections with C{factory} on C{transports}.

        The node opens the listeners when it starts (an ephemeral port unless
        the instance's registration names one), behind srp's hello wrapper,
        and registers what they bound: C{tcp;PORT}, C{np;} and the pipe name
        (the registration's, or C{MSSQL$NAME\\srp-NODE\\sql\\query}),
        C{via;SERVER,NIC:PORT}, or the entry of a plugin's transport
        (L{srp.transports.transportNamed}).  Call it before the node starts.

        @raise ValueError: if the node has no such instance, or a transport is unknown.
        """
        if not any(r.key == instanceKey(instance) for r in self.config.instances):
            raise ValueError(f"this node has no instance {instance!r} to serve")
        for name in transports:
            transportNamed(name)
        self._served[instanceKey(instance)] = (factory, tuple(transports))

    def _openListeners(self) -> None:
        own = []
        node = NodeListening(self.config.listen[0], self.membership.nodeId,
                             self.config.pipeDirectory, self.config.viProvider)
        for registration in self.config.instances:
            served = self._served.get(registration.key)
            if served is None:
                own.append(registration)
                continue
            factory, transports = served
            wrapped = HelloFactory(factory, [registration.name], self.reactor)
            info = registration.info
            for name in transports:
                try:
                    port, info = transportNamed(name).listen(self.reactor, info, wrapped, node)
                except (CannotListenError, OSError, ValueError) as e:
                    self._closeListeners()
                    raise NodeStartError(f"instance {registration.name}: cannot listen on "
                                         f"{name}: {e}") from None
                self._listeners.append(port)
            own.append(evolve(registration, info=info))
        self.membership.setOwn(own)

    def _closeListeners(self) -> None:
        for port in self._listeners:
            port.stopListening()
        self._listeners = []

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
        if not self._listeners:
            self._openListeners()
        if self.config.cluster is not None:
            return
        try:
            self._bound = self.membership.listen()
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
            if self._bound is None:
                self.privilegedStartService()
            bound, self._bound = self._bound, None
            assert bound is not None
            self.membership.machine.portBound(bound)
        else:
            if not self._listeners:
                self._openListeners()
            if not cluster.key:
                self.log.warn("Cluster {cluster} has no key: its messages are not "
                              "authenticated and are accepted from loopback sources only",
                              cluster=cluster.name)
            self.membership.machine.start()
        self._watchHealth()
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
        stopped = self.membership.machine.stop()

        def closeListeners(result: object) -> object:
            self._closeListeners()
            return result

        stopped.addBoth(closeListeners)
        self._unwatchHealth()
        return stopped

    def _watchHealth(self) -> None:
        """Start checking the health of every instance this node registers."""
        for registration in self.membership.own:
            settings = self.config.health.get(registration.key, HealthSettings())
            if settings.check == "none":
                continue
            monitor = HealthMonitor(self.reactor, registration.name, checkNamed(settings.check),
                                    partial(self._checkTarget, registration.key), settings,
                                    self._healthChanged)
            self._monitors[registration.key] = monitor
            monitor.start()

    def _unwatchHealth(self) -> None:
        for monitor in self._monitors.values():
            monitor.stop()
        self._monitors = {}

    def _checkTarget(self, key: str) -> tuple[str, InstanceInfo]:
        """
        Where an instance's health is checked: a relayed instance at its
        backend, any other at this node's address (loopback for a wildcard).
        """
        relay = self.config.relays.get(key)
        registration = next(r for r in self.membership.own if r.key == key)
        if relay is not None:
            (host, port), _ = relay
            return host, InstanceInfo(registration.info.serverName, registration.name, tcp=port)
        host = self.config.listen[0]
        return {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host), registration.info

    def _healthChanged(self, name: str, health: Health) -> None:
        key = instanceKey(name)
        self.membership.healthSince[key] = health.since
        self.membership.updateOwn([evolve(r, down=not health.up) if r.key == key else r
                                   for r in self.membership.own])

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
