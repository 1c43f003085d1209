"""
The node configuration file (TOML), and its validation.

Every problem is reported as one L{ConfigError} whose message names the file,
the place in it and what to do, so that C{srp serve} can print it as-is.
"""

from __future__ import annotations

import os
import socket
import tomllib
from collections.abc import Mapping
from pathlib import Path
from string import Template
from typing import Any

from attrs import evolve, field, frozen

from srp.clusterkey import BadKey, environmentKey, loadKey
from srp.etcd.access import FILE_SETTINGS, BadAccess, loadAccess
from srp.records import DEFAULT_MAX_CONNECTIONS, ProxyRoute, Registration, proxyRoute
from srp.server.access import AccessPolicy, NetworkACL, networks
from srp.server.checks import checkNamed
from srp.server.etcdmember import DEFAULT_LEASE_TTL, EtcdSettings
from srp.server.health import HealthSettings
from srp.server.limits import (
    DEFAULT_GLOBAL,
    DEFAULT_PER_SOURCE,
    DEFAULT_RESERVE,
    Budget,
    StateBounds,
)
from srp.server.membership import DEFAULT_INTERVAL, DEFAULT_MISSES
from srp.server.state import parseNodeId
from srp.transports import DEFAULT_PREFERENCE, transportNamed, transportNames
from srp.transports.via import DEFAULT_PROVIDER, viProviderNamed
from srp.wire import InstanceInfo, ViaInfo, WireError
from srp.wire.cluster import ANY_CLUSTER, clusterId
from srp.wire.instances import checkPort
from srp.wire.mcsqlr import BROWSER_PORT

_NODE_KEYS = {"listen", "port", "server_name", "extensions", "pipe_directory", "vi_provider",
              "node_id", "state_file"}
_INSTANCE_KEYS = {
    "name", "server_name", "version", "clustered", "tcp", "np", "via", "hidden", "dac_port",
    "priority", "relay", "serve", "check", "check_interval", "check_timeout", "fall", "rise",
    "hide_when_down",
}
_TOP_KEYS = {"node", "cluster", "instances", "limits", "access", "metrics", "proxies"}
_METRICS_KEYS = {"listen"}
_PROXY_KEYS = {"listen", "target", "prefer", "verify", "timeout", "max_connections"}
_LIMIT_KEYS = {"reply_rate_per_source", "reply_burst_per_source", "reply_rate", "reply_burst",
               "reserved_rate", "reserved_burst",
               "max_registrations_per_node", "max_instances", "max_passives",
               "max_subscriptions"}
_ACCESS_KEYS = {"clients_allow", "clients_deny", "enumeration", "enumeration_allow",
                "cluster_allow", "cluster_deny"}
_CLUSTER_KEYS = {"name", "addresses", "interval", "misses", "key_file", "on_active",
                 "on_passive", "backend", "etcd", "lease_ttl", "answer", "etcd_user",
                 "etcd_password_file", "etcd_ca", "etcd_cert", "etcd_key"}
#: The [cluster] keys that only an etcd-backed cluster takes.
_ETCD_KEYS = {"etcd", "lease_ttl", "answer", "etcd_user", "etcd_password_file", "etcd_ca",
              "etcd_cert", "etcd_key"}


class ConfigError(Exception):
    """A node configuration that cannot be used; the message says why."""


@frozen
class ClusterConfig:
    """
    The cluster a node belongs to.

    C{addresses} are probed to find the active (empty: the node's own
    listen addresses, for nodes sharing one address on one host).  C{key}
    authenticates cluster messages (empty: loopback sources only).
    C{onActive} and C{onPassive} are shell commands run when the node takes
    that role.  C{etcd} is set when the cluster's registry and election live
    in etcd instead of srp's own UDP protocol.
    """

    name: str = "srp"
    addresses: tuple[str, ...] = ()
    interval: float = DEFAULT_INTERVAL
    misses: int = DEFAULT_MISSES
    key: bytes = field(default=b"", repr=False)
    onActive: str | None = None
    onPassive: str | None = None
    #: With C{backend = "etcd"}: the registry and election live in etcd.
    etcd: EtcdSettings | None = None


