"""
The C{via:} endpoint strings, for clients and servers.

    clientFromString(reactor, "via:10.0.0.1:1433,10.0.0.2:1433:timeout=5")
    serverFromString(reactor, "via:1433:interface=10.0.0.1")
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import (
    IStreamClientEndpoint,
    IStreamClientEndpointStringParserWithReactor,
    IStreamServerEndpoint,
    IStreamServerEndpointStringParser,
)
from twisted.plugin import IPlugin
from zope.interface import implementer

from srp.interfaces import IVIProvider
from srp.transports.via.endpoints import DEFAULT_TIMEOUT, VIAClientEndpoint, VIAServerEndpoint
from srp.transports.via.provider import (
    DEFAULT_BUFFER_SIZE,
    DEFAULT_PROVIDER,
    DEFAULT_RECEIVES,
    DEFAULT_SEND_QUEUE,
    EmulatedVIProvider,
    viProviderNamed,
)


def parsePaths(text: str) -> list[tuple[str, int]]:
    """
    Parse C{NIC:PORT[,NIC:PORT...]} as given in an endpoint string.

    @raise ValueError: if an item is not C{ADDRESS:PORT}, or its NIC is
        numeric (only a port map has a candidate host to stand for).
    """
    paths = []
    for item in text.split(","):
        nic, sep, port = item.strip().rpartition(":")
        nic = nic.strip()
        if nic.startswith("[") and nic.endswith("]"):
            nic = nic[1:-1]
        if not sep or not nic or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError(f"via endpoint path {item!r} is not ADDRESS:PORT")
        if nic.isdigit():
            raise ValueError(f"via endpoint path {item!r}: a numeric NIC stands for a "
                             "candidate's host, which an endpoint string has not; give "
                             "the NIC's address")
        paths.append((nic, int(port)))
    return paths


_YES, _NO = {"yes", "true", "on", "1"}, {"no", "false", "off", "0"}


def _flag(name: str, value: str) -> bool:
    if value.lower() in _YES | _NO:
        return value.lower() in _YES
    raise ValueError(f"via endpoint option {name}={value!r} is neither yes nor no")


def _providerFrom(options: dict[str, str]) -> IVIProvider | None:
    """
    The provider C{options} ask for: C{provider=NAME}, or an emulated one of
    the settings given; L{None} (the endpoint's default) if they ask for none.
    """
    name = options.get("provider", DEFAULT_PROVIDER)
    settings = sorted(_EMULATED_OPTIONS & set(options))
    if settings and name != DEFAULT_PROVIDER:
        raise ValueError(f"via endpoint option {settings[0]} is the {DEFAULT_PROVIDER} "
                         f"provider's, not provider {name!r}'s")
    local = _flag("local", options.get("local", "yes"))
    try:
        if not settings:
            return viProviderNamed(name) if "provider" in options else None
        return EmulatedVIProvider(
            receives=int(options.get("receives", DEFAULT_RECEIVES)),
            bufferSize=int(options.get("buffer_size", DEFAULT_BUFFER_SIZE)),
            sendQueue=int(options.get("send_queue", DEFAULT_SEND_QUEUE)), local=local)
    except ValueError as e:
        raise ValueError(f"via endpoint: {e}") from None


def _checkOptions(options: dict[str, str], known: set[str]) -> None:
    unknown = set(options) - known
    if unknown:
        raise ValueError(f"via endpoint has no option {sorted(unknown)[0]!r}; known: "
                         f"{', '.join(sorted(known))}")


#: The settings of an emulated provider an endpoint string may give.
_EMULATED_OPTIONS = {"receives", "buffer_size", "send_queue", "local"}
_PROVIDER_OPTIONS = {"provider"} | _EMULATED_OPTIONS


@implementer(IPlugin, IStreamClientEndpointStringParserWithReactor)
class VIAClientParser:
    """
    Parses C{via:ADDRESS:PORT[,ADDRESS:PORT...][:option=value...]} into a
    L{VIAClientEndpoint}.

    The paths are tried in order; their colons may be escaped
    (C{via:10.0.0.1\\:1433}) but need not be.  Options: C{timeout} (seconds
    per path, 30), C{provider} (the name of the VI provider, C{emulated}) and,
    for the emulated provider, C{receives}, C{buffer_size}, C{send_queue} and
    C{local} (C{yes} or C{no}).
    """

    prefix = "via"
    _OPTIONS = {"timeout"} | _PROVIDER_OPTIONS

    def parseStreamClient(self, reactor: Any, *args: object,
                          **kwargs: object) -> IStreamClientEndpoint:
        options = {k: str(v) for k, v in kwargs.items()}
        _checkOptions(options, self._OPTIONS)
        if not args:
            raise ValueError("via endpoint needs ADDRESS:PORT[,ADDRESS:PORT...]")
        paths = parsePaths(":".join(map(str, args)))
        try:
            timeout = float(options.get("timeout", DEFAULT_TIMEOUT))
        except ValueError:
            raise ValueError(f"via endpoint timeout {options['timeout']!r} is not "
                             "a number") from None
        return VIAClientEndpoint(reactor, paths, timeout, _providerFrom(options))


@implementer(IPlugin, IStreamServerEndpointStringParser)
class VIAServerParser:
    """
    Parses C{via:PORT[:interface=ADDRESS][:option=value...]} into a
    L{VIAServerEndpoint}.

    C{interface} is the address of the NIC to listen on (every NIC if
    absent); C{provider} names the VI provider (C{emulated}) and, for the
    emulated provider, C{receives}, C{buffer_size}, C{send_queue} and
    C{local} (C{yes} or C{no}) set it up.
    """

    prefix = "via"
    _OPTIONS = {"port", "interface"} | _PROVIDER_OPTIONS

    def parseStreamServer(self, reactor: Any, *args: object,
                          **kwargs: object) -> IStreamServerEndpoint:
        options = {k: str(v) for k, v in kwargs.items()}
        _checkOptions(options, self._OPTIONS)
        given = [str(a) for a in args]
        if "port" in options:
            given.insert(0, options["port"])
        if len(given) != 1 or not given[0].isdigit() or not 0 <= int(given[0]) <= 65535:
            raise ValueError(f"via server endpoint needs one PORT, not {':'.join(given)!r}")
        return VIAServerEndpoint(reactor, int(given[0]), options.get("interface", ""),
                                 _providerFrom(options))
