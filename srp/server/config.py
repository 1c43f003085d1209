"""
The node configuration file (TOML), and its validation.

Every problem is reported as one L{ConfigError} whose message names the file,
the place in it and what to do, so that C{srp serve} can print it as-is.
"""

from __future__ import annotations

import socket
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from attrs import frozen

from srp.records import Registration
from srp.wire import InstanceInfo, ViaInfo, WireError
from srp.wire.instances import checkPort

#: The [MC-SQLR] port.
DEFAULT_PORT = 1434

_NODE_KEYS = {"listen", "port", "server_name"}
_INSTANCE_KEYS = {
    "name", "server_name", "version", "clustered", "tcp", "np", "via", "hidden", "dac_port",
    "priority",
}
_TOP_KEYS = {"node", "instances"}


class ConfigError(Exception):
    """A node configuration that cannot be used; the message says why."""


@frozen
class NodeConfig:
    """What a node listens on and the instances it registers."""

    listen: tuple[str, ...] = ("0.0.0.0",)
    port: int = DEFAULT_PORT
    instances: tuple[Registration, ...] = ()


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
            tcp=_typed(where, "tcp", table.get("tcp"), (int, type(None)), "a port number"),
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
        )
    except WireError as e:
        raise ConfigError(f"{where}: {e}") from None


def parseConfig(document: Mapping[str, Any], source: str = "<config>") -> NodeConfig:
    """
    Validate a parsed TOML document and build the L{NodeConfig} it describes.

    @param source: the file name, used in error messages.
    @raise ConfigError: naming the first problem found.
    """
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
    port = _typed(where, "port", node.get("port", DEFAULT_PORT), int, "a port number")
    try:
        checkPort("port", port)
    except WireError as e:
        raise ConfigError(f"{where}: {e}") from None
    serverName = _typed(where, "server_name", node.get("server_name",
                        socket.gethostname().split(".")[0].upper()), str, "a string")
    tables = _typed(source, "[[instances]]", document.get("instances", []), list,
                    "an array of tables")
    records: list[Registration] = []
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
    return NodeConfig(listen=addresses, port=port, instances=tuple(records))


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
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    return parseConfig(document, str(path))
