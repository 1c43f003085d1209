"""
What each C{srp} command does.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from twisted.application.service import IService
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred, succeed
from twisted.internet.error import CannotListenError
from twisted.logger import globalLogBeginner

from srp.cli.options import (
    BrowseOptions,
    EnumerateOptions,
    ProxyOptions,
    RegisterOptions,
    ResolveOptions,
    ServeOptions,
    StatusOptions,
    UnregisterOptions,
    keyFrom,
)
from srp.cli.output import (
    CommandError,
    duration,
    formatTable,
    healthOf,
    printAnswers,
    printResolution,
)
from srp.client.browser import NoAnswer, QueryFailed, browse, query
from srp.client.cluster import fetchStatus
from srp.client.proxy import proxyServices
from srp.client.registration import LeaseKeeper, Refused, request
from srp.client.resolver import ClusterResolver, ResolveError
from srp.logs import nodeObserver
from srp.notify import notify
from srp.server.config import ClusterConfig, ConfigError, loadConfig, withMetrics
from srp.server.node import NodeService, NodeStartError
from srp.wire import (
    BroadcastRequest,
    DACRequest,
    DACResponse,
    EnumerateRequest,
)
from srp.wire.cluster import Unregister


async def resolveCommand(reactor: Any, options: ResolveOptions, out: TextIO) -> None:
    host, instance = options["host"], options["instance"]
    if options["dac"]:
        try:
            answer = await query(reactor, host, DACRequest(instance), port=options["port"],
                                 timeout=options["timeout"], addresses=options.addresses())
        except NoAnswer as e:
            raise CommandError(
                f"{e} for instance {instance!r}: the instance may be unknown or hidden, have "
                "no DAC port, or no SQL Server Browser or srp node listens there") from None
        except QueryFailed as e:
            raise CommandError(str(e)) from None
        assert isinstance(answer.response, DACResponse)
        port = answer.response.port
        out.write(json.dumps({"instance": instance, "dac_port": port}) + "\n" if options["json"]
                  else formatTable(("INSTANCE", "DAC PORT"), [(instance, str(port))]) + "\n")
        return
    resolver = ClusterResolver(reactor, port=options["port"], timeout=options["timeout"],
                               key=options.key(), clusterName=options["cluster"])
    try:
        resolution = await resolver.resolve(host, instance, options.addresses())
    except ResolveError as e:
        raise CommandError(str(e)) from None
    printResolution(resolution, options["json"], out)



async def enumerateCommand(reactor: Any, options: EnumerateOptions, out: TextIO) -> None:
    try:
        answer = await query(reactor, options["host"], EnumerateRequest(),
                             port=options["port"], timeout=options["timeout"],
                             addresses=options.addresses())
    except NoAnswer as e:
        raise CommandError(
            f"{e}: no SQL Server Browser or srp node listens there, "
            "or it has no visible instances"
        ) from None
    except QueryFailed as e:
        raise CommandError(str(e)) from None
    printAnswers([answer], options["json"], out)


async def browseCommand(reactor: Any, options: BrowseOptions, out: TextIO) -> None:
    try:
        answers = await browse(reactor, BroadcastRequest(), address=options["address"],
                               port=options["port"], window=options["timeout"])
    except QueryFailed as e:
        raise CommandError(str(e)) from None
    if not answers:
        raise CommandError(
            f"no answer to a broadcast on {options['address']} port {options['port']} "
            f"within {options['timeout']:g} s"
        )
    printAnswers(answers, options["json"], out, withSource=True)


async def statusCommand(reactor: Any, options: StatusOptions, out: TextIO) -> None:
    try:
        status = await fetchStatus(reactor, options["host"], port=options["port"],
                                   cluster=options["cluster"], key=options.key(),
                                   timeout=options["timeout"], addresses=options.addresses())
    except NoAnswer as e:
        raise CommandError(f"{e}: no srp node listens there, or the cluster name or key "
                           "differ") from None
    except QueryFailed as e:
        raise CommandError(str(e)) from None
    if options["json"]:
        out.write(json.dumps(status, indent=2) + "\n")
        return
    out.write(formatTable(("NODE", "CLUSTER", "ROLE", "EPOCH", "ACTIVE"), [(
        status["node"], status["cluster"], status["role"], str(status["epoch"]),
        status["active"] or "-")]) + "\n")
    if "version" in status:
        started = status["started"]
        out.write("\n" + formatTable(("VERSION", "STARTED", "UPTIME"), [(
            status["version"], "-" if started is None else time.strftime(
                "%Y-%m-%d %H:%M:%S", time.localtime(started)),
            "-" if status["uptime"] is None else duration(status["uptime"]))]) + "\n")
    if status.get("backend") == "etcd":
        stale = f"yes, {duration(status['stale_seconds'])}" if status["stale"] else "no"
        out.write("\n" + formatTable(
            ("ETCD", "REVISION", "LEADER", "FENCING TOKEN", "STALE"),
            [(status["etcd"], str(status["revision"]), status["leader"] or "-",
              str(status["fencing_token"] or "-"), stale)]) + "\n")
        if status["etcd_error"]:
            out.write(f"etcd: {status['etcd_error']}\n")
    if status["passives"]:
        out.write("\nPassives (in line to take over):\n" + formatTable(
            ("NODE", "ADDRESS"), [(p["node"], p["address"]) for p in status["passives"]]) + "\n")
    if status["registrations"]:
        out.write("\nRegistrations:\n" + formatTable(
            ("INSTANCE", "NODE", "PRIORITY", "TCP", "HIDDEN", "HEALTH"),
            [(r["instance"], r["node"], str(r["priority"]), str(r["tcp"] or "-"),
              "yes" if r["hidden"] else "no", healthOf(r))
             for r in status["registrations"]]) + "\n")
    out.write("\nCounters:\n" + formatTable(
        ("COUNTER", "VALUE"), sorted((k, str(v)) for k, v in status["counters"].items()))
        + "\n")


async def leaseCommand(reactor: Any, options: UnregisterOptions, out: TextIO, err: TextIO) -> None:
    cluster = options.cluster()
    registering = isinstance(options, RegisterOptions)
    keeper = LeaseKeeper(reactor, cluster, options["registration"], options["ttl"]
                         ) if registering else None
    try:
        if keeper is not None:
            await keeper.start()
        else:
            await request(reactor, cluster, Unregister(options["instance"],
                                                       options["priority"]))
    except NoAnswer as e:
        raise CommandError(f"{e} — wrong cluster key? (or cluster name, or no srp node "
                           "listens there)") from None
    except QueryFailed as e:
        raise CommandError(str(e)) from None
    result = {"instance": options["instance"], "priority": options["priority"],
              "result": "registered" if registering else "unregistered"}
    if keeper is not None:
        info = keeper.registration.info
        result |= {"tcp": info.tcp, "np": info.np, "ttl": options["ttl"] or None}
    if options["json"]:
        out.write(json.dumps(result) + "\n")
    else:
        out.write(formatTable([k.upper() for k in result],
                              [["-" if v is None else str(v) for v in result.values()]])
                  + "\n")
    if keeper is not None and options["keep"]:
        out.flush()
        _logPlainly(err)
        reactor.addSystemEventTrigger("before", "shutdown",
                                      lambda: Deferred.fromCoroutine(_unregister(keeper)))
        await Deferred()  # until the reactor stops (SIGINT, SIGTERM)


async def _unregister(keeper: LeaseKeeper) -> None:
    try:
        await keeper.stop()
    except (QueryFailed, Refused) as e:
        keeper.log.warn("Could not unregister {name}: {error}",
                        name=keeper.registration.name, error=e)


def _startLogging(options: ServeOptions, err: TextIO) -> None:
    out = err
    if options["logfile"] is not None:
        try:
            out = open(options["logfile"], "a", buffering=1, encoding="utf-8")  # noqa: SIM115
        except OSError as e:
            raise CommandError(f"cannot open the log file {options['logfile']}: "
                               f"{e.strerror}") from None
    observer = nodeObserver(out, options["log-format"], options["log-level"])
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)



async def _runUntilStopped(reactor: Any, services: Sequence[IService],
                           startLogging: Callable[[], None],
                           ready: Callable[[], Deferred[None]] | None = None) -> None:
    """
    Start C{services} (a failure to bind is one line), start logging, and run
    until stopped, telling systemd (C{Type=notify}) READY=1 once C{ready}
    fires (at once without it) and STOPPING=1 when stopping.
    """
    try:
        for service in services:
            service.privilegedStartService()
    except (NodeStartError, CannotListenError) as e:
        raise CommandError(str(e)) from None
    startLogging()
    for service in services:
        service.startService()
    (ready() if ready is not None else succeed(None)).addCallback(
        lambda _: notify("READY=1"))

    def stop() -> Deferred[Any]:
        notify("STOPPING=1")
        return DeferredList([maybeDeferred(service.stopService) for service in services])

    reactor.addSystemEventTrigger("before", "shutdown", stop)
    await Deferred()  # until the reactor stops (SIGINT, SIGTERM)


def _logPlainly(err: TextIO) -> None:
    """Log as text, at level info and above, to C{err}."""
    globalLogBeginner.beginLoggingTo([nodeObserver(err)], redirectStandardIO=False)


async def serveCommand(reactor: Any, options: ServeOptions, err: TextIO) -> None:
    try:
        config = withMetrics(loadConfig(options["config"]), options["metrics"])
    except ConfigError as e:
        raise CommandError(str(e)) from None
    cluster = config.cluster or ClusterConfig()
    try:
        proxies = proxyServices(reactor, config.proxies, config.port, cluster.name, cluster.key)
    except ValueError as e:
        raise CommandError(str(e)) from None
    try:
        node = NodeService(config, reactor, configPath=options["config"])
    except NodeStartError as e:
        raise CommandError(str(e)) from None
    await _runUntilStopped(reactor, [node, proxies], lambda: _startLogging(options, err),
                           node.whenReady)


async def proxyCommand(reactor: Any, options: ProxyOptions, err: TextIO) -> None:
    try:
        proxies = proxyServices(reactor, options["routes"], options["port"], options["cluster"],
                                keyFrom(options["key-file"]))
    except ValueError as e:
        raise CommandError(str(e)) from None
    await _runUntilStopped(reactor, [proxies], lambda: _logPlainly(err))