@frozen
class NodeConfig:
    """
    What a node listens on, the instances it registers and its cluster.

    Without a C{cluster}, the node is standalone: it must own its port.
    """

    listen: tuple[str, ...] = ("0.0.0.0",)
    port: int = BROWSER_PORT
    instances: tuple[Registration, ...] = ()
    cluster: ClusterConfig | None = None
    #: Answer srp's extension messages (extended resolve, status); without
    #: them a standalone node is a plain SQL Server Browser.
    extensions: bool = True
    access: AccessPolicy = field(factory=AccessPolicy)
    perSource: Budget = DEFAULT_PER_SOURCE
    overall: Budget = DEFAULT_GLOBAL
    reserve: Budget = DEFAULT_RESERVE
    bounds: StateBounds = field(factory=StateBounds)
    #: Instances whose connections the node relays: instance key to
    #: ((backend host, port), transports to listen on).
    relays: dict[str, tuple[tuple[str, int], tuple[str, ...]]] = field(factory=dict)
    #: Where pipe sockets go (None: the default, see L{srp.transports.np}).
    pipeDirectory: Path | None = None
    #: How each instance is health-checked, by instance key.
    health: dict[str, HealthSettings] = field(factory=dict)
    #: The VI provider that carries the via listeners (L{srp.transports.via.viProviderNamed}).
    viProvider: str = DEFAULT_PROVIDER
    #: Where the Prometheus metrics are served over HTTP (host, port), if anywhere.
    metrics: tuple[str, int] | None = None
    #: The node's id, fixed in the configuration (else from C{stateFile}, or random).
    nodeId: int | None = None
    #: Where the node keeps its id across restarts, if anywhere.
    stateFile: Path | None = None
    #: Proxy listeners run beside the node (C{srp proxy}'s, from C{[[proxies]]}).
    proxies: tuple[ProxyRoute, ...] = ()


def _unknownKeys(where: str, table: Mapping[str, Any], known: set[str]) -> None:
    unknown = sorted(set(table) - known)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key {unknown[0]!r}; known keys are {', '.join(sorted(known))}"
        )


def _typed(where: str, key: str, value: Any, kind: type | tuple[type, ...], what: str) -> Any:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise ConfigError(f"{where}: {key} must be {what}, not {value!r}")
    return value


def _address(where: str, value: Any) -> str:
    _typed(where, "listen", value, str, "a list of IP addresses")
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, value)
            return str(value)
        except OSError:
            pass
    raise ConfigError(f"{where}: listen address {value!r} is not an IPv4 or IPv6 address")


def hostAndPort(where: str, key: str, value: Any) -> tuple[str, int]:
    """
    C{"HOST:PORT"} (C{"[::1]:PORT"} for IPv6) as a host and a port.

    @raise ConfigError: if C{value} is not such a string.
    """
    text = _typed(where, key, value, str, 'a "HOST:PORT" string')
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ConfigError(f'{where}: {key} {text!r} is not "HOST:PORT"')
    return host.strip("[]"), int(port)


def _relay(where: str, table: Mapping[str, Any]) -> tuple[tuple[str, int], tuple[str, ...]]:
    backend = hostAndPort(where, "relay", table["relay"])
    return backend, _transports(where, "serve", table.get("serve", list(DEFAULT_PREFERENCE)))


def _transports(where: str, key: str, names: Any) -> tuple[str, ...]:
    """C{names}, a non-empty list of transports' names, checked."""
    _typed(where, key, names, list, "a list of transports")
    if not names:
        raise ConfigError(f"{where}: {key} must list some of {', '.join(transportNames())}, "
                          f"not {names}")
    for name in names:
        try:
            transportNamed(name)  # srp's own first: plugins are looked for only if need be
        except ValueError:
            raise ConfigError(f"{where}: {key} must list some of "
                              f"{', '.join(transportNames())}, not {[name]}") from None
    return tuple(names)


def _listenPort(table: Mapping[str, Any]) -> Any:
    """The instance's C{tcp}; for a relayed one, 0 means any free port, as absent does."""
    tcp = table.get("tcp")
    return None if tcp == 0 and "relay" in table and not isinstance(tcp, bool) else tcp


