"""
The baseline: the least a Twisted UDP responder can do, run as its own process.

It answers every datagram with one canned SVR_RESP describing one instance,
the same size as srp's reply for the benchmark instances, with the default
reactor and no parsing, lookup or logging::

    python -m bench.bare_responder 127.0.0.3 1434

It prints C{READY} and the address on stdout once it is listening, and runs
until SIGTERM or SIGINT.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from twisted.internet.protocol import DatagramProtocol

#: What an srp node answers for the benchmark instance INST00001, byte for byte.
CANNED_DATA = (
    b"ServerName;SRPBENCH;InstanceName;INST00001;IsClustered;No;"
    b"Version;16.0.1000.6;tcp;10001;;"
)
CANNED_REPLY = bytes([0x05]) + len(CANNED_DATA).to_bytes(2, "little") + CANNED_DATA
READY = "bare responder answering on"


class CannedResponder(DatagramProtocol):
    """Answers every datagram with C{reply}, whatever it holds."""

    noisy = False

    def __init__(self, reply: bytes = CANNED_REPLY) -> None:
        self.reply = reply

    def datagramReceived(self, datagram: bytes, addr: tuple[str, int]) -> None:
        """Send the canned reply back to C{addr}."""
        self.transport.write(self.reply, addr)  # type: ignore[union-attr]


def main(argv: Sequence[str] | None = None) -> int:
    """Listen on C{HOST PORT} (arguments) and answer until stopped."""
    arguments = sys.argv[1:] if argv is None else list(argv)
    if len(arguments) != 2:
        sys.stderr.write("usage: python -m bench.bare_responder HOST PORT\n")
        return 2
    host, port = arguments[0], int(arguments[1])
    from twisted.internet import reactor

    reactor.listenUDP(port, CannedResponder(), interface=host)  # type: ignore[attr-defined]
    print(f"{READY} {host}:{port}", flush=True)
    reactor.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
