"""
An srp node that also serves an instance: an echo-like line server, embedded.

    python examples/echo_node.py --listen 127.0.0.2 --instance ECHO --priority 0 --name A

The node serves the instance itself (`NodeService.serve`) on VIA (emulated),
TCP and a named pipe, each on whatever port the system gives it, behind
srp's hello wrapper, and registers them with the instance's priority (0 for
the primary, higher for standbys) in a cluster node sharing the address.
Each line ``N`` is answered with ``NAME N``, so a client can tell which
server answered.  This is what `make demo` and the fail-over tests run.

With ``--server-only`` it is the instance's server process alone, for a
node of its own (`srp serve`) to register: it listens on TCP at a port the
system gives it and prints ``PORT N`` once it does.
"""

from __future__ import annotations

import sys
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.protocol import ServerFactory
from twisted.internet.task import react
from twisted.logger import globalLogBeginner, textFileLogObserver
from twisted.protocols.basic import LineReceiver
from twisted.python import usage

from srp.records import InstanceInfo, Registration
from srp.server.config import ClusterConfig, NodeConfig
from srp.server.node import NodeService


class EchoLine(LineReceiver):
    """Answers each line with the server's name and the line."""

    delimiter = b"\n"
    factory: EchoFactory

    def lineReceived(self, line: bytes) -> None:
        self.sendLine(self.factory.name + b" " + line)


class EchoFactory(ServerFactory):
    """Builds L{EchoLine}s that answer with C{name}."""

    protocol = EchoLine  # type: ignore[assignment]

    def __init__(self, name: bytes) -> None:
        self.name = name


class Options(usage.Options):
    optParameters = [
        ["listen", None, "127.0.0.1", "Address of the node and of the instance."],
        ["instance", None, "ECHO", "Instance name."],
        ["priority", None, 0, "0 for the primary, higher for standbys.", int],
        ["name", None, "A", "Name put in every answer."],
        ["cluster", None, "demo", "Cluster name."],
        ["transports", None, "via,tcp,np", "Transports to serve the instance on."],
    ]
    optFlags = [["server-only", None, "Serve the instance without a node; print its port."]]


async def main(reactor: Any, argv: list[str]) -> None:
    options = Options()
    options.parseOptions(argv)
    factory = EchoFactory(options["name"].encode())
    if options["server-only"]:
        port = await TCP4ServerEndpoint(reactor, 0, interface=options["listen"]).listen(factory)
        print(f"PORT {port.getHost().port}", flush=True)
        await Deferred()  # until SIGTERM or SIGINT
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)])
    registration = Registration(InstanceInfo(f"HOST{options['name']}", options["instance"]),
                                priority=options["priority"])
    node = NodeService(NodeConfig(listen=(options["listen"],), instances=(registration,),
                                  cluster=ClusterConfig(name=options["cluster"])), reactor)
    node.serve(options["instance"], factory,
               options["transports"].split(","))
    node.privilegedStartService()
    node.startService()
    reactor.addSystemEventTrigger("before", "shutdown", node.stopService)
    await Deferred()  # until SIGTERM or SIGINT


if __name__ == "__main__":
    react(lambda reactor: Deferred.fromCoroutine(main(reactor, sys.argv[1:])))