def _proxy(where: str, table: Mapping[str, Any]) -> ProxyRoute:
    _unknownKeys(where, table, _PROXY_KEYS)
    for key in ("listen", "target"):
        if key not in table:
            raise ConfigError(f'{where}: every proxy needs a {key} ("ADDRESS:PORT" to listen '
                              'on, "CLUSTER/INSTANCE" to reach)')
    options: dict[str, Any] = {
        "verify": _typed(where, "verify", table.get("verify", "none"), str,
                         "the name of a verifier"),
        "timeout": float(_typed(where, "timeout", table.get("timeout", 2.0), (int, float),
                                "a number of seconds")),
        "maxConnections": _typed(where, "max_connections",
                                 table.get("max_connections", DEFAULT_MAX_CONNECTIONS), int,
                                 "a number of connections"),
    }
    if "prefer" in table:
        options["prefer"] = _transports(where, "prefer", table["prefer"])
    try:
        return proxyRoute(_typed(where, "listen", table["listen"], str, '"ADDRESS:PORT"'),
                          _typed(where, "target", table["target"], str, '"CLUSTER/INSTANCE"'),
                          **options)
    except WireError as e:
        raise ConfigError(f"{where}: {e}") from None


def _instance(where: str, table: Mapping[str, Any], serverName: str) -> Registration:
    if "name" not in table:
        raise ConfigError(f"{where}: every instance needs a name")
    name = _typed(where, "name", table["name"], str, "a string")
    where = f"{where} ({name})"
    _unknownKeys(where, table, _INSTANCE_KEYS)
    via = table.get("via")
    try:
        info = InstanceInfo(
            serverName=_typed(where, "server_name", table.get("server_name", serverName),
                              str, "a string"),
            instanceName=name,
            version=_typed(where, "version", table.get("version", "16.0.1000.6"), str,
                           "a string such as 16.0.1000.6"),
            isClustered=_typed(where, "clustered", table.get("clustered", False), bool,
                               "true or false"),
            tcp=_typed(where, "tcp", _listenPort(table), (int, type(None)), "a port number"),
            np=_typed(where, "np", table.get("np"), (str, type(None)), "a pipe name"),
            via=None if via is None else ViaInfo.decode(
                _typed(where, "via", via, str, 'a string such as "HOST,0:1433"')),
        )
        return Registration(
            info,
            hidden=_typed(where, "hidden", table.get("hidden", False), bool, "true or false"),
            dacPort=_typed(where, "dac_port", table.get("dac_port"), (int, type(None)),
                           "a port number"),
            priority=_typed(where, "priority", table.get("priority", 0), int,
                            "a number, 0 (primary) to 65535"),
            hideWhenDown=_typed(where, "hide_when_down", table.get("hide_when_down", False),
                                bool, "true or false"),
        )
    except WireError as e:
        raise ConfigError(f"{where}: {e}") from None


def _health(where: str, table: Mapping[str, Any]) -> HealthSettings:
    default = HealthSettings()
    check = _typed(where, "check", table.get("check", default.check), str,
                   "the name of a health check")
    try:
        checkNamed(check)
    except ValueError as e:
        raise ConfigError(f"{where}: {e}") from None
    seconds = (int, float)
    settings = HealthSettings(
        check=check,
        interval=_typed(where, "check_interval", table.get("check_interval", default.interval),
                        seconds, "a number of seconds"),
        timeout=_typed(where, "check_timeout", table.get("check_timeout", default.timeout),
                       seconds, "a number of seconds"),
        fall=_typed(where, "fall", table.get("fall", default.fall), int, "a count"),
        rise=_typed(where, "rise", table.get("rise", default.rise), int, "a count"),
    )
    if min(settings.interval, settings.timeout) <= 0 or min(settings.fall, settings.rise) < 1:
        raise ConfigError(f"{where}: check_interval and check_timeout must be more than 0 "
                          "seconds, fall and rise at least 1")
    return settings


def _nodeId(where: str, node: Mapping[str, Any]) -> int | None:
    if "node_id" not in node:
        return None
    text = _typed(where, "node_id", node["node_id"], str, 'a string of 16 hex digits')
    try:
        return parseNodeId(text)
    except ValueError:
        raise ConfigError(f"{where}: node_id {text!r} is not 16 hex digits") from None


def listenAddress(where: str, key: str, value: Any) -> tuple[str, int]:
    """
    C{"ADDRESS:PORT"} (C{"[::1]:PORT"} for IPv6) as an IP address and a port.

    @raise ConfigError: if C{value} is not such a string.
    """
    host, port = hostAndPort(where, key, value)
    return _address(where, host), port


