"""
Stand-in instance servers for the health benchmarks: one process holding
COUNT listening TCP sockets on HOST, which accepts every connection and
closes it at once (what a health check's connect finds at a live server).

    python -m bench.listeners 127.0.0.2 1000          # ports chosen by the kernel
    python -m bench.listeners 127.0.0.2 1 --ports 40001

It prints one line, C{listening} and the ports as JSON, once every socket
listens, and runs until it is ended by its PID (or after C{--seconds}, so
that a forgotten one never lingers).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import selectors
import socket
import sys
import time
from collections.abc import Sequence

#: The first word of the line the process prints once it listens.
READY = "listening"


def main(argv: Sequence[str] | None = None) -> int:
    """Listen, print the ports, accept and close connections until the deadline."""
    parser = argparse.ArgumentParser(prog="python -m bench.listeners")
    parser.add_argument("host")
    parser.add_argument("count", type=int)
    parser.add_argument("--ports", type=lambda text: [int(p) for p in text.split(",")],
                        default=None, help="comma-separated ports (default: any free ones)")
    parser.add_argument("--seconds", type=float, default=900.0)
    options = parser.parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, options.count + 256)), hard))
    ports = options.ports or [0] * options.count
    selector = selectors.DefaultSelector()
    listening = []
    for port in ports:
        server = socket.create_server((options.host, port), backlog=1024)
        server.setblocking(False)
        selector.register(server, selectors.EVENT_READ)
        listening.append(server.getsockname()[1])
    print(READY, json.dumps(listening), flush=True)
    deadline = time.monotonic() + options.seconds
    while time.monotonic() < deadline:
        for key, _ in selector.select(1.0):
            with contextlib.suppress(OSError):
                key.fileobj.accept()[0].close()  # type: ignore[union-attr]
    return 0


if __name__ == "__main__":
    sys.exit(main())
