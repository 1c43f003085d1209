"""
The C{srp} command: run a node, and query any [MC-SQLR] server.

Every query command prints an aligned table by default and JSON with
C{--json}; failures print one line on stderr and exit non-zero.
"""

from __future__ import annotations

import getopt
import ipaddress
import json
import math
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from twisted.application.service import IService
from twisted.internet.defer import Deferred, DeferredList, ensureDeferred, maybeDeferred, succeed
from twisted.internet.error import CannotListenError
from twisted.internet.task import react
from twisted.logger import globalLogBeginner
from twisted.python import usage

from srp.client.browser import Answer, NoAnswer, QueryFailed, browse, query
from srp.client.cluster import fetchStatus
from srp.client.proxy import proxyServices
from srp.client.registration import Cluster, LeaseKeeper, Refused, request
from srp.client.resolver import ClusterResolver, Resolution, ResolveError
from srp.clusterkey import BadKey, environmentKey, loadKey
from srp.logs import FORMATS, LEVELS, nodeObserver
from srp.notify import notify
from srp.options import CommandOptions, NodeOptions
from srp.records import DEFAULT_MAX_CONNECTIONS, Registration, proxyRoute
from srp.server.config import ClusterConfig, ConfigError, loadConfig, withMetrics
from srp.server.leases import MAX_TTL
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
from srp.wire.cluster import Unregister
from srp.wire.instances import checkPort
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


#: The longest --timeout accepted, in seconds.
MAX_TIMEOUT = 3600.0


def checkIPAddress(what: str, value: str) -> None:
    """
    @raise usage.UsageError: if C{value} is not an IPv4 or IPv6 address.
    """
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise usage.UsageError(f"{what}: {value!r} is not an IP address") from None


def checkHost(value: str) -> str:
    """
    C{value}, an IP address or a host name.

    @raise usage.UsageError: if it is neither.
    """
    try:
        ipaddress.ip_address(value)
        return value
    except ValueError:
        pass
    try:
        value.encode("idna")
    except UnicodeError:
        raise usage.UsageError(f"{value!r} is not a host name or an IP address") from None
    if not value or not all(c.isalnum() or c in "-._" for c in value):
        raise usage.UsageError(f"{value!r} is not a host name or an IP address")
    return value


def oneLine(text: str) -> str:
    """C{text} with its line breaks and other unprintable characters escaped."""
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def splitTarget(target: str) -> tuple[str, str]:
    """
    Split C{HOST\\INSTANCE} (or C{HOST/INSTANCE}) into host and instance.

    @raise usage.UsageError: if either part is missing.
    """
    cut = max(target.rfind("\\"), target.rfind("/"))
    host, instance = target[:cut], target[cut + 1 :]
    if cut < 0 or not host or not instance:
        raise usage.UsageError(f"{target!r} is not HOST\\INSTANCE")
    return checkHost(host.strip("[]")), instance


class _AnyOrderOptions(CommandOptions):
    """Options that may come before or after the arguments."""

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        if options is None:
            options = sys.argv[1:]
        try:
            found, arguments = getopt.gnu_getopt(list(options), self.shortOpt, self.longOpt)
        except getopt.GetoptError as e:
            raise usage.UsageError(str(e)) from None
        withValue = {f"--{name[:-1]}" for name in self.longOpt if name.endswith("=")} | {
            f"-{letter}" for letter, after in zip(self.shortOpt, self.shortOpt[1:] + " ",
                                                  strict=True) if after == ":"}
        ordered: list[str] = []
        for flag, value in found:
            ordered += [flag, value] if flag in withValue else [flag]
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

    def postOptions(self) -> None:
        try:
            checkPort("--port", self["port"])
        except WireError as e:
            raise usage.UsageError(str(e)) from None
        timeout = self["timeout"]
        if not (math.isfinite(timeout) and 0 < timeout <= MAX_TIMEOUT):
            raise usage.UsageError(f"--timeout {timeout} is not a number of seconds above 0 "
                                   f"and at most {MAX_TIMEOUT}")
        for address in self.addresses():
            checkIPAddress("--cluster-addresses", address)


class _ClusterOptions(_QueryOptions):
    """Options of the commands that may speak srp's extension messages to a cluster."""

    optParameters = [
        ["cluster-addresses", "a", None,
         "Comma-separated addresses of the cluster, all asked at once."],
        ["cluster", "c", None, "The cluster name (for srp's extension messages); not "
         "needed: without it, whichever cluster the node is in answers."],
        ["key-file", "k", None, "File holding the cluster key (mode 600); default "
         "$SRP_CLUSTER_KEY."],
    ]

    def postOptions(self) -> None:
        super().postOptions()
        name = self["cluster"]
        if name is None:
            return  # whichever cluster the node is in
        if not 1 <= len(name) <= 64 or not name.isprintable():
            raise usage.UsageError(f"--cluster {name!r} is not a cluster name (1 to 64 "
                                   "printable characters)")
        try:
            name.encode("utf-8")
        except UnicodeError:
            raise usage.UsageError(f"--cluster {name!r} is not UTF-8") from None

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
        self["host"] = checkHost(host.strip("[]"))


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

    def postOptions(self) -> None:
        super().postOptions()
        checkIPAddress("--address", self["address"])


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
        self["host"] = checkHost(host.strip("[]"))