def _metrics(where: str, table: Mapping[str, Any]) -> tuple[str, int]:
    _unknownKeys(where, table, _METRICS_KEYS)
    if "listen" not in table:
        raise ConfigError(f'{where}: listen is required, such as "127.0.0.1:9434"')
    return listenAddress(where, "listen", table["listen"])


def _keyFile(where: str, value: Any, environ: Mapping[str, str]) -> str:
    """
    The key file's name, with C{$NAME} or C{${NAME}} replaced from the
    environment: C{$CREDENTIALS_DIRECTORY/cluster.key} under systemd's
    C{LoadCredential=}.
    """
    try:
        return Template(_typed(where, "key_file", value, str, "a file name")).substitute(environ)
    except KeyError as e:
        raise ConfigError(f"key_file names ${e.args[0]}, which is not set (systemd sets "
                          "$CREDENTIALS_DIRECTORY with LoadCredential=)") from None
    except ValueError as e:
        raise ConfigError(f"key_file {value!r}: {e} (write $$ for a $)") from None


def _key(where: str, table: Mapping[str, Any], environ: Mapping[str, str]) -> bytes:
    try:
        if "key_file" in table:
            return loadKey(_keyFile(where, table["key_file"], environ))
        return environmentKey(environ)
    except (ConfigError, BadKey) as e:
        raise ConfigError(f"{where}: {e}") from None


def _cluster(where: str, table: Mapping[str, Any], environ: Mapping[str, str]) -> ClusterConfig:
    _unknownKeys(where, table, _CLUSTER_KEYS)
    name = _typed(where, "name", table.get("name", "srp"), str, "a string")
    if not 1 <= len(name) <= 64:
        raise ConfigError(f"{where}: name must be 1 to 64 characters, not {len(name)}")
    if clusterId(name) == ANY_CLUSTER:
        raise ConfigError(f"{where}: name {name!r} has the id reserved for queries that "
                          "name no cluster; choose another name")
    given = _typed(where, "addresses", table.get("addresses"), (list, type(None)),
                   "a list of IP addresses")
    if given == []:
        raise ConfigError(f"{where}: addresses is empty; give at least one address, or leave "
                          "it out to probe the listen addresses")
    addresses = tuple(_address(where, a) for a in given or ())
    interval = _typed(where, "interval", table.get("interval", DEFAULT_INTERVAL), (int, float),
                      "a number of seconds")
    if not 0.01 <= interval <= 60:
        raise ConfigError(f"{where}: interval {interval} is outside 0.01-60 seconds")
    misses = _typed(where, "misses", table.get("misses", DEFAULT_MISSES), int, "a number")
    if not 1 <= misses <= 100:
        raise ConfigError(f"{where}: misses {misses} is outside 1-100")
    commands = {key: _typed(where, key, table.get(key), (str, type(None)), "a shell command")
                for key in ("on_active", "on_passive")}
    return ClusterConfig(name, addresses, float(interval), misses, _key(where, table, environ),
                         commands["on_active"], commands["on_passive"], _etcd(where, table))


def _etcd(where: str, table: Mapping[str, Any]) -> EtcdSettings | None:
    backend = _typed(where, "backend", table.get("backend", "udp"), str, '"udp" or "etcd"')
    if backend not in ("udp", "etcd"):
        raise ConfigError(f'{where}: backend must be "udp" or "etcd", not {backend!r}')
    if backend == "udp":
        extra = sorted(_ETCD_KEYS & set(table))
        if extra:
            raise ConfigError(f'{where}: {extra[0]} needs backend = "etcd"')
        return None
    endpoints = _typed(where, "etcd", table.get("etcd", []), list,
                       'a list of URLs such as ["http://127.0.0.1:2379"]')
    if not endpoints or not all(isinstance(e, str) and e.startswith(("http://", "https://"))
                                for e in endpoints):
        raise ConfigError(f'{where}: etcd must list the etcd endpoints, such as '
                          f'["http://127.0.0.1:2379"], not {endpoints!r}')
    ttl = _typed(where, "lease_ttl", table.get("lease_ttl", DEFAULT_LEASE_TTL), int,
                 "a whole number of seconds")
    if not 1 <= ttl <= 3600:
        raise ConfigError(f"{where}: lease_ttl {ttl} is outside 1-3600 seconds")
    answer = _typed(where, "answer", table.get("answer", "every"), str,
                    '"every" or "leader"')
    if answer not in ("every", "leader"):
        raise ConfigError(f'{where}: answer must be "every" or "leader", not {answer!r}')
    user = _typed(where, "etcd_user", table.get("etcd_user"), (str, type(None)), "a user name")
    files = {key: _typed(where, key, table[key], str, "a file name")
             for key in FILE_SETTINGS if key in table}
    try:
        password, tls = loadAccess(endpoints, user, files)
    except BadAccess as e:
        raise ConfigError(f"{where}: {e}") from None
    return EtcdSettings(tuple(endpoints), ttl, answer, user=user, password=password, tls=tls)


