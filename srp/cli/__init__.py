"""
The C{srp} command: run a node, and query any [MC-SQLR] server.

Every query command prints an aligned table by default and JSON with
C{--json}; failures print one line on stderr and exit non-zero.  The
options of each command are in L{srp.cli.options}, what they do in
L{srp.cli.commands}, and what they print in L{srp.cli.output}.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.task import react
from twisted.python import usage

from srp.cli.commands import (
    browseCommand,
    enumerateCommand,
    leaseCommand,
    proxyCommand,
    resolveCommand,
    serveCommand,
    statusCommand,
)
from srp.cli.options import Options, ProxyOptions, oneLine, splitTarget
from srp.cli.output import CommandError, formatTable, jsonError


def run(reactor: Any, argv: Sequence[str], out: TextIO, err: TextIO) -> Deferred[None]:
    """Parse C{argv} and run the command it names; the L{Deferred} fails on error."""
    options = Options()
    try:
        options.parseOptions(argv)
    except usage.UsageError as e:
        if "--json" in argv or "-j" in argv:
            jsonError(oneLine(str(e)), out)
        err.write(f"srp: {oneLine(str(e))} (see 'srp --help' or 'srp COMMAND --help')\n")
        raise SystemExit(2) from None
    sub = options.subOptions
    commands = {
        "resolve": lambda: resolveCommand(reactor, sub, out),
        "enumerate": lambda: enumerateCommand(reactor, sub, out),
        "browse": lambda: browseCommand(reactor, sub, out),
        "serve": lambda: serveCommand(reactor, sub, err),
        "status": lambda: statusCommand(reactor, sub, out),
        "register": lambda: leaseCommand(reactor, sub, out, err),
        "unregister": lambda: leaseCommand(reactor, sub, out, err),
        "proxy": lambda: proxyCommand(reactor, sub, err),
    }

    def failed(failure: Any) -> None:
        failure.trap(CommandError)
        if sub.get("json"):
            jsonError(oneLine(str(failure.value)), out)
        err.write(f"srp: {oneLine(str(failure.value))}\n")
        raise SystemExit(1)

    assert options.subCommand is not None  # postOptions insists on one
    return ensureDeferred(commands[options.subCommand]()).addErrback(failed)


def main(argv: Sequence[str] | None = None) -> None:
    """The C{srp} console script."""
    arguments = sys.argv[1:] if argv is None else list(argv)
    if arguments[:1] not in (["serve"], ["proxy"]):
        # Like other command-line tools, end quietly when the reader goes
        # (| head).  Never for a node or a proxy: a peer closing a socket must
        # not kill it.
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    react(lambda reactor: run(reactor, arguments, sys.stdout, sys.stderr))


__all__ = ["CommandError", "Options", "ProxyOptions", "formatTable", "main", "run",
           "splitTarget"]
