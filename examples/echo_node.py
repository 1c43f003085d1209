"""
An srp node that also serves an instance: an echo-like line server, embedded.

    python examples/echo_node.py --listen 127.0.0.2 --instance ECHO --priority 0 --name A

The node serves the instance itself (`NodeService.serve`) on VIA (emulated),
TCP and a named pipe, each on whatever port the system gives it, behind
srp's hello wrapper, and registers them with the instance's priority (0 for
the primary, higher for standbys) in a cluster node sharing the address.
Each line ``N`` is answered with ``NAME N`` (L{srp.testing.echo}), so a
client can tell which server answered.  This is what `make demo` and the fail-over tests run.
"""

from __future__ import annotations

import sys
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import react
from twisted.logger import globalLogBeginner, textFileLogObserver
from twisted.python import usage

from srp.records import InstanceInfo, Registration
from srp.server.config import ClusterConfig, NodeConfig
from srp.server.node import NodeService
from srp.testing.echo import EchoFactory


class Options(usage.Options):
    optParameters = [
        ["listen", None, "127.0.0.1", "Address of the node and of the instance."],
        ["instance", None, "ECHO", "Instance name."],
        ["priority", None, 0, "0 for the primary, higher for standbys.", int],
        ["name", None, "A", "Name put in every answer."],
        ["cluster", None, "demo", "Cluster name."],
        ["transports", None, "via,tcp,np", "Transports to serve the instance on."],
    ]


async def main(reactor: Any, argv: list[str]) -> None:
    options = Options()
    options.parseOptions(argv)
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)])
    registration = Registration(InstanceInfo(f"HOST{options['name']}", options["instance"]),
                                priority=options["priority"])
    node = NodeService(NodeConfig(listen=(options["listen"],), instances=(registration,),
                                  cluster=ClusterConfig(name=options["cluster"])), reactor)
    node.serve(options["instance"], EchoFactory(options["name"].encode()),
               options["transports"].split(","))
    node.privilegedStartService()
    node.startService()
    reactor.addSystemEventTrigger("before", "shutdown", node.stopService)
    await Deferred()  # until SIGTERM or SIGINT


if __name__ == "__main__":
    react(lambda reactor: Deferred.fromCoroutine(main(reactor, sys.argv[1:])))