def _limits(where: str,
            table: Mapping[str, Any]) -> tuple[Budget, Budget, Budget, StateBounds]:
    _unknownKeys(where, table, _LIMIT_KEYS)

    def number(key: str, default: float, minimum: float = 0) -> Any:
        value = _typed(where, key, table.get(key, default), (int, float), "a number")
        if value < minimum:
            raise ConfigError(f"{where}: {key} must be at least {minimum}, not {value}")
        return value

    perSource = Budget(number("reply_rate_per_source", DEFAULT_PER_SOURCE.rate),
                       number("reply_burst_per_source", DEFAULT_PER_SOURCE.burst, 1500))
    overall = Budget(number("reply_rate", DEFAULT_GLOBAL.rate),
                     number("reply_burst", DEFAULT_GLOBAL.burst, 1500))
    reserve = Budget(number("reserved_rate", DEFAULT_RESERVE.rate),
                     number("reserved_burst", DEFAULT_RESERVE.burst, 1500))
    defaults = StateBounds()
    bounds = StateBounds(
        int(number("max_registrations_per_node", defaults.maxRegistrationsPerNode, 1)),
        int(number("max_instances", defaults.maxInstances, 1)),
        int(number("max_passives", defaults.maxPassives, 1)),
        int(number("max_subscriptions", defaults.maxSubscriptions, 0)))
    return perSource, overall, reserve, bounds


def _access(where: str, table: Mapping[str, Any]) -> AccessPolicy:
    _unknownKeys(where, table, _ACCESS_KEYS)

    def acl(prefix: str) -> NetworkACL:
        lists = []
        for key in (f"{prefix}_allow", f"{prefix}_deny"):
            values = _typed(where, key, table.get(key, []), list, "a list of networks")
            try:
                lists.append(networks([_typed(where, key, v, str, "a list of networks")
                                       for v in values]))
            except ValueError as e:
                raise ConfigError(f"{where}: {key}: {e}") from None
        return NetworkACL(lists[0], lists[1])

    enumerators = acl("enumeration") if "enumeration_allow" in table else NetworkACL()
    return AccessPolicy(
        clients=acl("clients"),
        enumeration=_typed(where, "enumeration", table.get("enumeration", True), bool,
                           "true or false"),
        enumerators=NetworkACL(enumerators.allow),
        cluster=acl("cluster"),
    )


