"""
The C{srp} command: run a node, and query any [MC-SQLR] server.

Every query command prints an aligned table by default and JSON with
C{--json}; failures print one line on stderr and exit non-zero.
"""

from __future__ import annotations

import getopt
import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

from twisted.application.service import IService
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.error import CannotListenError
from twisted.internet.task import react
from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogBeginner,
    textFileLogObserver,
)
from twisted.python import usage

from srp.client.browser import Answer, NoAnswer, QueryFailed, browse, query
from srp.client.cluster import fetchStatus
from srp.client.proxy import proxyServices
from srp.client.resolver import ClusterResolver, Resolution, ResolveError
from srp.clusterkey import BadKey, environmentKey, loadKey
from srp.options import CommandOptions, NodeOptions
from srp.records import DEFAULT_MAX_CONNECTIONS, proxyRoute
from srp.server.config import ClusterConfig, ConfigError, loadConfig
from srp.server.node import NodeService, NodeStartError
from srp.wire import (
    BroadcastRequest,
    DACRequest,
    DACResponse,
    EnumerateRequest,
    InstanceInfo,
    InstanceRequest,
    InstancesResponse,
    WireError,
)
from srp.wire.mcsqlr import BROWSER_PORT


class CommandError(Exception):
    """A command failed; the message is printed as-is on stderr."""


