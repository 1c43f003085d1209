"""
The server process of L{bench.transports}: an echo server and a sink on each
transport, tcp, np and via, on one loopback address.

    python -m bench.transport_server [--address 127.0.0.N] [--transfer BYTES]
                                     [--profile FILE]

It prints one line of JSON on stdout once everything listens::

    {"address": "127.0.0.2", "transfer": 1048576, "pid": 1234,
     "tcp": {"echo": 40001, "sink": 40002},
     "np": {"directory": "/tmp/srpb...", "echo": "bench-echo", "sink": "bench-sink"},
     "via": {"echo": 40003, "sink": 40004}}

and runs until SIGTERM (or SIGINT), when it removes its pipe directory
(and, with C{--profile}, writes its cProfile statistics to FILE).

  - B{echo} writes back whatever it receives (the latency test);
  - B{sink} counts what it receives and writes one byte each time another
    C{--transfer} bytes have arrived (the bulk test): the client's transfer
    is acknowledged once all of it has reached the server's application.

tcp is C{reactor.listenTCP} with C{TCP_NODELAY} (L{detectDeadPeers}); np is
L{srp.transports.np.listenPipe} in a temporary directory; via is
L{VIAServerEndpoint} with the default provider, as a node serves it.  Both
sides use the stream interface (C{write} and C{dataReceived}), which is the
one protocols written for TCP and srp's relays use.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import react

from srp.testing.processes import freeLoopbackAddress
from srp.transports.np import listenPipe
from srp.transports.tcp import detectDeadPeers
from srp.transports.via import VIAServerEndpoint

#: Bytes in one bulk transfer unless told otherwise: 1 MiB.
TRANSFER = 1 << 20
#: Names of the two pipes.
ECHO_PIPE, SINK_PIPE = "bench-echo", "bench-sink"


class Echo(Protocol):
    """Writes back what it receives."""

    def connectionMade(self) -> None:
        detectDeadPeers(self.transport)  # type: ignore[arg-type]  # TCP_NODELAY on tcp

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[union-attr]


class Sink(Protocol):
    """Counts bytes; writes one byte per C{transfer} bytes received."""

    def __init__(self, transfer: int) -> None:
        self.transfer = transfer
        self.received = 0
        self.acknowledged = 0

    def connectionMade(self) -> None:
        detectDeadPeers(self.transport)  # type: ignore[arg-type]

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)
        done = self.received // self.transfer
        if done > self.acknowledged:
            self.transport.write(b"\x06" * (done - self.acknowledged))  # type: ignore[union-attr]
            self.acknowledged = done


def portOf(port: IListeningPort) -> int:
    return int(port.getHost().port)  # type: ignore[attr-defined]


async def main(reactor: Any, argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.transport_server")
    parser.add_argument("--address", default=None,
                        help="loopback address to listen on (default: a free 127.0.0.N)")
    parser.add_argument("--transfer", type=int, default=TRANSFER,
                        help="bytes the sink acknowledges at a time")
    parser.add_argument("--profile", default=None, metavar="FILE",
                        help="profile the server; write the statistics to FILE on exit")
    options = parser.parse_args(argv)
    if options.profile:
        profiler = cProfile.Profile()
        profiler.enable()

        def dump() -> None:
            profiler.disable()
            profiler.dump_stats(options.profile)

        reactor.addSystemEventTrigger("before", "shutdown", dump)
    address = options.address or freeLoopbackAddress()
    echo = Factory.forProtocol(Echo)
    sink = Factory.forProtocol(lambda: Sink(options.transfer))
    echo.noisy = sink.noisy = False
    # Short: AF_UNIX paths are at most 107 bytes.
    directory = Path(tempfile.mkdtemp(prefix="srpb"))
    reactor.addSystemEventTrigger("after", "shutdown", shutil.rmtree, directory, True)
    tcpEcho = reactor.listenTCP(0, echo, interface=address)
    tcpSink = reactor.listenTCP(0, sink, interface=address)
    listenPipe(reactor, ECHO_PIPE, echo, directory)
    listenPipe(reactor, SINK_PIPE, sink, directory)
    viaEcho = await VIAServerEndpoint(reactor, 0, address).listen(echo)
    viaSink = await VIAServerEndpoint(reactor, 0, address).listen(sink)
    print(json.dumps({
        "address": address, "transfer": options.transfer, "pid": os.getpid(),
        "tcp": {"echo": portOf(tcpEcho), "sink": portOf(tcpSink)},
        "np": {"directory": str(directory), "echo": ECHO_PIPE, "sink": SINK_PIPE},
        "via": {"echo": portOf(viaEcho), "sink": portOf(viaSink)},
    }), flush=True)
    await Deferred()  # until SIGTERM or SIGINT


if __name__ == "__main__":
    react(lambda reactor: Deferred.fromCoroutine(main(reactor, sys.argv[1:])))
