"""The node service: the cluster role, the [MC-SQLR] responder and the registry together."""

from __future__ import annotations

import signal
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from attrs import evolve
from twisted.application.service import Service
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IDelayedCall, IListeningPort, IProtocolFactory
from twisted.internet.utils import getProcessValue
from twisted.logger import Logger

from srp.interfaces import IHealthCheck, NodeListening
from srp.records import InstanceInfo, Registration, instanceKey
from srp.server.checks import checkNamed
from srp.server.config import ClusterConfig, ConfigError, NodeConfig, loadConfig
from srp.server.etcdmember import EtcdMembership
from srp.server.health import (
    LOOPBACK_FOR_WILDCARD,
    CheckSchedule,
    Health,
    HealthMonitor,
    HealthSettings,
)
from srp.server.hello import HelloFactory
from srp.server.limits import ReplyLimiter
from srp.server.membership import ClusterSettings, Membership
from srp.server.metrics import metricsSite
from srp.server.registry import Registry
from srp.server.responder import ResponderStats
from srp.server.roles.active import ClusterPorts
from srp.server.state import StateFileError, persistentNodeId
from srp.transports import DEFAULT_PREFERENCE, transportNamed
from srp.transports.splice import SpliceFactory, SpliceStats, relayFactory


class NodeStartError(Exception):
    """A node could not start; the message says why and what to do."""