def formatTable(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Rows under headers, each column as wide as its widest cell."""
    widths = [max(len(str(c)) for c in column) for column in zip(headers, *rows, strict=True)]
    lines = [headers, *rows]
    return "\n".join(
        "  ".join(str(cell).ljust(width) for cell, width in zip(line, widths, strict=True))
        .rstrip() for line in lines
    )


def instanceJSON(info: InstanceInfo) -> dict[str, Any]:
    """An instance as a JSON object."""
    return {
        "server": info.serverName,
        "instance": info.instanceName,
        "version": info.version,
        "clustered": info.isClustered,
        "tcp": info.tcp,
        "np": info.np,
        "via": None if info.via is None else {
            "netbios": info.via.netbios,
            "addresses": [{"nic": a.nic, "port": a.port} for a in info.via.addresses],
        },
        "other": dict(info.other),
    }


_HEADERS = ("SERVER", "INSTANCE", "VERSION", "CLUSTERED", "TCP", "NP", "VIA")


def _row(info: InstanceInfo) -> list[str]:
    return [
        info.serverName, info.instanceName, info.version,
        "yes" if info.isClustered else "no",
        "-" if info.tcp is None else str(info.tcp),
        info.np or "-",
        "-" if info.via is None else info.via.encode(),
    ]


def printAnswers(answers: Sequence[Answer], asJSON: bool, out: TextIO,
                 withSource: bool = False) -> None:
    """Print the instances of C{answers} as a table or as JSON."""
    found = [
        (answer.source, info)
        for answer in answers
        if isinstance(answer.response, InstancesResponse)
        for info in answer.response.instances
    ]
    if asJSON:
        objects = [
            ({"source": source[0]} if withSource else {}) | instanceJSON(info)
            for source, info in found
        ]
        out.write(json.dumps(objects, indent=2) + "\n")
        return
    headers = (("SOURCE",) if withSource else ()) + _HEADERS
    rows = [([source[0]] if withSource else []) + _row(info) for source, info in found]
    out.write(formatTable(headers, rows) + "\n")


def splitTarget(target: str) -> tuple[str, str]:
    """
    Split C{HOST\\INSTANCE} (or C{HOST/INSTANCE}) into host and instance.

    @raise usage.UsageError: if either part is missing.
    """
    cut = max(target.rfind("\\"), target.rfind("/"))
    host, instance = target[:cut], target[cut + 1 :]
    if cut < 0 or not host or not instance:
        raise usage.UsageError(f"{target!r} is not HOST\\INSTANCE")
    return host.strip("[]"), instance


class _AnyOrderOptions(CommandOptions):
    """Options that may come before or after the arguments."""

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        if options is None:
            options = sys.argv[1:]
        try:
            found, arguments = getopt.gnu_getopt(list(options), self.shortOpt, self.longOpt)
        except getopt.GetoptError as e:
            raise usage.UsageError(str(e)) from None
        ordered = [f"{flag}={value}" if flag.startswith("--") and value else flag + value
                   for flag, value in found]
        super().parseOptions([*ordered, "--", *arguments])


def _keyFrom(path: str | None) -> bytes:
    """The cluster key from the file C{path}, else $SRP_CLUSTER_KEY (empty if neither)."""
    try:
        return loadKey(path) if path else environmentKey(os.environ)
    except BadKey as e:
        raise CommandError(str(e)) from None


def _commaList(value: str | None) -> list[str]:
    return [a.strip() for a in (value or "").split(",") if a.strip()]


class _QueryOptions(_AnyOrderOptions):
    """Options of the query commands, which may come before or after the arguments."""

    optFlags: list[list[str | None]] = [["json", "j", "Print JSON instead of a table."]]
    optParameters = [
        ["port", "p", BROWSER_PORT, "UDP port of the SQL Server Browser.", int],
        ["timeout", "t", 2.0, "Seconds to wait for an answer.", float],
    ]

    def addresses(self) -> list[str]:
        """The --cluster-addresses, if given."""
        return _commaList(self.get("cluster-addresses"))


class _ClusterOptions(_QueryOptions):
    """Options of the commands that may speak srp's extension messages to a cluster."""

    optParameters = [
        ["cluster-addresses", "a", None,
         "Comma-separated addresses of the cluster, all asked at once."],
        ["cluster", "c", "srp", "The cluster name (for srp's extension messages)."],
        ["key-file", "k", None, "File holding the cluster key (mode 600); default "
         "$SRP_CLUSTER_KEY."],
    ]

    def key(self) -> bytes:
        """The cluster key from --key-file or $SRP_CLUSTER_KEY (empty if neither)."""
        return _keyFrom(self["key-file"])


class ResolveOptions(_ClusterOptions):
    """Options of C{srp resolve}."""

    synopsis = "Usage: srp resolve [options] HOST\\INSTANCE"
    longdesc = (
        "Resolve INSTANCE on HOST (a server, or a cluster: every address of the name, or "
        "--cluster-addresses, is asked at once).  An srp cluster lists every live place of "
        "the instance, primary first, with the host it is on; a SQL Server Browser gives "
        "its port map (CLNT_UCAST_INST).  With --dac, ask for the dedicated administrator "
        "connection port instead (CLNT_UCAST_DAC)."
    )
    examples = (
        "srp resolve 'db1\\SALES'",
        "srp resolve --json 127.0.0.2/SALES",
        "srp resolve --cluster-addresses 10.0.0.1,10.0.0.2 --key-file k 'sales-cluster\\SALES'",
        "srp resolve --dac 'db1\\SALES'",
    )
    optFlags = [["dac", None, "Ask for the DAC port instead of the port map."]]

    def parseArgs(self, target: str) -> None:  # type: ignore[override]
        self["host"], self["instance"] = splitTarget(target)
        try:
            InstanceRequest(self["instance"])
        except WireError as e:
            raise usage.UsageError(str(e)) from None


class EnumerateOptions(_ClusterOptions):
    """Options of C{srp enumerate}."""

    synopsis = "Usage: srp enumerate [options] HOST"
    longdesc = ("List every instance HOST's SQL Server Browser announces (CLNT_UCAST_EX); "
                "with --cluster-addresses, the first of them to answer.")
    examples = ("srp enumerate db1", "srp enumerate --json 127.0.0.2",
                "srp enumerate --cluster-addresses 10.0.0.1,10.0.0.2 sales-cluster")

    def parseArgs(self, host: str) -> None:  # type: ignore[override]
        self["host"] = host.strip("[]")


class BrowseOptions(_QueryOptions):
    """Options of C{srp browse}."""

    synopsis = "Usage: srp browse [options]"
    longdesc = (
        "Broadcast CLNT_BCAST_EX on the local network and list every instance that "
        "answers within the window (--timeout), like 'sqlcmd -L'."
    )
    examples = ("srp browse", "srp browse --address 192.0.2.255 --timeout 5 --json")
    optParameters = [
        ["address", "a", "255.255.255.255", "Broadcast (or unicast) address to ask."],
    ]


class StatusOptions(_ClusterOptions):
    """Options of C{srp status}."""

    synopsis = "Usage: srp status [options] HOST"
    longdesc = (
        "Show the role, epoch, passive list, registrations and counters of the srp node "
        "at HOST (the active, when HOST is a cluster address).  The query is sealed with "
        "the cluster key from --key-file or $SRP_CLUSTER_KEY; a cluster without a key "
        "answers loopback only."
    )
    examples = (
        "srp status 127.0.0.1",
        "srp status --cluster sales --key-file /etc/srp/cluster.key --json db1",
    )
    def parseArgs(self, host: str) -> None:  # type: ignore[override]
        self["host"] = host.strip("[]")


class ServeOptions(NodeOptions):
    """Options of C{srp serve}."""

    synopsis = "Usage: srp serve --config node.toml"
    longdesc = (
        "Run an srp node in the foreground until SIGINT or SIGTERM, logging to stderr. "
        "The configuration file is described in the operations guide."
    )
    examples = ("srp serve --config examples/node.toml",)


class ProxyOptions(_AnyOrderOptions):
    """Options of C{srp proxy}."""

    synopsis = ("Usage: srp proxy [options] --listen ADDRESS:PORT CLUSTER/INSTANCE "
                "[--listen ADDRESS:PORT CLUSTER/INSTANCE ...]")
    longdesc = (
        "Accept plain TCP connections on each --listen address and splice each one to the "
        "current live place of the CLUSTER/INSTANCE that follows it, resolved through the "
        "cluster (and cached), over the best transport the instance offers.  Point any "
        "driver (sqlcmd, JDBC, ODBC, FreeTDS) at the listen address: after a fail-over its "
        "next connection goes to the new place; an open connection whose server dies is "
        "closed, and the driver or its pool reconnects.  Runs until SIGINT or SIGTERM."
    )
    examples = (
        "srp proxy --listen 127.0.0.1:1433 db1/SALES",
        "srp proxy --listen 127.0.0.1:1433 db1/SALES --listen 127.0.0.1:1434 db1/HR",
        "srp proxy --listen '[::1]:1433' 10.0.0.1/SALES --cluster sales --key-file k "
        "--verify tds",
    )
    optParameters = [
        ["cluster-addresses", "a", None,
         "Comma-separated addresses of the cluster, all asked at once."],
        ["cluster", "c", "srp", "The cluster name (for srp's extended resolve)."],
        ["key-file", "k", None, "File holding the cluster key (mode 600); default "
         "$SRP_CLUSTER_KEY."],
        ["port", "p", BROWSER_PORT, "UDP port of the cluster.", int],
        ["timeout", "t", 2.0, "Seconds for each connection attempt to a place.", float],
        ["prefer", None, "via,tcp,np", "Comma-separated transports, in order of preference."],
        ["verify", None, "none", "Confirm the instance reached: none, tds or hello."],
        ["max-connections", "m", DEFAULT_MAX_CONNECTIONS,
         "Client connections open at once, per listener; more are closed.", int],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []

    def opt_listen(self, address: str) -> None:
        """ADDRESS:PORT to listen on, for the CLUSTER/INSTANCE that follows (repeatable)."""
        self["listen"].append(address)

    opt_l = opt_listen

    def parseArgs(self, *targets: str) -> None:
        listens = self["listen"]
        if not listens or len(listens) != len(targets):
            raise usage.UsageError(
                f"give each --listen ADDRESS:PORT its CLUSTER/INSTANCE ({len(listens)} "
                f"--listen, {len(targets)} targets)")
        try:
            self["routes"] = [proxyRoute(
                listen, target, prefer=tuple(_commaList(self["prefer"])),
                verify=self["verify"], timeout=self["timeout"],
                maxConnections=self["max-connections"],
                addresses=tuple(_commaList(self["cluster-addresses"])))
                for listen, target in zip(listens, targets, strict=True)]
        except WireError as e:
            raise usage.UsageError(str(e)) from None


class Options(CommandOptions):
    """Options of the C{srp} command."""

    synopsis = "Usage: srp COMMAND [options]"
    longdesc = "srp: a clustered SQL Server Browser ([MC-SQLR]) and its client tools."
    examples = (
        "srp serve --config node.toml",
        "srp resolve 'db1\\SALES'",
        "srp enumerate db1 --json",
        "srp browse",
        "srp proxy --listen 127.0.0.1:1433 db1/SALES",
        "srp COMMAND --help",
    )
    subCommands = [
        ["serve", None, ServeOptions, "Run a node that answers on UDP 1434."],
        ["resolve", None, ResolveOptions, "Show the port map of HOST\\INSTANCE."],
        ["enumerate", None, EnumerateOptions, "List the instances of HOST."],
        ["browse", None, BrowseOptions, "Broadcast and list the instances that answer."],
        ["status", None, StatusOptions, "Show the role and state of an srp node."],
        ["proxy", None, ProxyOptions, "Splice local TCP connections to an instance's "
         "live place."],
    ]

    def postOptions(self) -> None:
        if self.subCommand is None:
            raise usage.UsageError(
                "a command is required: serve, resolve, enumerate, browse, status or proxy")


async def _resolve(reactor: Any, options: ResolveOptions, out: TextIO) -> None:
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


def printResolution(resolution: Resolution, asJSON: bool, out: TextIO) -> None:
    """Print the places of a resolution, best first, as a table or as JSON."""
    if asJSON:
        out.write(json.dumps([
            {"host": c.host, "priority": c.priority,
             "node": f"{c.nodeId:016x}" if resolution.extended else None,
             "down": c.down if resolution.extended else None}
            | instanceJSON(c.info) for c in resolution.candidates], indent=2) + "\n")
        return
    rows = [[c.host, str(c.priority), *_row(c.info)] for c in resolution.candidates]
    out.write(formatTable(("HOST", "PRIORITY", *_HEADERS), rows) + "\n")


async def _enumerate(reactor: Any, options: EnumerateOptions, out: TextIO) -> None:
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


async def _browse(reactor: Any, options: BrowseOptions, out: TextIO) -> None:
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


async def _status(reactor: Any, options: StatusOptions, out: TextIO) -> None:
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
    if status["passives"]:
        out.write("\nPassives (in line to take over):\n" + formatTable(
            ("NODE", "ADDRESS"), [(p["node"], p["address"]) for p in status["passives"]]) + "\n")
    if status["registrations"]:
        out.write("\nRegistrations:\n" + formatTable(
            ("INSTANCE", "NODE", "PRIORITY", "TCP", "HIDDEN", "HEALTH"),
            [(r["instance"], r["node"], str(r["priority"]), str(r["tcp"] or "-"),
              "yes" if r["hidden"] else "no", _health(r))
             for r in status["registrations"]]) + "\n")
    out.write("\nCounters:\n" + formatTable(
        ("COUNTER", "VALUE"), sorted((k, str(v)) for k, v in status["counters"].items()))
        + "\n")


def _startLogging(err: TextIO) -> None:
    observer = FilteringLogObserver(
        textFileLogObserver(err), [LogLevelFilterPredicate(defaultLogLevel=LogLevel.info)]
    )
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)


def _health(registration: dict[str, Any]) -> str:
    """A registration's health for the status table: up or down, and since when if known."""
    state = "down" if registration.get("down") else "up"
    since = registration.get("since")
    if since is None:
        return state
    return f"{state} since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(since))}"


async def _runUntilStopped(reactor: Any, services: Sequence[IService], err: TextIO) -> None:
    """Start C{services} (a failure to bind is one line), log to C{err}, run until stopped."""
    try:
        for service in services:
            service.privilegedStartService()
    except (NodeStartError, CannotListenError) as e:
        raise CommandError(str(e)) from None
    _startLogging(err)
    for service in services:
        service.startService()
        reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    stopped: Deferred[None] = Deferred()
    await stopped  # until the reactor stops (SIGINT, SIGTERM)


async def _serve(reactor: Any, options: ServeOptions, err: TextIO) -> None:
    try:
        config = loadConfig(options["config"])
    except ConfigError as e:
        raise CommandError(str(e)) from None
    cluster = config.cluster or ClusterConfig()
    try:
        proxies = proxyServices(reactor, config.proxies, config.port, cluster.name, cluster.key)
    except ValueError as e:
        raise CommandError(str(e)) from None
    node = NodeService(config, reactor, configPath=options["config"])
    await _runUntilStopped(reactor, [node, proxies], err)


async def _proxy(reactor: Any, options: ProxyOptions, err: TextIO) -> None:
    try:
        proxies = proxyServices(reactor, options["routes"], options["port"], options["cluster"],
                                _keyFrom(options["key-file"]))
    except ValueError as e:
        raise CommandError(str(e)) from None
    await _runUntilStopped(reactor, [proxies], err)


def run(reactor: Any, argv: Sequence[str], out: TextIO, err: TextIO) -> Deferred[None]:
    """Parse C{argv} and run the command it names; the L{Deferred} fails on error."""
    options = Options()
    try:
        options.parseOptions(argv)
    except usage.UsageError as e:
        err.write(f"srp: {e}\nRun 'srp --help' or 'srp COMMAND --help' for usage.\n")
        raise SystemExit(2) from None
    sub = options.subOptions
    commands = {
        "resolve": lambda: _resolve(reactor, sub, out),
        "enumerate": lambda: _enumerate(reactor, sub, out),
        "browse": lambda: _browse(reactor, sub, out),
        "serve": lambda: _serve(reactor, sub, err),
        "status": lambda: _status(reactor, sub, out),
        "proxy": lambda: _proxy(reactor, sub, err),
    }

    def failed(failure: Any) -> None:
        failure.trap(CommandError)
        err.write(f"srp: {failure.value}\n")
        raise SystemExit(1)

    assert options.subCommand is not None  # postOptions insists on one
    return ensureDeferred(commands[options.subCommand]()).addErrback(failed)


def main(argv: Sequence[str] | None = None) -> None:
    """The C{srp} console script."""
    arguments = sys.argv[1:] if argv is None else list(argv)
    if arguments[:1] not in (["serve"], ["proxy"]):
        # Like other command-line tools, end quietly when the reader goes
        # (| head).  Never for a node or a proxy: a peer closing a socket must
        # not kill it.
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    react(lambda reactor: run(reactor, arguments, sys.stdout, sys.stderr))