def _number(what: str, value: str, kind: type[int] | type[float], low: float,
            high: float) -> Any:
    try:
        number = kind(value)
    except ValueError:
        raise usage.UsageError(f"{what} {value!r} is not a number") from None
    if not low <= number <= high:
        raise usage.UsageError(f"{what} {value} is out of range ({low:.10g}-{high:.10g})")
    return number


class UnregisterOptions(_ClusterOptions):
    """Options of C{srp unregister}."""

    synopsis = "Usage: srp unregister [options] CLUSTER_ADDRESS INSTANCE"
    longdesc = ("End the registration by command of INSTANCE at --priority (what "
                "'srp register' made) in the cluster answering at CLUSTER_ADDRESS.")
    examples: Sequence[str] = ("srp unregister 127.0.0.1 SALES",
                "srp unregister --key-file /etc/srp/cluster.key --priority 1 db SALES")
    optParameters = [["priority", None, "0", "The priority it was registered at."]]

    def parseArgs(self, host: str, instance: str) -> None:  # type: ignore[override]
        self["host"], self["instance"] = host.strip("[]"), instance
        self["priority"] = _number("--priority", self["priority"], int, 0, 0xFFFF)
        try:
            Unregister(instance, self["priority"])
        except WireError as e:
            raise usage.UsageError(str(e)) from None

    def cluster(self) -> Cluster:
        """Where the cluster answers, and how to speak to it."""
        return Cluster(self["host"], self["port"], self["cluster"], self.key(),
                       self["timeout"], tuple(self.addresses()))


class RegisterOptions(UnregisterOptions):
    """Options of C{srp register}."""

    synopsis = ("Usage: srp register [options] CLUSTER_ADDRESS INSTANCE --tcp PORT "
                "[--np PIPE]")
    longdesc = (
        "Register INSTANCE, listening on --tcp PORT (and/or --np PIPE) at this host, with "
        "the srp cluster answering at CLUSTER_ADDRESS, for --ttl seconds (0: until "
        "'srp unregister'); registering again renews it.  With --keep, stay in the "
        "foreground renewing every third of the ttl, and unregister on SIGTERM or SIGINT: "
        "a container entrypoint's way to register itself.  Sealed with the cluster key "
        "(--key-file or $SRP_CLUSTER_KEY); a cluster without a key accepts loopback only."
    )
    examples = (
        "srp register 127.0.0.1 SALES --tcp 14330",
        "srp register --key-file /etc/srp/cluster.key --ttl 0 db SALES --tcp 1433",
        "srp register --keep --ttl 30 --priority 1 127.0.0.1 SALES --tcp 14331 &",
    )
    optFlags = [["keep", None, "Stay in the foreground, renewing; unregister on SIGTERM."]]
    optParameters = [
        ["tcp", None, None, "The TCP port the instance listens on."],
        ["np", None, None, "The named pipe it listens on."],
        ["ttl", None, "30", f"Seconds the registration lasts (0-{MAX_TTL}; 0: until "
         "unregistered)."],
        ["server-name", None, socket.gethostname().split(".")[0].upper(),
         "The server name clients are told."],
    ]

    def parseArgs(self, host: str, instance: str) -> None:  # type: ignore[override]
        super().parseArgs(host, instance)
        if self["tcp"] is None and self["np"] is None:
            raise usage.UsageError("--tcp PORT or --np PIPE is required")
        tcp = None if self["tcp"] is None else _number("--tcp", self["tcp"], int, 1, 65535)
        self["ttl"] = _number("--ttl", self["ttl"], float, 0, MAX_TTL)
        try:
            self["registration"] = Registration(
                InstanceInfo(self["server-name"], instance, tcp=tcp, np=self["np"]),
                priority=self["priority"])
        except WireError as e:
            raise usage.UsageError(str(e)) from None


