"""
RESP_DATA: the ``key;value;...;;`` instance descriptions of an [MC-SQLR] SVR_RESP.

An L{InstanceInfo} is one instance as a client sees it: names, version and its
port map (which protocol listens where).  L{encodeInstances} builds RESP_DATA
within the size limits of the protocol, L{decodeInstances} parses it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from attrs import field, frozen

from srp.wire.errors import WireError

#: Longest instance name [MC-SQLR] allows in a request (bytes).
MAX_INSTANCE_NAME = 32
#: Longest server name we emit (a DNS host name).
MAX_SERVER_NAME = 255
#: Longest version string we emit.
MAX_VERSION = 32
#: RESP_DATA limit for a reply to CLNT_UCAST_INST.  [MC-SQLR] allows 1,024
#: bytes of RESP_DATA, but FreeTDS reads 1,023 bytes of datagram and
#: sqlserverport 1,024 (and crashes on a cut reply), so the whole datagram,
#: with its 3-byte header, is kept within 1,023 bytes.
SINGLE_INSTANCE_LIMIT = 1023 - 3


def checkToken(what: str, value: str, limit: int) -> None:
    """
    Refuse a value that cannot travel as one RESP_DATA token.

    @raise WireError: if C{value} is empty, longer than C{limit} bytes, not
        ASCII, or contains C{;} (the field separator).
    """
    if not value:
        raise WireError(f"{what} is empty")
    if not value.isascii():
        raise WireError(f"{what} {value!r} is not ASCII (clients decode RESP_DATA as ASCII)")
    if ";" in value:
        raise WireError(f"{what} {value!r} contains ';', the RESP_DATA field separator")
    if len(value) > limit:
        raise WireError(f"{what} {value!r} is {len(value)} bytes long; at most {limit} allowed")


def checkPort(what: str, port: int) -> None:
    """
    @raise WireError: if C{port} is not a TCP/UDP port number (1-65535).
    """
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise WireError(f"{what} {port!r} is not a port number (1-65535)")


def checkInstanceName(value: str) -> None:
    """
    Refuse an instance name that cannot travel, or that no client could ask for.

    @raise WireError: as L{checkToken} does, and if C{value} holds a control
        character (NUL, newline...) or nothing but spaces.
    """
    checkToken("instance name", value, MAX_INSTANCE_NAME)
    if any(ord(c) < 0x20 or c == "\x7f" for c in value):
        raise WireError(f"instance name {value!r} contains a control character")
    if not value.strip(" "):
        raise WireError(f"instance name {value!r} is only spaces")


def _instanceName(_: object, __: object, value: str) -> None:
    checkInstanceName(value)


def _serverName(_: object, __: object, value: str) -> None:
    checkToken("server name", value, MAX_SERVER_NAME)


def _version(_: object, __: object, value: str) -> None:
    checkToken("version", value, MAX_VERSION)


def _optionalPort(_: object, attribute: object, value: int | None) -> None:
    if value is not None:
        checkPort("tcp port", value)


def _pipe(_: object, __: object, value: str | None) -> None:
    if value is not None:
        checkToken("pipe name", value, SINGLE_INSTANCE_LIMIT)


@frozen
class ViaAddress:
    """One VIA path of an instance: a NIC and the port on it."""

    nic: str
    port: int

    def __attrs_post_init__(self) -> None:
        checkToken("VIA NIC", self.nic, MAX_SERVER_NAME)
        if "," in self.nic or ":" in self.nic:
            raise WireError(f"VIA NIC {self.nic!r} must not contain ',' or ':'")
        checkPort("VIA port", self.port)


@frozen
class ViaInfo:
    """The VIA entry of a port map: the NetBIOS name and the NIC paths in order."""

    netbios: str
    addresses: tuple[ViaAddress, ...]

    def __attrs_post_init__(self) -> None:
        checkToken("VIA NetBIOS name", self.netbios, MAX_SERVER_NAME)
        if "," in self.netbios:
            raise WireError(f"VIA NetBIOS name {self.netbios!r} must not contain ','")
        if not self.addresses:
            raise WireError("a VIA entry needs at least one NIC:PORT address")

    def encode(self) -> str:
        """The VIA value as it travels: C{NETBIOS,NIC:PORT[,NIC:PORT]}."""
        return ",".join([self.netbios, *(f"{a.nic}:{a.port}" for a in self.addresses)])

    @classmethod
    def decode(cls, text: str) -> ViaInfo:
        """
        Parse C{NETBIOS,NIC:PORT[,NIC:PORT]}.

        @raise WireError: if C{text} is not in that form.
        """
        netbios, *paths = text.split(",")
        addresses = []
        for path in paths:
            nic, sep, port = path.rpartition(":")
            if not sep or not port.isdigit():
                raise WireError(f"VIA address {path!r} is not NIC:PORT")
            addresses.append(ViaAddress(nic, int(port)))
        return cls(netbios, tuple(addresses))


@frozen(cache_hash=True)
class InstanceInfo:
    """
    One instance as [MC-SQLR] describes it to clients.

    Values are validated on construction, so an L{InstanceInfo} that exists
    can always be encoded.
    """

    serverName: str = field(validator=_serverName)
    instanceName: str = field(validator=_instanceName)
    version: str = field(default="16.0.1000.6", validator=_version)
    isClustered: bool = False
    tcp: int | None = field(default=None, validator=_optionalPort)
    np: str | None = field(default=None, validator=_pipe)
    via: ViaInfo | None = None
    #: Protocol entries this codec does not model (C{rpc}, C{spx}, ...), as
    #: (protocol, value) pairs, kept so that decoded replies lose nothing.
    other: tuple[tuple[str, str], ...] = ()

    def __attrs_post_init__(self) -> None:
        for name, value in self.other:
            checkToken("protocol name", name, MAX_VERSION)
            checkToken(f"{name} value", value, SINGLE_INSTANCE_LIMIT)

    def head(self) -> str:
        """The mandatory part of the record, up to and including the version."""
        clustered = "Yes" if self.isClustered else "No"
        return (
            f"ServerName;{self.serverName};InstanceName;{self.instanceName};"
            f"IsClustered;{clustered};Version;{self.version};"
        )

    def protocolEntries(self) -> list[str]:
        """Each protocol entry (C{tcp;1433;}) in the order clients expect."""
        entries = []
        if self.tcp is not None:
            entries.append(f"tcp;{self.tcp};")
        if self.np is not None:
            entries.append(f"np;{self.np};")
        if self.via is not None:
            entries.append(f"via;{self.via.encode()};")
        entries.extend(f"{name};{value};" for name, value in self.other)
        return entries


def encodeInstance(info: InstanceInfo, limit: int = SINGLE_INSTANCE_LIMIT) -> bytes:
    """
    One instance's RESP_DATA record, ending in C{;;}.

    Protocol entries that would take the record past C{limit} bytes are left
    out, as [MC-SQLR] requires for a reply to CLNT_UCAST_INST.
    """
    text = info.head()
    for entry in info.protocolEntries():
        if len(text) + len(entry) + 1 <= limit:
            text += entry
    return (text + ";").encode("ascii")


def encodeInstances(infos: Iterable[InstanceInfo]) -> bytes:
    """The concatenated RESP_DATA records of several instances, without limits."""
    return b"".join(encodeInstance(info, limit=65535) for info in infos)


_KNOWN = {"ServerName", "InstanceName", "IsClustered", "Version", "tcp", "np", "via"}


def _record(fields: Sequence[tuple[str, str]]) -> InstanceInfo:
    values: dict[str, str] = {}
    other = []
    for key, value in fields:
        if key in _KNOWN:
            if key in values:
                raise WireError(f"RESP_DATA record repeats the key {key!r}")
            values[key] = value
        else:
            other.append((key, value))
    missing = [key for key in ("ServerName", "InstanceName") if key not in values]
    if missing:
        raise WireError(f"RESP_DATA record lacks {', '.join(missing)}")
    tcp = values.get("tcp")
    if tcp is not None and not tcp.isdigit():
        raise WireError(f"RESP_DATA tcp port {tcp!r} is not a number")
    clustered = values.get("IsClustered", "No")
    if clustered not in ("Yes", "No"):
        raise WireError(f"RESP_DATA IsClustered is {clustered!r}, not Yes or No")
    via = values.get("via")
    return InstanceInfo(
        serverName=values["ServerName"],
        instanceName=values["InstanceName"],
        version=values.get("Version", "0"),
        isClustered=clustered == "Yes",
        tcp=None if tcp is None else int(tcp),
        np=values.get("np"),
        via=None if via is None else ViaInfo.decode(via),
        other=tuple(other),
    )


def decodeInstances(data: bytes) -> list[InstanceInfo]:
    """
    Parse RESP_DATA into the instances it describes.

    @raise WireError: if C{data} is not ASCII, a record is not a sequence of
        C{key;value;} pairs closed by C{;}, or a value is out of range.
    """
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError as e:
        raise WireError(f"RESP_DATA is not ASCII (byte {e.start})") from None
    tokens = text.split(";")
    if len(tokens) < 3 or tokens[-1] != "" or tokens[-2] != "":
        raise WireError("RESP_DATA does not end with ';;'")
    records: list[InstanceInfo] = []
    fields: list[tuple[str, str]] = []
    position = 0
    end = len(tokens) - 1
    while position < end:
        key = tokens[position]
        if key == "":
            if not fields:
                raise WireError("RESP_DATA has an empty record")
            records.append(_record(fields))
            fields = []
            position += 1
            continue
        if position + 1 >= end:
            raise WireError(f"RESP_DATA key {key!r} has no value")
        fields.append((key, tokens[position + 1]))
        position += 2
    if fields:
        raise WireError("RESP_DATA record is not closed by ';;'")
    return records


#: Enumeration replies are kept under this size where possible: several
#: drivers read only 1-4 KiB of a reply.
ENUMERATION_SOFT_LIMIT = 4096 - 3
#: No enumeration RESP_DATA exceeds this.  One datagram could carry 65,504
#: bytes, but python-tds and FreeTDS read 16,383 bytes of a reply and would
#: parse a cut one wrongly; an instance left out stays resolvable by name.
ENUMERATION_HARD_LIMIT = 16383 - 3


def compact(info: InstanceInfo) -> InstanceInfo:
    """
    C{info} with one protocol entry only: tcp if it has one, else its first.

    Enumeration replies fall back to this form when the full one is too big.
    """
    if info.tcp is not None:
        return InstanceInfo(info.serverName, info.instanceName, info.version,
                            info.isClustered, tcp=info.tcp)
    if info.np is not None:
        return InstanceInfo(info.serverName, info.instanceName, info.version,
                            info.isClustered, np=info.np)
    if info.via is not None:
        return InstanceInfo(info.serverName, info.instanceName, info.version,
                            info.isClustered, via=info.via)
    return InstanceInfo(info.serverName, info.instanceName, info.version,
                        info.isClustered, other=info.other[:1])


def encodeEnumeration(
    infos: Sequence[InstanceInfo],
    soft: int = ENUMERATION_SOFT_LIMIT,
    hard: int = ENUMERATION_HARD_LIMIT,
) -> tuple[bytes, int]:
    """
    RESP_DATA listing C{infos} for a reply to CLNT_BCAST_EX or CLNT_UCAST_EX.

    Every record is sent in full if the whole fits in C{soft} bytes; else
    each record in its L{compact} form, if that fits in C{soft}; else compact
    records in order up to C{hard} bytes, leaving out the rest.

    @return: the RESP_DATA and how many instances were left out.
    """
    full = encodeInstances(infos)
    if len(full) <= soft:
        return full, 0
    parts = []
    size = 0
    for info in infos:
        part = encodeInstance(compact(info), limit=hard)
        if size + len(part) > hard:
            break
        parts.append(part)
        size += len(part)
    return b"".join(parts), len(infos) - len(parts)


def instanceKey(name: str) -> str:
    """The lookup key of an instance name: SQL Server matches them case-insensitively."""
    return name.upper()


def _optionalDACPort(_: object, __: object, value: int | None) -> None:
    if value is not None:
        checkPort("DAC port", value)


def _priority(_: object, __: object, value: int) -> None:
    if not 0 <= value <= 0xFFFF:
        raise WireError(f"priority {value} is out of range (0-65535)")


@frozen(cache_hash=True)
class Registration:
    """
    One instance as a node registers it with its cluster.

    C{info} is what clients are told.  C{hidden} keeps the instance out of
    every [MC-SQLR] reply (SQL Server's HideInstance); C{dacPort} is the TCP
    port of its dedicated administrator connection, if any.  Several nodes
    may register one instance: the one with the lowest C{priority} is the
    primary, the others standbys.  C{nodeId} names the registering node.
    C{down} says that the node's health checks find the instance dead:
    clients are then told about the best registration that is not down,
    or, when all are, about the best one unless it says C{hideWhenDown}.
    """

    info: InstanceInfo
    hidden: bool = False
    dacPort: int | None = field(default=None, validator=_optionalDACPort)
    priority: int = field(default=0, validator=_priority)
    nodeId: int = 0
    down: bool = False
    hideWhenDown: bool = False

    @property
    def name(self) -> str:
        """The instance name."""
        return self.info.instanceName

    @property
    def key(self) -> str:
        """The case-insensitive lookup key of this instance."""
        return instanceKey(self.info.instanceName)
