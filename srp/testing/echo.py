"""
An echo-like line server: each line C{N} is answered with C{NAME N}, so a
client can tell which server answered.  The instance server behind the
fail-over tests, the fault matrix and C{examples/echo_node.py}.

Run alone, it is a SQL-Server-like process of its own, beside (not inside)
the srp node that registers it::

    python -m srp.testing.echo --listen 127.0.0.2 --name A --instance ECHO [--port P]

It listens on tcp (an ephemeral port unless C{--port}), behind srp's hello
wrapper for C{--instance} (so that the C{hello} verifier works), prints one
line of JSON, C{{"port": P, "pid": PID}}, once it listens, and runs until
SIGTERM, which closes its listener and its connections.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.protocol import ServerFactory
from twisted.internet.task import react
from twisted.protocols.basic import LineReceiver
from twisted.python import usage

from srp.server.hello import HelloFactory
from srp.testing.processes import NodeProcess


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


class EchoProcess(NodeProcess):
    """
    An echo server process (C{python -m srp.testing.echo}): started, ended
    and logged as a L{NodeProcess}; L{port} is where it listens.
    """

    READY = '"port"'

    def __init__(self, logPath: Path, address: str, name: str, port: int = 0,
                 instance: str = "ECHO", prefix: tuple[str, ...] = ()) -> None:
        super().__init__(logPath, logPath, prefix=prefix, argv=[
            sys.executable, "-m", "srp.testing.echo", "--listen", address, "--name", name,
            "--port", str(port), "--instance", instance])

    @property
    def port(self) -> int:
        """The TCP port the server listens on."""
        for line in self.log().splitlines():
            if line.startswith(self.READY, 1):
                port: int = json.loads(line)["port"]
                return port
        raise RuntimeError(f"the echo server has not said where it listens: {self.log()}")


class Options(usage.Options):
    """The command line of C{python -m srp.testing.echo}."""

    optParameters = [
        ["listen", None, "127.0.0.1", "Address to listen on."],
        ["port", None, 0, "TCP port (0: any free one).", int],
        ["name", None, "A", "Name put in every answer."],
        ["instance", None, "ECHO", "Instance whose hellos the listener answers."],
    ]


async def main(reactor: Any, argv: list[str]) -> None:
    """Listen, say where, and serve until stopped."""
    options = Options()
    options.parseOptions(argv)
    factory = HelloFactory(EchoFactory(options["name"].encode()), [options["instance"]],
                           reactor)
    port = reactor.listenTCP(options["port"], factory, interface=options["listen"])
    print(json.dumps({"port": port.getHost().port, "pid": os.getpid()}), flush=True)
    await Deferred()  # until SIGTERM or SIGINT


if __name__ == "__main__":
    react(lambda reactor: Deferred.fromCoroutine(main(reactor, sys.argv[1:])))