def parseConfig(document: Mapping[str, Any], source: str = "<config>",
                environ: Mapping[str, str] | None = None) -> NodeConfig:
    """
    Validate a parsed TOML document and build the L{NodeConfig} it describes.

    @param source: the file name, used in error messages.
    @param environ: where to look for C{SRP_CLUSTER_KEY} (default: C{os.environ}).
    @raise ConfigError: naming the first problem found.
    """
    environ = os.environ if environ is None else environ
    _unknownKeys(source, document, _TOP_KEYS)
    node = _typed(source, "[node]", document.get("node", {}), dict, "a table")
    where = f"{source} [node]"
    _unknownKeys(where, node, _NODE_KEYS)
    listen = _typed(where, "listen", node.get("listen", ["0.0.0.0"]), list,
                    "a list of IP addresses")
    if not listen:
        raise ConfigError(f"{where}: listen is empty; give at least one address")
    addresses = tuple(_address(where, a) for a in listen)
    if len(set(addresses)) != len(addresses):
        raise ConfigError(f"{where}: listen names an address twice")
    port = _typed(where, "port", node.get("port", BROWSER_PORT), int, "a port number")
    try:
        checkPort("port", port)
    except WireError as e:
        raise ConfigError(f"{where}: {e}") from None
    serverName = _typed(where, "server_name", node.get("server_name",
                        socket.gethostname().split(".")[0].upper()), str, "a string")
    tables = _typed(source, "[[instances]]", document.get("instances", []), list,
                    "an array of tables")
    records: list[Registration] = []
    relays: dict[str, tuple[tuple[str, int], tuple[str, ...]]] = {}
    health: dict[str, HealthSettings] = {}
    seen: dict[str, int] = {}
    for number, table in enumerate(tables, 1):
        where = f"{source} [[instances]] #{number}"
        _typed(where, "instance", table, dict, "a table")
        record = _instance(where, table, serverName)
        if record.key in seen:
            raise ConfigError(
                f"{where} ({record.name}): instance {record.name!r} is already defined "
                f"by #{seen[record.key]} (names are case-insensitive)"
            )
        seen[record.key] = number
        records.append(record)
        health[record.key] = _health(f"{where} ({record.name})", table)
        if "relay" in table:
            relays[record.key] = _relay(f"{where} ({record.name})", table)
        elif "serve" in table:
            raise ConfigError(f"{where} ({record.name}): serve needs a relay: the address "
                              "where the instance really listens")
    extensions = _typed(f"{source} [node]", "extensions", node.get("extensions", True), bool,
                        "true or false")
    pipeDirectory = (Path(_typed(f"{source} [node]", "pipe_directory", node["pipe_directory"],
                                 str, "a directory")) if "pipe_directory" in node else None)
    viProvider = _typed(f"{source} [node]", "vi_provider",
                        node.get("vi_provider", DEFAULT_PROVIDER), str, "a VI provider's name")
    try:
        viProviderNamed(viProvider)
    except ValueError as e:
        raise ConfigError(f"{source} [node]: vi_provider: {e}") from None
    stateFile = (Path(_typed(f"{source} [node]", "state_file", node["state_file"], str,
                             "a file name")) if "state_file" in node else None)
    metrics = None
    if "metrics" in document:
        metrics = _metrics(f"{source} [metrics]", _typed(source, "[metrics]",
                                                         document["metrics"], dict, "a table"))
    cluster = None
    if "cluster" in document:
        table = _typed(source, "[cluster]", document["cluster"], dict, "a table")
        cluster = _cluster(f"{source} [cluster]", table, environ)
        if not extensions:
            raise ConfigError(f"{source} [node]: extensions = false leaves no way for the "
                              "nodes of a [cluster] to talk; remove one of them")
    perSource, overall, reserve, bounds = _limits(
        f"{source} [limits]", _typed(source, "[limits]", document.get("limits", {}), dict,
                                     "a table"))
    access = _access(f"{source} [access]", _typed(source, "[access]",
                                                  document.get("access", {}), dict, "a table"))
    proxies = _typed(source, "[[proxies]]", document.get("proxies", []), list,
                     "an array of tables")
    routes = tuple(_proxy(f"{source} [[proxies]] #{number}",
                          _typed(f"{source} [[proxies]] #{number}", "proxy", table, dict,
                                 "a table"))
                   for number, table in enumerate(proxies, 1))
    return NodeConfig(listen=addresses, port=port, instances=tuple(records), cluster=cluster,
                      extensions=extensions, access=access, perSource=perSource,
                      overall=overall, reserve=reserve, bounds=bounds, relays=relays,
                      pipeDirectory=pipeDirectory, viProvider=viProvider,
                      health=health, metrics=metrics, proxies=routes,
                      nodeId=_nodeId(f"{source} [node]", node), stateFile=stateFile)


def withMetrics(config: NodeConfig, listen: str | None) -> NodeConfig:
    """
    C{config} with its metrics served at C{listen} (C{--metrics ADDRESS:PORT})
    instead, if given.

    @raise ConfigError: if C{listen} is not an address and a port.
    """
    if listen is None:
        return config
    return evolve(config, metrics=listenAddress("--metrics", "address", listen))


def loadConfig(path: str | Path) -> NodeConfig:
    """
    Read and validate a node configuration file.

    @raise ConfigError: if the file cannot be read, is not TOML, or is invalid.
    """
    try:
        with open(path, "rb") as f:
            document = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the configuration: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: not UTF-8 text (byte {e.start})") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    return parseConfig(document, str(path))