def _cannotListen(e: CannotListenError) -> NodeStartError:
    """The error that says why the port cannot be bound, and what to check."""
    reason = e.socketError.strerror if e.socketError else str(e)
    hint = ""
    if "in use" in str(reason):
        hint = " (is another srp node or SQL Server Browser running there?)"
    return NodeStartError(f"cannot listen on {e.interface or '*'}:{e.port}/udp: {reason}{hint}")


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
                 nodeId: int | None = None, configPath: str | Path | None = None,
                 checks: Mapping[str, IHealthCheck] | None = None) -> None:
        """
        @param nodeId: the node's id; default: the configuration's
            C{node_id}, else the one kept in its C{state_file}, else random.
        @param checks: health checks by name, found before srp's own and the
            plugins': the checks of a program that embeds a node.
        @raise NodeStartError: if the state file cannot be read or written.
        """
        if reactor is None:
            from twisted.internet import reactor as _reactor

            reactor = _reactor
        self.config = config
        #: The file C{config} came from: SIGHUP reloads it (L{reloadFile}).
        self.configPath = configPath
        #: Health checks by name, found before srp's own and the plugins':
        #: checks of a program that embeds a node.
        self.checks = dict(checks or {})
        self.reactor = reactor
        self.registry = Registry()
        self.stats = ResponderStats()
        cluster = config.cluster or ClusterConfig()
        settings = ClusterSettings(
            listen=config.listen, addresses=cluster.addresses or config.listen,
            port=config.port, name=cluster.name, interval=cluster.interval,
            misses=cluster.misses, key=cluster.key, extensions=config.extensions,
            standalone=config.cluster is None,
        )
        self.limiter = ReplyLimiter(reactor, config.perSource, config.overall, config.reserve)
        self._served: dict[str, tuple[IProtocolFactory, tuple[str, ...]]] = {}
        self._listeners: dict[str, list[IListeningPort]] = {}
        self._monitors: dict[str, HealthMonitor] = {}
        #: Changes of health not yet applied, and the call that applies them.
        self._healthChanges: dict[str, Health] = {}
        self._healthFlush: IDelayedCall | None = None
        self._checkSchedule = CheckSchedule(reactor)
        self._listening = False
        self._previousHangup: Any = None
        #: A standalone node's port, bound before it starts.
        self._bound: ClusterPorts | None = None
        self._metricsPort: IListeningPort | None = None
        if nodeId is None:
            nodeId = config.nodeId
        if nodeId is None and config.stateFile is not None:
            try:
                nodeId = persistentNodeId(config.stateFile)
            except StateFileError as e:
                raise NodeStartError(str(e)) from None
        self._ready: list[Deferred[None]] = []
        self._answering = False
        for name, relay in config.relays.items():
            self._relay(name, relay)
        #: How the node shares its registrations: srp's UDP cluster (also a
        #: standalone node's core) or etcd.
        self.backend: Membership | EtcdMembership
        if cluster.etcd is not None:
            self.backend = EtcdMembership(reactor, settings, cluster.etcd, self.registry,
                                          config.instances, self.stats, nodeId,
                                          onRole=self._roleChanged, access=config.access,
                                          limiter=self.limiter, bounds=config.bounds)
        else:
            self.backend = Membership(reactor, settings, self.registry, config.instances,
                                      self.stats, nodeId, onRole=self._roleChanged,
                                      access=config.access, limiter=self.limiter,
                                      bounds=config.bounds)
        # The active (on etcd: the leader) checks the registrations by command
        # as it checks its own.
        byCommand = self.backend.commands if isinstance(self.backend, EtcdMembership) \
            else self.backend.leases
        byCommand.check = checkNamed(HealthSettings().check)
        byCommand.schedule = self._checkSchedule

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

    def _relay(self, name: str, relay: tuple[tuple[str, int], tuple[str, ...]]) -> None:
        (backendHost, backendPort), transports = relay
        backend = HostnameEndpoint(self.reactor, backendHost, backendPort)
        # The configuration checked the transports' names.
        self._served[name] = (relayFactory(backend, f"relay of {name}"), transports)

    def _openListeners(self) -> None:
        try:
            own = [self._listenFor(registration) for registration in self.config.instances]
        except NodeStartError:
            self._closeListeners()
            raise
        self._listening = True
        self.backend.setOwn(own)

    def _listenFor(self, registration: Registration) -> Registration:
        """
        Open the listeners of C{registration}'s instance if the node serves
        it; the registration with what they bound.

        @raise NodeStartError: if one cannot listen (none of its listeners stays open).
        """
        served = self._served.get(registration.key)
        if served is None:
            return registration
        factory, transports = served
        node = NodeListening(self.config.listen[0], self.backend.nodeId,
                             self.config.pipeDirectory, self.config.viProvider)
        wrapped = HelloFactory(factory, [registration.name], self.reactor)
        info = registration.info
        ports = self._listeners.setdefault(registration.key, [])
        for name in transports:
            try:
                port, info = transportNamed(name).listen(self.reactor, info, wrapped, node)
            except (CannotListenError, OSError, ValueError) as e:
                self._closeListeners(registration.key)
                raise NodeStartError(f"instance {registration.name}: cannot listen on "
                                     f"{name}: {e}") from None
            ports.append(port)
        return evolve(registration, info=info)

    def _closeListeners(self, key: str | None = None) -> Deferred[None]:
        """
        Close the listeners of the instance C{key}, or of every instance;
        fires once their sockets are closed.
        """
        closing = [maybeDeferred(port.stopListening)
                   for instance in ([key] if key is not None else list(self._listeners))
                   for port in self._listeners.pop(instance, [])]
        return gatherResults(closing).addCallback(lambda _: None)

    @property
    def membership(self) -> Membership:
        """The UDP cluster's membership core (a standalone node's too)."""
        assert isinstance(self.backend, Membership), "this node's cluster is on etcd"
        return self.backend

    @property
    def role(self) -> str:
        """The role this node plays now: probing, passive, active, ..."""
        return self.backend.role

    def relayStats(self) -> dict[str, SpliceStats]:
        """The counters of each relayed instance's connections, by instance name."""
        own = self.backend.ownByKey
        return {own[key].name if key in own else key: factory.stats
                for key, (factory, _) in self._served.items()
                if isinstance(factory, SpliceFactory)}

    def _serveMetrics(self) -> None:
        """Listen for Prometheus' scrapes, if the configuration says where."""
        if self.config.metrics is None or self._metricsPort is not None:
            return
        host, port = self.config.metrics
        try:
            self._metricsPort = self.reactor.listenTCP(port, metricsSite(self), interface=host)
        except CannotListenError as e:
            reason = e.socketError.strerror if e.socketError else str(e)
            raise NodeStartError(f"cannot serve metrics on {host}:{port}/tcp: {reason}") from None

    def privilegedStartService(self) -> None:
        """
        A standalone node binds its port now (a clustered one when it becomes
        active), and the metrics port if it has one.

        @raise NodeStartError: if a port is in use or cannot be bound.
        """
        super().privilegedStartService()
        self._serveMetrics()
        if not self._listening:
            self._openListeners()
        if self.config.cluster is not None:
            return
        assert isinstance(self.backend, Membership)
        try:
            self._bound = self.backend.listen()
        except CannotListenError as e:
            raise _cannotListen(e) from None

    def whenReady(self) -> Deferred[None]:
        """
        Fires once the node answers: a standalone node when it starts, a
        clustered one when it first becomes active or passive (joined).
        """
        ready: Deferred[None] = Deferred()
        if self._answering:
            ready.callback(None)
        else:
            self._ready.append(ready)
        return ready

    def _warnIfIdle(self) -> None:
        """One warning for a node with no instances, one for each that lists no transport."""
        if not self.config.instances:
            self.log.warn("This node has no [[instances]]: it registers nothing" + (
                "" if self.config.cluster else " and answers no request for an instance"))
        for registration in self.backend.own:
            info = registration.info
            if info.tcp is None and info.np is None and info.via is None and not info.other:
                self.log.warn("Instance {instance} has no tcp, np or via: clients are told "
                              "its name but no way to reach it", instance=registration.name)

    def startService(self) -> None:
        """Start playing the node's role."""
        super().startService()
        self.backend.startedAt = self.reactor.seconds()
        self._warnIfIdle()
        cluster = self.config.cluster
        if cluster is None:
            if self._bound is None:
                self.privilegedStartService()
            bound, self._bound = self._bound, None
            assert bound is not None and isinstance(self.backend, Membership)
            self.backend.machine.portBound(bound)
        else:
            self._serveMetrics()
            if not self._listening:
                self._openListeners()
            if not cluster.key:
                self.log.warn("Cluster {cluster} has no key: its messages are not "
                              "authenticated and are accepted from loopback sources only",
                              cluster=cluster.name)
            try:
                self.backend.start()
            except CannotListenError as e:
                raise _cannotListen(e) from None
        self._watchHealth()
        if self.configPath is not None:
            self._previousHangup = signal.signal(signal.SIGHUP, self._hangup)
        self.log.info(
            "srp node {node:016x} started ({mode}) on {addresses} port {port} "
            "with {count} instances",
            node=self.backend.nodeId, addresses=", ".join(self.config.listen),
            port=self.config.port, count=len(self.config.instances),
            mode="standalone" if cluster is None else f"cluster {cluster.name}"
            + (" on etcd" if cluster.etcd is not None else ""),
        )

    def stopService(self) -> Deferred[None]:
        """Leave (as a passive) or hand over (as the active), then release everything."""
        super().stopService()
        stopped = self.backend.stop()

        def closeListeners(result: object) -> Deferred[object]:
            # Wait for the sockets to close: a reactor that is shutting down
            # runs no more timers after this, and a listener whose close was
            # scheduled but not done would accept connections nobody serves
            # until the process exits.
            return self._closeListeners().addBoth(lambda _: result)

        stopped.addBoth(closeListeners)
        if self._metricsPort is not None:
            metricsClosed = maybeDeferred(self._metricsPort.stopListening)
            stopped.addBoth(lambda result: metricsClosed.addBoth(lambda _: result))
            self._metricsPort = None
        self._unwatchHealth()
        if self._previousHangup is not None:
            signal.signal(signal.SIGHUP, self._previousHangup)
            self._previousHangup = None
        return stopped

    def _hangup(self, signum: int, frame: Any) -> None:
        # In a signal handler: do the work in the reactor's thread, soon.
        self.reactor.callFromThread(self.reloadFile)

    def reloadFile(self) -> bool:
        """
        Read the configuration file again and apply it (L{reload}): what
        SIGHUP does.  A file that fails to load changes nothing and is one
        log line.

        @return: whether the file loaded.
        """
        assert self.configPath is not None
        try:
            config = loadConfig(self.configPath)
        except ConfigError as e:
            self.backend.counters["reloads_failed"] += 1
            self.log.error("Reload failed, the running configuration stays: {error}",
                           error=str(e))
            return False
        self.reload(config)
        return True

    def reload(self, config: NodeConfig) -> None:
        """
        Apply C{config} to the running node, with no role change and no
        request unanswered: instances added, removed or changed (ports,
        priorities, relays, health checks) and the reply budgets.  What needs
        a restart (listen addresses, port, the cluster, access lists) is
        kept as it is, with a log line saying so.
        """
        running = self.config
        for setting, was, now in [
                ("listen", running.listen, config.listen), ("port", running.port, config.port),
                ("[cluster]", running.cluster, config.cluster),
                ("extensions", running.extensions, config.extensions),
                ("[access]", running.access, config.access),
                ("pipe_directory", running.pipeDirectory, config.pipeDirectory),
                ("vi_provider", running.viProvider, config.viProvider),
                ("node_id", running.nodeId, config.nodeId),
                ("state_file", running.stateFile, config.stateFile),
                # --metrics overrides the file: a file without [metrics] changes nothing.
                ("[metrics]", running.metrics, config.metrics or running.metrics)]:
            if was != now:
                self.log.warn("Reload: {setting} changed; restart the node to apply it",
                              setting=setting)
        self.limiter.perSource = config.perSource
        self.limiter.overall = config.overall
        self.limiter.reserve = config.reserve
        self.backend.bounds = config.bounds
        before = {r.key: r for r in running.instances}
        after = {r.key: r for r in config.instances}
        own = dict(self.backend.ownByKey)
        changes = {"added": 0, "removed": 0, "changed": 0}
        for key in before.keys() - after.keys():
            changes["removed"] += 1
            self._forgetInstance(key)
            del own[key]
        applied = []
        for key, registration in after.items():
            if key in before and (before[key], running.relays.get(key),
                                  running.health.get(key)) == (
                    registration, config.relays.get(key), config.health.get(key)):
                applied.append(registration)
                continue
            changes["changed" if key in before else "added"] += 1
            if key in before:
                self._forgetInstance(key, keepServed=key not in running.relays)
            if key in config.relays:
                self._relay(key, config.relays[key])
            try:
                own[key] = self._listenFor(registration)
            except NodeStartError as e:
                self.log.error("Reload: {error}; the instance is not registered", error=str(e))
                own.pop(key, None)
                continue
            applied.append(registration)
        self.config = evolve(config, listen=running.listen, port=running.port,
                             cluster=running.cluster, extensions=running.extensions,
                             access=running.access, pipeDirectory=running.pipeDirectory,
                             viProvider=running.viProvider, metrics=running.metrics,
                             nodeId=running.nodeId, stateFile=running.stateFile,
                             instances=tuple(applied))
        self.backend.updateOwn([own[r.key] for r in applied if r.key in own])
        if self.running:
            for registration in self.backend.own:
                if registration.key not in self._monitors:
                    self._watch(registration)
        self.backend.counters["reloads"] += 1
        self.log.info("Reloaded {path}: {added} instances added, {removed} removed, "
                      "{changed} changed", path=str(self.configPath or "the configuration"),
                      **changes)

    def _forgetInstance(self, key: str, keepServed: bool = False) -> None:
        """Stop serving and checking the instance C{key}."""
        self._closeListeners(key)
        monitor = self._monitors.pop(key, None)
        if monitor is not None:
            monitor.stop()
        self.backend.healthSince.pop(key, None)
        self._healthChanges.pop(key, None)
        if not keepServed:
            self._served.pop(key, None)

    def _watchHealth(self) -> None:
        """Start checking the health of every instance this node registers."""
        for registration in self.backend.own:
            self._watch(registration)

    def _watch(self, registration: Registration) -> None:
        settings = self.config.health.get(registration.key, HealthSettings())
        if settings.check == "none":
            return
        check = self.checks.get(settings.check) or checkNamed(settings.check)
        monitor = HealthMonitor(self.reactor, registration.name, check,
                                partial(self._checkTarget, registration.key), settings,
                                self._healthChanged, self.backend.counters,
                                self._checkSchedule)
        self._monitors[registration.key] = monitor
        monitor.start()

    def _unwatchHealth(self) -> None:
        for monitor in self._monitors.values():
            monitor.stop()
        self._monitors = {}
        if self._healthFlush is not None:
            self._healthFlush.cancel()
            self._healthFlush = None
        self._healthChanges = {}

    def _checkTarget(self, key: str) -> tuple[str, InstanceInfo]:
        """
        Where an instance's health is checked: a relayed instance at its
        backend, any other at this node's address (loopback for a wildcard).
        """
        relay = self.config.relays.get(key)
        registration = self.backend.ownByKey[key]
        if relay is not None:
            (host, port), _ = relay
            return host, InstanceInfo(registration.info.serverName, registration.name, tcp=port)
        host = self.config.listen[0]
        return LOOPBACK_FOR_WILDCARD.get(host, host), registration.info

    def _healthChanged(self, name: str, health: Health) -> None:
        # Every change of one reactor turn goes to the cluster together at
        # its end: when a host's servers all die at once, one update, not
        # one per instance (each of which would re-register them all).
        if not self._healthChanges:
            self._healthFlush = self.reactor.callLater(0, self._applyHealth)
        self._healthChanges[instanceKey(name)] = health

    def _applyHealth(self) -> None:
        changes, self._healthChanges = self._healthChanges, {}
        self._healthFlush = None
        own = self.backend.ownByKey
        changes = {key: health for key, health in changes.items() if key in own}
        for key, health in changes.items():
            self.backend.healthSince[key] = health.since
        if changes:
            self.backend.updateOwn([
                evolve(r, down=not changes[r.key].up) if r.key in changes else r
                for r in self.backend.own])

    def _roleChanged(self, role: str, epoch: int) -> None:
        if role in ("standalone", "active", "passive") and not self._answering:
            self._answering = True
            ready, self._ready = self._ready, []
            for waiting in ready:
                waiting.callback(None)
        cluster = self.config.cluster
        command = None if cluster is None else (
            cluster.onActive if role == "active" else cluster.onPassive)
        if command is None:
            return
        environment = {"SRP_ROLE": role, "SRP_EPOCH": str(epoch),
                       "SRP_NODE": f"{self.backend.nodeId:016x}",
                       "SRP_CLUSTER": cluster.name if cluster else "",
                       "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
        done = getProcessValue("/bin/sh", ("-c", command), env=environment,
                               reactor=self.reactor)

        def report(code: int) -> None:
            log = self.log.info if code == 0 else self.log.warn
            log("Role command for {role} exited with {code}: {command}",
                role=role, code=code, command=command)

        done.addCallback(report)
