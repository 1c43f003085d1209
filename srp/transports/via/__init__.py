"""
via: an emulated VI provider over TCP, with what VI gives an application.

No VI (Virtual Interface Architecture) hardware exists any more, so
L{EmulatedVIProvider} carries C{via} connections over TCP sockets while
keeping VI's contract with the application:

  - B{message boundaries}: a protocol that provides L{IMessageReceiver}
    receives whole messages, and L{VIAConnection.sendMessage} sends them; a
    plain protocol sees a byte stream whose writes are cut into messages of at
    most the peer's posted buffer size;
  - B{credit-based flow control from posted receives}
    (L{srp.transports.via.credits}): the peer may send one message per posted
    receive buffer, never larger than a buffer, and a credit comes back once
    the application has consumed the message.  A peer that breaks the rules
    is disconnected with a L{VIAProtocolError};
  - B{several NIC paths tried in order}: a port map's C{NIC:PORT} pairs are
    tried in turn, and a dead path falls over to the next;
  - B{a local path on one host} (L{srp.transports.via.local}): an abstract
    AF_UNIX socket instead of TCP between processes of one user.

The package's modules each do one thing: the connection on its socket
(L{connection <srp.transports.via.connection>}), the credits its application
sees (L{credits <srp.transports.via.credits>}), the provider and its
listening ports (L{provider <srp.transports.via.provider>}), the local path
(L{local <srp.transports.via.local>}), the endpoints and the C{via}
port-map transport (L{endpoints <srp.transports.via.endpoints>}) and the
endpoint strings (L{parsers <srp.transports.via.parsers>}).  The frames are
L{srp.wire.via}; C{docs/transports.md} describes all of it.
"""

from srp.transports.via.connection import (
    VIAConnectError,
    VIAConnection,
    VIAProtocolError,
    VIARemoteError,
)
from srp.transports.via.credits import CreditedTransport, IMessageReceiver, IMessageTransport
from srp.transports.via.endpoints import (
    VIAClientEndpoint,
    VIAServerEndpoint,
    VIATransport,
    endpointFor,
    pathsFor,
)
from srp.transports.via.local import isLocalAddress, localName, localNames
from srp.transports.via.parsers import VIAClientParser, VIAServerParser, parsePaths
from srp.transports.via.provider import (
    DEFAULT_PROVIDER,
    EmulatedVIProvider,
    VIAListeningPort,
    viProviderNamed,
)

__all__ = [
    "DEFAULT_PROVIDER",
    "CreditedTransport",
    "EmulatedVIProvider",
    "IMessageReceiver",
    "IMessageTransport",
    "VIAClientEndpoint",
    "VIAClientParser",
    "VIAConnectError",
    "VIAConnection",
    "VIAListeningPort",
    "VIAProtocolError",
    "VIARemoteError",
    "VIAServerEndpoint",
    "VIAServerParser",
    "VIATransport",
    "endpointFor",
    "isLocalAddress",
    "localName",
    "localNames",
    "parsePaths",
    "pathsFor",
    "viProviderNamed",
]