class ServeOptions(NodeOptions):
    """Options of C{srp serve}."""

    synopsis = "Usage: srp serve --config node.toml"
    longdesc = (
        "Run an srp node in the foreground until SIGINT or SIGTERM, logging to stderr. "
        "The configuration file is described in the operations guide.  Under systemd "
        "(Type=notify) it tells $NOTIFY_SOCKET READY=1 once it answers, STOPPING=1 "
        "when it stops."
    )
    examples = ("srp serve --config examples/node.toml",
                "srp serve --config node.toml --metrics 127.0.0.1:9434",
                "srp serve --config node.toml --log-format json --log-level warn",
                "srp serve --config node.toml --logfile /var/log/srp/node.log")
    optParameters = [
        ["log-format", None, "text", f"How to log: {' or '.join(FORMATS)} (one JSON object "
         "a line)."],
        ["log-level", None, "info", f"The least severe level logged: {', '.join(LEVELS)}."],
        ["logfile", None, None, "Append the log to this file instead of stderr."],
    ]

    def postOptions(self) -> None:
        super().postOptions()
        if self["log-format"] not in FORMATS:
            raise usage.UsageError(f"--log-format must be {' or '.join(FORMATS)}, "
                                   f"not {self['log-format']!r}")
        if self["log-level"] not in LEVELS:
            raise usage.UsageError(f"--log-level must be one of {', '.join(LEVELS)}, "
                                   f"not {self['log-level']!r}")


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
        ["register", None, RegisterOptions, "Register an instance with a cluster, for a "
         "while."],
        ["unregister", None, UnregisterOptions, "End a registration by command."],
        ["proxy", None, ProxyOptions, "Splice local TCP connections to an instance's "
         "live place."],
    ]

    def postOptions(self) -> None:
        if self.subCommand is None:
            raise usage.UsageError(
                "a command is required: serve, resolve, enumerate, browse, status, register, "
                "unregister or proxy")


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
    if "version" in status:
        started = status["started"]
        out.write("\n" + formatTable(("VERSION", "STARTED", "UPTIME"), [(
            status["version"], "-" if started is None else time.strftime(
                "%Y-%m-%d %H:%M:%S", time.localtime(started)),
            "-" if status["uptime"] is None else _duration(status["uptime"]))]) + "\n")
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


async def _lease(reactor: Any, options: UnregisterOptions, out: TextIO, err: TextIO) -> None:
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


def _duration(seconds: float) -> str:
    """C{seconds} as days, hours, minutes and seconds: C{2d 3h 4m 5s}."""
    whole = int(seconds)
    parts = [(whole // 86400, "d"), (whole // 3600 % 24, "h"), (whole // 60 % 60, "m")]
    shown = [f"{n}{unit}" for n, unit in parts if n]
    return " ".join([*shown, f"{whole % 60}s"])


def _health(registration: dict[str, Any]) -> str:
    """A registration's health for the status table: up or down, and since when if known."""
    state = "down" if registration.get("down") else "up"
    since = registration.get("since")
    if since is None:
        return state
    return f"{state} since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(since))}"


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


async def _serve(reactor: Any, options: ServeOptions, err: TextIO) -> None:
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


async def _proxy(reactor: Any, options: ProxyOptions, err: TextIO) -> None:
    try:
        proxies = proxyServices(reactor, options["routes"], options["port"], options["cluster"],
                                _keyFrom(options["key-file"]))
    except ValueError as e:
        raise CommandError(str(e)) from None
    await _runUntilStopped(reactor, [proxies], lambda: _logPlainly(err))


def _jsonError(message: str, out: TextIO) -> None:
    """With C{--json}, an error is a JSON object on stdout too, for a pipeline reading it."""
    out.write(json.dumps({"error": message}) + "\n")
    out.flush()


def run(reactor: Any, argv: Sequence[str], out: TextIO, err: TextIO) -> Deferred[None]:
    """Parse C{argv} and run the command it names; the L{Deferred} fails on error."""
    options = Options()
    try:
        options.parseOptions(argv)
    except usage.UsageError as e:
        if "--json" in argv or "-j" in argv:
            _jsonError(oneLine(str(e)), out)
        err.write(f"srp: {oneLine(str(e))} (see 'srp --help' or 'srp COMMAND --help')\n")
        raise SystemExit(2) from None
    sub = options.subOptions
    commands = {
        "resolve": lambda: _resolve(reactor, sub, out),
        "enumerate": lambda: _enumerate(reactor, sub, out),
        "browse": lambda: _browse(reactor, sub, out),
        "serve": lambda: _serve(reactor, sub, err),
        "status": lambda: _status(reactor, sub, out),
        "register": lambda: _lease(reactor, sub, out, err),
        "unregister": lambda: _lease(reactor, sub, out, err),
        "proxy": lambda: _proxy(reactor, sub, err),
    }

    def failed(failure: Any) -> None:
        failure.trap(CommandError)
        if sub.get("json"):
            _jsonError(oneLine(str(failure.value)), out)
        err.write(f"srp: {oneLine(str(failure.value))}\n")
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
