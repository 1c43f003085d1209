"""
The command line of each C{srp} command, checked: one line and exit 2 for bad input.
"""

from __future__ import annotations

import getopt
import ipaddress
import math
import os
import socket
import sys
from collections.abc import Sequence
from typing import Any

from twisted.python import usage

from srp.cli.output import CommandError
from srp.client.registration import Cluster
from srp.clusterkey import BadKey, environmentKey, loadKey
from srp.logs import FORMATS, LEVELS
from srp.options import CommandOptions, NodeOptions
from srp.records import DEFAULT_MAX_CONNECTIONS, Registration, proxyRoute
from srp.server.leases import MAX_TTL
from srp.wire import (
    InstanceInfo,
    InstanceRequest,
    WireError,
)
from srp.wire.cluster import Unregister
from srp.wire.instances import checkPort
from srp.wire.mcsqlr import BROWSER_PORT

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


def keyFrom(path: str | None) -> bytes:
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
        return keyFrom(self["key-file"])


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
        ["cluster", "c", None, "The cluster name (for srp's extended resolve); not "
         "needed: without it, whichever cluster the node is in answers."],
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
