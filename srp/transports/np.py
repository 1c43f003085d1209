"""
Named pipes on POSIX: AF_UNIX stream sockets standing in for Windows pipes.

Writes on a pipe connection go through to the kernel at once, and its send
buffer is 1 MiB (L{srp.transports.writethrough}).

An [MC-SQLR] pipe name, C{\\\\HOST\\pipe\\NAME}, maps to the socket
C{DIRECTORY/NAME} (NAME percent-encoded, so C{MSSQL$SALES\\sql\\query}
becomes one file name).  Pipes do not cross hosts on POSIX: a pipe of
another host is refused with an error that says so.  Windows named pipes
are not supported.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path
from typing import Any
from urllib.parse import quote

from attrs import evolve
from twisted.internet.defer import Deferred, fail
from twisted.internet.endpoints import UNIXClientEndpoint
from twisted.internet.error import ConnectError
from twisted.internet.interfaces import (
    IListeningPort,
    IProtocol,
    IProtocolFactory,
    IStreamClientEndpoint,
    IStreamClientEndpointStringParserWithReactor,
)
from twisted.plugin import IPlugin
from zope.interface import implementer

from srp.interfaces import IPortMapTransport, NodeListening
from srp.records import InstanceInfo
from srp.transports.writethrough import WriteThroughFactory

#: Longest AF_UNIX socket path Linux accepts.
MAX_PATH = 107
#: The socket files' mode: the node's user and group may connect.
DEFAULT_MODE = 0o660
#: Send buffer of pipe connections: AF_UNIX's default (about 208 KiB) halves
#: bulk throughput.
SEND_BUFFER = 1 << 20


def defaultDirectory() -> Path:
    """
    Where pipe sockets live: C{$SRP_PIPE_DIRECTORY}, else C{/run/srp/pipes}
    for root and C{$XDG_RUNTIME_DIR/srp/pipes} (or C{/tmp/srp-UID/pipes}) for others.
    """
    configured = os.environ.get("SRP_PIPE_DIRECTORY")
    if configured:
        return Path(configured)
    if os.geteuid() == 0:
        return Path("/run/srp/pipes")
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    return Path(runtime, "srp", "pipes") if runtime else Path(f"/tmp/srp-{os.geteuid()}/pipes")


def splitPipeName(pipe: str) -> tuple[str, str]:
    """
    C{\\\\HOST\\pipe\\NAME} as (HOST, NAME).

    @raise ValueError: if C{pipe} is not in that form.
    """
    parts = pipe.split("\\")
    if len(parts) < 5 or parts[0] or parts[1] or parts[3].lower() != "pipe" or not parts[4]:
        raise ValueError(f"{pipe!r} is not a pipe name like \\\\HOST\\pipe\\NAME")
    return parts[2], "\\".join(parts[4:])


def pipeName(server: str, name: str) -> str:
    """The [MC-SQLR] form of pipe C{name} on C{server}."""
    return f"\\\\{server}\\pipe\\{name}"


def socketPath(name: str, directory: Path | None = None) -> Path:
    """
    The socket standing in for pipe C{name}.

    @raise ValueError: if the path is too long for AF_UNIX.
    """
    path = (directory or defaultDirectory()) / quote(name, safe="")
    if len(os.fsencode(path)) > MAX_PATH:
        raise ValueError(f"the socket path for pipe {name!r} is longer than {MAX_PATH} bytes: "
                         "use a shorter pipe directory")
    return path


def isThisHost(server: str, address: str) -> bool:
    """Whether a pipe on C{server}, reached through C{address}, is on this host."""
    try:
        if ipaddress.ip_address(address.split("%")[0]).is_loopback:
            return True
    except ValueError:
        pass
    local = {".", "localhost", "(local)", socket.gethostname().split(".")[0].lower()}
    return server.lower() in local


@implementer(IStreamClientEndpoint)
class RemotePipeEndpoint:
    """An endpoint that refuses, saying why: named pipes do not cross hosts on POSIX."""

    def __init__(self, pipe: str, address: str) -> None:
        self.pipe = pipe
        self.address = address

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        """Fail with an error that names the pipe and its host."""
        return fail(ConnectError(string=f"pipe {self.pipe} is on another host ({self.address}): "
                                 "named pipes do not cross hosts on POSIX; use tcp or via"))


@implementer(IStreamClientEndpoint)
class PipeEndpoint:
    """
    A connection to a pipe's socket, whose writes go through to the kernel at
    once and whose send buffer is wide (L{srp.transports.writethrough}).
    """

    def __init__(self, reactor: Any, path: Path, timeout: float = 30) -> None:
        self.path = path
        self._endpoint = UNIXClientEndpoint(reactor, str(path), timeout=timeout)

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        """Connect C{protocolFactory}'s protocol (which the L{Deferred} fires with)."""
        connected: Deferred[IProtocol] = self._endpoint.connect(
            WriteThroughFactory(protocolFactory, SEND_BUFFER))

        def unwrap(wrapper: IProtocol) -> IProtocol:
            wrapped: IProtocol = wrapper.wrappedProtocol  # type: ignore[attr-defined]
            return wrapped

        return connected.addCallback(unwrap)


