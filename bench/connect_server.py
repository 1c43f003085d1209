"""
The TCP server of C{cached_resolve}: an srp node that registers one
instance, served by a listener that accepts connections and does nothing
with them, behind srp's hello wrapper (so that the C{hello} verifier works
too), with a listen backlog of 4,096.

    python -m bench.connect_server --listen 127.0.0.2 --instance BENCH --cluster bench

It is examples/echo_node.py with the long backlog: with Twisted's default
of 50, a client that connects and closes faster than the server accepts
fills the queue, and the kernel drops SYNs, which the client sends again
after a second: the benchmark would measure the server's accept rate and
those seconds, not the client's endpoints.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.internet.task import react
from twisted.logger import globalLogBeginner, textFileLogObserver

from srp.records import InstanceInfo, Registration
from srp.server.config import ClusterConfig, NodeConfig
from srp.server.hello import HelloFactory
from srp.server.node import NodeService

BACKLOG = 4096


async def main(reactor: Any, argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.connect_server")
    parser.add_argument("--listen", default="127.0.0.1")
    parser.add_argument("--instance", default="BENCH")
    parser.add_argument("--cluster", default="bench")
    options = parser.parse_args(argv)
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)])
    idle = ServerFactory.forProtocol(Protocol)
    idle.noisy = False
    port = reactor.listenTCP(0, HelloFactory(idle, [options.instance], reactor),
                             backlog=BACKLOG, interface=options.listen)
    registration = Registration(InstanceInfo("BENCHHOST", options.instance,
                                             tcp=port.getHost().port))
    node = NodeService(NodeConfig(listen=(options.listen,), instances=(registration,),
                                  cluster=ClusterConfig(name=options.cluster)), reactor)
    node.startService()
    reactor.addSystemEventTrigger("before", "shutdown", node.stopService)
    await Deferred()  # until SIGTERM or SIGINT


if __name__ == "__main__":
    react(lambda reactor: Deferred.fromCoroutine(main(reactor, sys.argv[1:])))