def listenPipe(reactor: Any, name: str, factory: IProtocolFactory,
               directory: Path | None = None, mode: int = DEFAULT_MODE) -> IListeningPort:
    """
    Listen on pipe C{name}: create the directory (mode 0750) and the socket (C{mode}).

    @raise OSError: if the directory cannot be made.
    @raise twisted.internet.error.CannotListenError: if the socket cannot be bound.
    """
    path = socketPath(name, directory)
    path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
    port: IListeningPort = reactor.listenUNIX(
        str(path), WriteThroughFactory(factory, SEND_BUFFER), mode=mode, wantPID=True)
    return port


@implementer(IPlugin, IPortMapTransport)
class PipeTransport:
    """The C{np} entry of a port map: a pipe, C{\\\\SERVER\\pipe\\NAME}."""

    name = "np"

    def endpointFor(self, reactor: Any, host: str, info: InstanceInfo,
                    timeout: float) -> IStreamClientEndpoint | None:
        """An endpoint to C{info}'s pipe, or L{None} if it has none."""
        if info.np is None:
            return None
        try:
            server, name = splitPipeName(info.np)
            path = socketPath(name)
        except ValueError as e:
            return RemotePipeEndpoint(info.np, f"{host}; {e}")
        if not isThisHost(server, host):
            return RemotePipeEndpoint(info.np, host)
        return PipeEndpoint(reactor, path, timeout=timeout)

    def listen(self, reactor: Any, info: InstanceInfo, factory: IProtocolFactory,
               node: NodeListening) -> tuple[IListeningPort, InstanceInfo]:
        """
        Listen on C{info}'s pipe, or on C{MSSQL$NAME\\srp-NODE\\sql\\query}: several
        nodes of one host may serve the same instance (primary and standbys),
        so the default name carries the node id.
        """
        name = (splitPipeName(info.np)[1] if info.np else
                rf"MSSQL${info.instanceName}\srp-{node.nodeId:016x}\sql\query")
        port = listenPipe(reactor, name, factory, node.pipeDirectory)
        return port, evolve(info, np=pipeName(info.serverName, name))


#: An endpoint to C{info}'s pipe on C{host}, or L{None}: L{PipeTransport.endpointFor}.
endpointFor = PipeTransport().endpointFor


@implementer(IPlugin, IStreamClientEndpointStringParserWithReactor)
class PipeClientParser:
    """
    Parses C{np:NAME[:directory=DIR][:timeout=SECONDS]} into an endpoint to pipe NAME.

    NAME is a pipe name, C{\\\\\\\\HOST\\\\pipe\\\\NAME} or just its NAME
    (escape backslashes and colons in endpoint strings); a pipe of another
    host is refused: named pipes do not cross hosts on POSIX.
    """

    prefix = "np"

    def parseStreamClient(self, reactor: Any, *args: object,
                          **kwargs: object) -> IStreamClientEndpoint:
        unknown = set(kwargs) - {"directory", "timeout"}
        if unknown:
            raise ValueError(f"np endpoint has no option {sorted(unknown)[0]!r}; "
                             "known: directory, timeout")
        if len(args) != 1 or not str(args[0]):
            raise ValueError("np endpoint needs a pipe name: np:NAME or np:\\\\HOST\\pipe\\NAME")
        pipe = str(args[0])
        server, name = splitPipeName(pipe) if pipe.startswith("\\\\") else (".", pipe)
        if not isThisHost(server, "0.0.0.0"):
            return RemotePipeEndpoint(pipe, server)
        directory = Path(str(kwargs["directory"])) if "directory" in kwargs else None
        return PipeEndpoint(reactor, socketPath(name, directory),
                            timeout=float(str(kwargs.get("timeout", 30))))
